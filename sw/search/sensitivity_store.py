"""The sensitivity table, measured once and kept in the study's results database.

Two tables, each row committed as it is measured (a killed `python -m sw sensitivity` continues
where it stopped; a repeated one measures nothing), keyed by the study's `model_hash` (the
configuration without its search section: the table does not change with the search's seed,
population or first population):

- `sensitivity_traces`: per layer, its weight count and the Hessian (Hutchinson, `samples` probes
  per batch) and Fisher traces of the fp32 model;
- `sensitivity`: per (layer, bits), the weight error ||Q_b(W) - W||^2 and the measured loss
  increase and top1 drop when only that layer goes to b bits (the others at the baseline bits).

The proxies (`sw.search.sensitivity.proxy`) are computed from both when read. Everything is
measured on the calibration data (selection data, never the held-out split). Whenever something
was measured, the whole table is written to results/<name>/sensitivity/sensitivity.csv too.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sw.core.durable import atomic_write
from sw.core.errors import DataError
from sw.evaluation.evaluate import evaluate
from sw.model.reconstruction import ensure_rounding
from sw.search.sensitivity import fisher_traces, hutchinson_traces, proxy, weight_perturbation

PHASE = "calibration"
PROXIES = ("fit_proxy", "hessian_proxy", "loss_increase")  # what an ILP may minimise
COLUMNS = ("layer", "bits", "parameters", "hessian_trace", "fisher_trace", "perturbation", "hessian_proxy",
           "fit_proxy", "loss_increase", "top1_drop")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sensitivity_traces (
    model_hash TEXT NOT NULL,
    samples INTEGER NOT NULL,
    layer TEXT NOT NULL,
    parameters INTEGER NOT NULL,
    hessian_trace REAL NOT NULL,
    fisher_trace REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model_hash, samples, layer)
);
CREATE TABLE IF NOT EXISTS sensitivity (
    model_hash TEXT NOT NULL,
    layer TEXT NOT NULL,
    bits INTEGER NOT NULL,
    perturbation REAL NOT NULL,
    loss_increase REAL NOT NULL,
    top1_drop REAL NOT NULL,
    wall_time REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model_hash, layer, bits)
);
"""


