"""One HTML report per study, its figures as PNG/SVG and TikZ (entry point: `sw.report.build.build_report`)."""
