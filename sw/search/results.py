"""The results database: every evaluated individual, durably, in SQLite.

One transaction per individual (WAL journal, synchronous=FULL), so a killed run loses at most
the individual in flight. A run is identified by a hash of its workload configuration; a
resumed run re-plays the (deterministic, seeded) search and takes every individual already in
the database instead of evaluating it again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sw.core.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workload TEXT NOT NULL,
    problem TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    var_names TEXT NOT NULL,
    metric_names TEXT NOT NULL,
    objective_names TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    method TEXT NOT NULL DEFAULT 'nsga2'
);
CREATE TABLE IF NOT EXISTS individuals (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    x TEXT NOT NULL,
    metrics TEXT NOT NULL,
    objectives TEXT NOT NULL,
    constraints TEXT NOT NULL,
    feasible INTEGER NOT NULL,
    wall_time REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, x)
);
CREATE TABLE IF NOT EXISTS hypervolume (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    generation INTEGER NOT NULL,
    hv REAL NOT NULL,
    ref_point_json TEXT NOT NULL,
    PRIMARY KEY (run_id, generation)
);
CREATE TABLE IF NOT EXISTS baselines (
    config_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, name)
);
"""


@dataclass(frozen=True)
class Individual:
    """One evaluated bit configuration."""

    run_id: int
    generation: int
    index: int
    x: tuple[int, ...]
    metrics: dict[str, float]
    objectives: tuple[float, ...]
    constraints: tuple[float, ...]
    feasible: bool
    wall_time: float


@dataclass(frozen=True)
class HypervolumeRow:
    """The hypervolume of a run after one generation (see `sw.search.hypervolume`)."""

    generation: int
    hv: float
    ref_point: list[float]


NSGA2 = "nsga2"  # a run's method: the search, or ILP + <sensitivity> for an ILP budget sweep (`sw.search.allocation`)
ILP = "ilp:"


@dataclass(frozen=True)
class Run:
    id: int
    workload: str
    problem: str
    config_hash: str
    var_names: list[str]
    metric_names: list[str]
    objective_names: list[str]
    thresholds: list[float]
    started: float
    finished: float | None
    method: str = NSGA2


def _key(x: Sequence[int]) -> str:
    return json.dumps([int(v) for v in x])


class ResultsDB:
    """A results database file; raises `DataError` (never deletes) if the file is not one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
            if "method" not in columns:  # a database written before ILP runs were stored
                self.conn.execute(f"ALTER TABLE runs ADD COLUMN method TEXT NOT NULL DEFAULT '{NSGA2}'")
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: expected a SQLite results database ({exc}); "
                            f"the file was left untouched, move it away to start afresh") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultsDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, workload: str, problem: str, config_hash: str, config: dict, var_names: list[str],
                  metric_names: list[str], objective_names: list[str], thresholds: list[float], *,
                  method: str = NSGA2) -> int:
        cur = self.conn.execute(
            "INSERT INTO runs (workload, problem, config_hash, config, var_names, metric_names, objective_names,"
            " thresholds, started, method) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (workload, problem, config_hash, json.dumps(config), json.dumps(var_names), json.dumps(metric_names),
             json.dumps(objective_names), json.dumps(thresholds), time.time(), method))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        self.conn.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run_id))

    def _run(self, row) -> Run:
        return Run(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]), json.loads(row[6]),
                   json.loads(row[7]), row[8], row[9], row[10])

    _RUN_COLUMNS = ("id, workload, problem, config_hash, var_names, metric_names, objective_names, thresholds, started, "
                    "finished, method")

    def runs(self, workload: str | None = None) -> list[Run]:
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs" + (" WHERE workload = ?" if workload else "") + " ORDER BY id"
        return [self._run(r) for r in self.conn.execute(sql, (workload,) if workload else ())]

    def run(self, run_id: int) -> Run:
        row = self.conn.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise DataError(f"{self.path}: no run with id {run_id}")
        return self._run(row)

    def latest_run(self, config_hash: str | None = None, *, unfinished: bool = False, method: str = NSGA2,
                   finished: bool = False) -> Run | None:
        """The newest run of `method` (the search by default; "ilp:" prefixes match every ILP sweep)."""
        prefix = method.endswith(":")
        where, args = ["method LIKE ?" if prefix else "method = ?"], [method + "%" if prefix else method]
        if finished:
            where.append("finished IS NOT NULL")
        if config_hash:
            where.append("config_hash = ?")
            args.append(config_hash)
        if unfinished:
            where.append("finished IS NULL")
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        row = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return self._run(row) if row else None

    # -- individuals --------------------------------------------------------------------------
    def add_individual(self, run_id: int, generation: int, index: int, x: Sequence[int], metrics: dict[str, float],
                       objectives: Sequence[float], constraints: Sequence[float], wall_time: float) -> None:
        """Insert one evaluated individual in its own committed transaction."""
        feasible = all(c <= 0 for c in constraints)
        self.conn.execute(
            "INSERT OR IGNORE INTO individuals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, generation, index, _key(x), json.dumps(metrics), json.dumps([float(v) for v in objectives]),
             json.dumps([float(v) for v in constraints]), int(feasible), wall_time, time.time()))

    def _individual(self, row) -> Individual:
        return Individual(row[0], row[1], row[2], tuple(json.loads(row[3])), json.loads(row[4]),
                          tuple(json.loads(row[5])), tuple(json.loads(row[6])), bool(row[7]), row[8])

    def lookup(self, run_id: int, x: Sequence[int]) -> Individual | None:
        row = self.conn.execute("SELECT * FROM individuals WHERE run_id = ? AND x = ?", (run_id, _key(x))).fetchone()
        return self._individual(row) if row else None

    def individuals(self, run_id: int) -> list[Individual]:
        rows = self.conn.execute("SELECT * FROM individuals WHERE run_id = ? ORDER BY generation, idx", (run_id,))
        return [self._individual(r) for r in rows]

    def count(self, run_id: int) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM individuals WHERE run_id = ?", (run_id,)).fetchone()[0])

    # -- hypervolume --------------------------------------------------------------------------
    def set_hypervolume(self, run_id: int, generation: int, hv: float, ref_point: Sequence[float]) -> None:
        """Record (or, when a resumed run re-plays a generation, overwrite) one generation's hypervolume."""
        self.conn.execute("INSERT OR REPLACE INTO hypervolume VALUES (?, ?, ?, ?)",
                          (run_id, generation, float(hv), json.dumps([float(v) for v in ref_point])))

    def hypervolume(self, run_id: int) -> list[HypervolumeRow]:
        """The run's hypervolume per generation, in generation order (empty for runs recorded before)."""
        rows = self.conn.execute("SELECT generation, hv, ref_point_json FROM hypervolume WHERE run_id = ?"
                                 " ORDER BY generation", (run_id,))
        return [HypervolumeRow(int(g), float(hv), json.loads(ref)) for g, hv, ref in rows]

    # -- baselines ----------------------------------------------------------------------------
    def set_baseline(self, config_hash: str, name: str, metrics: dict[str, float]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?)",
                          (config_hash, name, json.dumps(metrics), time.time()))

    def baseline(self, config_hash: str, name: str) -> dict[str, float] | None:
        row = self.conn.execute("SELECT metrics FROM baselines WHERE config_hash = ? AND name = ?",
                                (config_hash, name)).fetchone()
        return json.loads(row[0]) if row else None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """For extensions that keep their own tables in the same database (e.g. weather sweeps)."""
        return self.conn.execute(sql, args)
