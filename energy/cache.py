"""Persistent SQLite cache of engine results, one row per (layer geometry, bit widths).

Keyed by engine, engine version with this project's modelling revision and the mapper settings
(objective, LOMA loop-prime-factor limit, spatial mappings generated), accelerator identity
(name plus content hash of its hardware and mapping files), layer geometry (with batch and
residency variant) and (weight, input, output) bits, so a changed engine, setting or file never
reuses stale numbers. Rows are committed as they arrive (WAL mode): an interrupted build keeps
everything already computed. A file that is not an energy cache is reported and left untouched;
a damaged row (unreadable or incomplete metrics) costs that row only: it is recomputed and replaced.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from energy.engines.base import BREAKDOWN_METRICS, CORE_METRICS
from sw.core.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    engine TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    accelerator TEXT NOT NULL,
    geometry TEXT NOT NULL,
    weight_bits INTEGER NOT NULL,
    input_bits INTEGER NOT NULL,
    output_bits INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    layer TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (engine, engine_version, accelerator, geometry, weight_bits, input_bits, output_bits)
)
"""
COLUMNS = ("engine", "engine_version", "accelerator", "geometry", "weight_bits", "input_bits", "output_bits",
           "metrics", "layer", "created")
INFEASIBLE = {"infeasible": 1.0}  # a residency evaluation the mapper found no mapping for


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid(metrics: object) -> bool:
    """A row is usable when it is the infeasible marker, or has every core metric as a number, a finite
    total energy, and numbers (NaN allowed) for whatever breakdown metrics it has."""
    if not isinstance(metrics, dict):
        return False
    if metrics == INFEASIBLE:
        return True
    return (all(_number(metrics.get(c)) for c in CORE_METRICS) and math.isfinite(metrics["energy_total_pj"])
            and all(_number(metrics[c]) for c in BREAKDOWN_METRICS if c in metrics))


class EnergyCache:
    """Open (or create) the cache file; `DataError` naming the file if it is not one."""

    def __init__(self, path: str | Path, engine: str, engine_version: str, accelerator: str):
        self.path = Path(path)
        self.scope = (engine, engine_version, accelerator)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "results" in tables:
                columns = tuple(r[1] for r in self.db.execute("PRAGMA table_info(results)"))
                if columns != COLUMNS:
                    raise DataError(f"{self.path}: expected an energy cache (SQLite table 'results' with columns "
                                    f"{', '.join(COLUMNS)}); move it away or set energy.cache to another file")
            else:
                self.db.execute(SCHEMA)
                self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: expected an SQLite energy cache, the file is unreadable ({exc}); "
                            f"move it away or set energy.cache to another file") from None

    def get(self, geometry: str) -> tuple[dict[tuple[int, int, int], dict], int]:
        """All usable cached results of one layer geometry, {(wb, ib, ob): metrics}, and the number of
        damaged rows skipped (they are recomputed and replaced by the caller's `put`)."""
        try:
            rows = self.db.execute(
                "SELECT weight_bits, input_bits, output_bits, metrics FROM results "
                "WHERE engine=? AND engine_version=? AND accelerator=? AND geometry=?",
                (*self.scope, geometry)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: the energy cache is damaged ({exc}); move it away to rebuild it") from None
        found, damaged = {}, 0
        for wb, ib, ob, text in rows:
            try:
                metrics = json.loads(text)
            except (TypeError, ValueError):
                metrics = None
            if isinstance(wb, int) and isinstance(ib, int) and isinstance(ob, int) and _valid(metrics):
                found[(wb, ib, ob)] = metrics
            else:
                damaged += 1
        return found, damaged

    def put(self, geometry: str, layer: str, results: Iterable[tuple[int, int, int, dict]]) -> None:
        """Store results of one layer geometry in one transaction."""
        now = time.time()
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(*self.scope, geometry, wb, ib, ob, json.dumps(m, sort_keys=True), layer, now)
                     for wb, ib, ob, m in results])
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot write to the energy cache ({exc})") from None

    def close(self) -> None:
        self.db.close()