def _loss(model, batches) -> float:
    """Mean cross-entropy in eval mode (in train mode batch norm would normalise by the batch and
    move its running statistics: every later evaluation would see another model)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in batches)
    finally:
        model.train(was_training)
    return total / batches.num_samples


def _traces(db, model_hash: str, samples: int | None) -> dict[str, tuple[int, float, float]]:
    """{layer: (parameters, hessian trace, fisher trace)} for `samples` (None: the newest stored)."""
    if samples is None:
        row = db.execute("SELECT samples FROM sensitivity_traces WHERE model_hash = ? ORDER BY created DESC LIMIT 1",
                         (model_hash,)).fetchone()
        if row is None:
            return {}
        samples = int(row[0])
    rows = db.execute("SELECT layer, parameters, hessian_trace, fisher_trace FROM sensitivity_traces"
                      " WHERE model_hash = ? AND samples = ?", (model_hash, samples))
    return {layer: (int(n), float(h), float(f)) for layer, n, h, f in rows}


def _measured(db, model_hash: str) -> dict[tuple[str, int], tuple[float, float, float]]:
    rows = db.execute("SELECT layer, bits, perturbation, loss_increase, top1_drop FROM sensitivity WHERE model_hash = ?",
                      (model_hash,))
    return {(layer, int(bits)): (float(p), float(loss), float(drop)) for layer, bits, p, loss, drop in rows}


def measure(study, db, samples: int = 8, *, progress: bool = False,
            log: Callable[[str], None] = lambda line: None) -> tuple[list[dict[str, Any]], int]:
    """Every (layer, bits) row of the study's search range, measuring (and committing) only what the
    database lacks; returns (rows in `COLUMNS`, how many were measured now)."""
    db.conn.executescript(SCHEMA)
    w = study.workload
    qmodel = study.quantized_model
    layers = list(qmodel.layer_names)
    key = study.model_hash
    traces = _traces(db, key, samples)
    data = None
    if set(traces) != set(layers):
        data = study.batches(PHASE)
        log(f"Hessian and Fisher traces of {len(layers)} layers on the {PHASE} data ({data.num_samples} images, "
            f"{samples} probes per batch)")
        fp32 = study.fp32_model.eval()
        hessian = hutchinson_traces(fp32, layers, data, F.cross_entropy, samples=samples)
        fisher = fisher_traces(fp32, layers, data, F.cross_entropy)
        for i, name in enumerate(layers):
            db.execute("INSERT OR REPLACE INTO sensitivity_traces VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, samples, name, qmodel.layers()[name].weight.numel(), hessian[i], fisher[i], time.time()))
        traces = _traces(db, key, samples)
    measured = _measured(db, key)
    pairs = [(name, b) for name in layers for b in range(w.search.bits.lower, w.search.bits.upper + 1)]
    todo = [pair for pair in pairs if pair not in measured]
    if todo:
        data = data or study.batches(PHASE)
        log(f"measuring {len(todo)} of {len(pairs)} (layer, bits) on the {PHASE} data "
            f"({len(pairs) - len(todo)} from the database)")
        base_bits = study.uniform_bits(w.quantization.baseline_bits)
        qmodel.set_layer_bits(base_bits)
        base_loss, base_top1 = _loss(qmodel, data), evaluate(qmodel, data)["top1"]
        try:
            for name, bits in tqdm(todo, desc="layers x bits", disable=not progress, leave=False):
                start = time.perf_counter()
                ensure_rounding(qmodel, study, {bits})  # learned rounding, where the workload asks for it
                qmodel.set_layer_bits({**base_bits, name: (bits, bits)})
                loss, top1 = _loss(qmodel, data), evaluate(qmodel, data)["top1"]
                values = (weight_perturbation(qmodel, name, bits), loss - base_loss, base_top1 - top1)
                db.execute("INSERT OR REPLACE INTO sensitivity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (key, name, bits, *values, time.perf_counter() - start, time.time()))
                measured[(name, bits)] = values
        finally:
            qmodel.set_layer_bits(base_bits)
    rows = [_row(name, bits, traces[name], measured[(name, bits)]) for name, bits in pairs]
    if todo or not csv_path(study).is_file():
        write_csv(study, rows)
    return rows, len(todo)


def csv_path(study) -> Path:
    return study.results_dir / "sensitivity" / "sensitivity.csv"


def write_csv(study, rows: list[dict[str, Any]]) -> Path:
    """results/<name>/sensitivity/sensitivity.csv: one row per (layer, bits), as the report reads it."""
    with atomic_write(csv_path(study), newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path(study)


def _row(name: str, bits: int, trace: tuple[int, float, float], values: tuple[float, float, float]) -> dict[str, Any]:
    n, hessian, fisher = trace
    perturbation, loss_increase, top1_drop = values
    return {"layer": name, "bits": bits, "parameters": n, "hessian_trace": hessian, "fisher_trace": fisher,
            "perturbation": perturbation, "hessian_proxy": proxy(hessian, n, perturbation),
            "fit_proxy": proxy(fisher, n, perturbation), "loss_increase": loss_increase, "top1_drop": top1_drop}


def stored_rows(study, db) -> list[dict[str, Any]]:
    """The stored rows of the study's layers and search range (the newest traces); [] when incomplete."""
    db.conn.executescript(SCHEMA)
    w = study.workload
    traces, measured = _traces(db, study.model_hash, None), _measured(db, study.model_hash)
    pairs = [(name, b) for name in study.quantized_model.layer_names
             for b in range(w.search.bits.lower, w.search.bits.upper + 1)]
    if any(name not in traces or (name, b) not in measured for name, b in pairs):
        return []
    return [_row(name, b, traces[name], measured[(name, b)]) for name, b in pairs]


def sensitivity_table(rows: list[dict[str, Any]], key: str) -> dict[str, dict[int, float]]:
    """{layer: {bits: value of `key`}} of sensitivity rows."""
    if key not in (*PROXIES, "top1_drop"):
        raise DataError(f"expected a sensitivity among {', '.join(PROXIES)} or top1_drop, got {key!r}")
    table: dict[str, dict[int, float]] = {}
    for row in rows:
        table.setdefault(row["layer"], {})[int(row["bits"])] = float(row[key])
    return table
