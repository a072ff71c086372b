"""Where a weather sweep's numbers are kept: two tables of the study's results database, and sweep.csv.

- `weather_results`: one row per (model, condition, severity), keyed by the workload's config
  hash, the phase, the corruption seed and the model's key (`SweepModel.key`); each row is
  committed on its own, so a killed sweep continues where it stopped and a repeated sweep only
  evaluates what is new;
- `weather_sweeps`: one row per sweep (its conditions, severities and models).

The tables live in the same file as the exploration's (`sw.search.results.ResultsDB`, whose
`execute` is meant for such extensions).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

from sw.core.durable import atomic_write
from sw.robustness.result import ENERGY, SweepModel, SweepResult
from sw.search.results import ResultsDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS weather_sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workload TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    exploration_run INTEGER,
    phase TEXT NOT NULL,
    seed INTEGER NOT NULL,
    conditions TEXT NOT NULL,
    severities TEXT NOT NULL,
    models TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS weather_results (
    config_hash TEXT NOT NULL,
    phase TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model TEXT NOT NULL,
    condition TEXT NOT NULL,
    severity INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    wall_time REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, phase, seed, model, condition, severity)
);
"""


def ensure_tables(db: ResultsDB) -> None:
    """Create the sweep tables in a results database (idempotent)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def start_sweep(db: ResultsDB, workload: str, config_hash: str, exploration_run: int | None, phase: str, seed: int,
                conditions: Sequence[str], severities: Sequence[int], models: Sequence[SweepModel]) -> int:
    """Record a sweep that starts now; returns its id."""
    model_json = json.dumps([{"label": m.label, "key": m.key, "cost": m.cost, ENERGY: m.dram_energy} for m in models])
    cursor = db.execute(
        "INSERT INTO weather_sweeps (workload, config_hash, exploration_run, phase, seed, conditions, severities,"
        " models, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (workload, config_hash, exploration_run, phase, seed, json.dumps(list(conditions)),
         json.dumps(list(severities)), model_json, time.time()))
    return int(cursor.lastrowid)


def finish_sweep(db: ResultsDB, sweep_id: int) -> None:
    db.execute("UPDATE weather_sweeps SET finished = ? WHERE id = ?", (time.time(), sweep_id))


def stored_metrics(db: ResultsDB, config_hash: str, phase: str,
                   seed: int) -> dict[tuple[str, str, int], dict[str, float]]:
    """Every stored row of (config_hash, phase, seed): {(model key, condition, severity): metrics}."""
    rows = db.execute("SELECT model, condition, severity, metrics FROM weather_results"
                      " WHERE config_hash = ? AND phase = ? AND seed = ?", (config_hash, phase, seed))
    return {(model, condition, int(severity)): json.loads(metrics) for model, condition, severity, metrics in rows}


def store_metrics(db: ResultsDB, config_hash: str, phase: str, seed: int, model: SweepModel, condition: str,
                  severity: int, metrics: Mapping[str, float], wall_time: float) -> None:
    """One row, committed on its own (the connection is in autocommit mode)."""
    db.execute("INSERT OR REPLACE INTO weather_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (config_hash, phase, seed, model.key, condition, severity, json.dumps(dict(metrics)), wall_time,
                time.time()))


def write_csv(result: SweepResult, path: Path) -> None:
    """sweep.csv: one row per model and (condition, severity), with its costs, metrics and accuracy drop."""
    fields = ["model", result.cost_name, ENERGY, "condition", "severity", *result.metric_names,
              f"{result.metric}_drop"]
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for model in result.models:
            for condition, severity in result.combos:
                metrics = result.metrics[(model.label, condition, severity)]
                writer.writerow({"model": model.label, result.cost_name: f"{model.cost:.4f}",
                                 ENERGY: "" if model.dram_energy is None else f"{model.dram_energy:.6g}",
                                 "condition": condition, "severity": severity,
                                 **{m: f"{metrics[m]:.6f}" for m in result.metric_names},
                                 f"{result.metric}_drop": f"{result.drop(model.label, condition, severity):.6f}"})
