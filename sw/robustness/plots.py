"""The files of a weather sweep: sweep.csv and its figures.

- accuracy vs severity, one panel per condition, one line per model;
- accuracy drop (clean minus corrupted) vs the weighted-bits cost, one line per severity, and
  vs DRAM energy when every quantized model has one (the workload's energy table was built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sw.robustness.result import ENERGY, SweepResult
from sw.robustness.store import write_csv


def write_outputs(result: SweepResult, out_dir: Path, *, title: str = "") -> dict[str, Path]:
    """sweep.csv and the plots (titles start with `title`); returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "sweep.csv", "severity": out_dir / "accuracy_vs_severity.png",
             "bits": out_dir / f"drop_vs_{result.cost_name}.png"}
    write_csv(result, paths["csv"])
    plot_accuracy_vs_severity(result, paths["severity"], title=title)
    plot_drop_vs_cost(result, paths["bits"], "cost", f"{result.cost_name.replace('_', ' ')} (bits)", title=title)
    if all(m.dram_energy is not None for m in result.models if m.bits is not None):
        paths["energy"] = out_dir / f"drop_vs_{ENERGY}.png"
        plot_drop_vs_cost(result, paths["energy"], ENERGY, result.energy_label, title=title)
    return paths


def _grid(n: int):
    import matplotlib  # lazy: matplotlib (0.4 s) only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib (0.4 s) only where a figure is drawn

    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _model_colors(result: SweepResult) -> dict[str, Any]:
    """fp32 black, baseline grey, Pareto points coloured by their bit cost."""
    import matplotlib  # lazy: matplotlib (0.4 s) only where a figure is drawn

    colors: dict[str, Any] = {"fp32": "black"}
    points = [m for m in result.models if m.label.startswith("P")]
    bits = [m.cost for m in points]
    norm = matplotlib.colors.Normalize(min(bits, default=0), max(bits, default=1) + 1e-9)
    cmap = matplotlib.colormaps["viridis"]
    for m in result.models:
        if m.label not in colors:
            colors[m.label] = cmap(norm(m.cost)) if m.label.startswith("P") else "#888888"
    return colors


def plot_accuracy_vs_severity(result: SweepResult, path: Path, *, title: str = "") -> None:
    plt, fig, axes = _grid(len(result.conditions))
    colors = _model_colors(result)
    x = [0, *result.severities]
    for ax, condition in zip(axes, result.conditions, strict=True):
        for model in result.models:
            y = [result.clean(model.label)] + [result.accuracy(model.label, condition, s) for s in result.severities]
            style = {"ls": "--", "lw": 1.6} if model.bits is None else ({"lw": 1.6} if not model.label.startswith("P")
                                                                        else {"lw": 1.0, "alpha": 0.85})
            ax.plot(x, y, marker="o", ms=3, color=colors[model.label],
                    label=f"{model.label} ({model.cost:.2f} b)" if model.bits is not None else "fp32", **style)
        ax.set_title(condition)
        ax.set_xticks(x, ["clean", *map(str, result.severities)])
        ax.set_xlabel("severity")
        ax.set_ylabel(f"{result.metric} accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle(f"{title + ': ' if title else ''}{result.metric} accuracy vs severity ({result.phase} data)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_drop_vs_cost(result: SweepResult, path: Path, attribute: str, label: str, *, title: str = "") -> None:
    """Accuracy drop (clean minus corrupted, per model) against a cost, one line per severity;
    fp32 (no cost on this axis) is a dotted line per severity."""
    import matplotlib  # lazy: matplotlib (0.4 s) only where a figure is drawn

    plt, fig, axes = _grid(len(result.conditions))
    cmap = matplotlib.colormaps["plasma"]
    quantized = sorted((m for m in result.models if m.bits is not None), key=lambda m: getattr(m, attribute))
    fp32 = next((m for m in result.models if m.bits is None), None)
    for ax, condition in zip(axes, result.conditions, strict=True):
        for i, severity in enumerate(result.severities):
            color = cmap(0.1 + 0.75 * i / max(1, len(result.severities) - 1))
            ax.plot([getattr(m, attribute) for m in quantized],
                    [result.drop(m.label, condition, severity) for m in quantized],
                    marker="o", ms=3, lw=1, color=color, label=f"severity {severity}")
            if fp32 is not None:
                ax.axhline(result.drop(fp32.label, condition, severity), color=color, ls=":", lw=1)
        ax.set_title(condition)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{result.metric} drop (clean - corrupted)")
        ax.grid(alpha=0.3)
    if fp32 is not None:
        axes[0].plot([], [], color="#555555", ls=":", lw=1, label="fp32 (same colour per severity)")
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"{title + ': ' if title else ''}{result.metric} drop vs {label} ({result.phase} data)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
