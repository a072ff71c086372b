"""The co-simulation report: one CSV row and one printed table row per quantized tensor."""

from __future__ import annotations

import csv
from pathlib import Path

from cosim.cosimulation import CosimResult
from sw.core.durable import atomic_write

COLUMNS = ("layer", "tensor", "bits", "signed", "segments", "elements", "code_mismatches", "value_mismatches",
           "words_rtl", "words_model", "words_dense", "cycles", "wall_s", "ok")
HEADERS = ("layer", "tensor", "bits", "sgn", "ch", "elements", "code!=", "value!=", "words rtl", "words model",
           "cycles", "wall s", "")


def write_csv(result: CosimResult, path: Path) -> Path:
    """Write the per-tensor rows (atomically: a killed run leaves the previous report whole)."""
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["point", "sim", "word_bits", "quantizer", *COLUMNS])
        writer.writeheader()
        for row in result.rows:
            d = row.as_dict()
            writer.writerow({"point": result.point, "sim": result.sim, "word_bits": result.word_bits,
                             "quantizer": row.quantizer, **{c: d[c] for c in COLUMNS}})
    return path


def format_table(result: CosimResult) -> str:
    """The rows as an aligned text table with a totals line."""
    body = []
    for r in result.rows:
        body.append((r.layer, r.tensor, str(r.bits), "s" if r.signed else "u", str(r.segments), f"{r.elements:,}",
                     str(r.code_mismatches), str(r.value_mismatches), f"{r.words_rtl:,}", f"{r.words_model:,}",
                     f"{r.cycles:,.0f}", f"{r.wall_s:.1f}", "ok" if r.ok else "MISMATCH"))
    rows = result.rows
    body.append(("total", "", "", "", "", f"{result.elements:,}", str(sum(r.code_mismatches for r in rows)),
                 str(sum(r.value_mismatches for r in rows)), f"{sum(r.words_rtl for r in rows):,}",
                 f"{sum(r.words_model for r in rows):,}", f"{sum(r.cycles for r in rows):,.0f}",
                 f"{sum(r.wall_s for r in rows):.1f}", "ok" if result.ok else "MISMATCH"))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(HEADERS)]
    left = {0, 1}

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADERS), rule, *(line(b) for b in body[:-1]), rule, line(body[-1])])
