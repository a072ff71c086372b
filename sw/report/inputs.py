"""Everything a study's report reads, in one place.

The report never evaluates a model: it reads what the other commands wrote under
`results/<name>/` (see docs/DESIGN.md, "Results", and tasks' INTERFACES):

| input | written by | used for |
| --- | --- | --- |
| `results.sqlite`: runs, individuals, baselines, hypervolume | `explore` | summary, generations, hypervolume |
| `front.json` (+ `front.csv`) | `explore` | front with held-out metrics, best point, baselines |
| `energy_table.csv`, other `energy*.csv` | `python -m energy table` (and energy breakdowns) | energy per layer and operand |
| `weather/sweep.csv` | `weather-sweep` | accuracy vs severity |
| `cosim/*.csv` | `cosim` | co-simulation tables |
| `sensitivity/sensitivity.csv` | `sensitivity` | sensitivity per layer and bits, with the front's bits |
| `compare_search/curves.csv`, `summary.csv` | `compare-search` | hypervolume vs evaluations per search method |
| `ablation/`, `deploy/`, `retrain/`: `*.csv`, `*.png`, `*.md`, `*.json` | `ablate`, `export`, `retrain` | tables, images, links |

A missing input leaves its section out (with a note saying which command writes it); an
unreadable one is listed in `StudyInputs.problems` and its section shows the problem.
CSV files are read generically: any columns, rendered as tables; only the columns named in
the interfaces above are interpreted (front.json keys, energy table columns, sweep.csv).
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sw.config.workload import Workload
from sw.core.errors import DataError
from sw.search.hypervolume import per_generation
from sw.search.pareto import objective_value, pareto_front
from sw.search.results import HypervolumeRow, Individual, ResultsDB, Run

FOLDERS = {  # result folders rendered generically: folder -> (section title, command that writes it)
    "ablation": ("Calibration ablation", "python -m sw ablate"),
    "deploy": ("Export / deployment", "python -m sw export"),
    "retrain": ("Quantization-aware retraining", "python -m sw retrain"),
}
HELDOUT = "heldout_"  # prefix of held-out columns in front.json / front.csv (sw.search.heldout.PREFIX)
MAX_TABLE_ROWS = 200  # longer CSVs are shown truncated (the file is linked)


@dataclass
class CsvTable:
    """A CSV file as read: its column names in order and its rows as strings."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]

    def numbers(self, column: str) -> list[float]:
        return [to_float(row.get(column)) for row in self.rows]


@dataclass
class Folder:
    """A result folder another command writes (ablation, deploy, retrain)."""

    name: str
    title: str
    command: str
    path: Path
    tables: list[CsvTable] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    documents: list[Path] = field(default_factory=list)


@dataclass
class StudyInputs:
    """What exists for one study; `None` / empty where the command that writes it has not run."""

    workload: Workload
    config_hash: str
    results_dir: Path
    run: Run | None = None
    individuals: list[Individual] = field(default_factory=list)
    hypervolume: list[HypervolumeRow] = field(default_factory=list)
    hypervolume_source: str = ""  # "database" or "recomputed" (runs recorded before the table existed)
    front: dict | None = None  # front.json of `run`
    front_rows: list[dict] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    energy_table: CsvTable | None = None
    energy_tables: list[CsvTable] = field(default_factory=list)  # other energy*.csv (breakdowns)
    weather: CsvTable | None = None
    cosim: list[CsvTable] = field(default_factory=list)
    sensitivity: CsvTable | None = None  # sensitivity/sensitivity.csv (python -m sw sensitivity)
    compare: CsvTable | None = None  # compare_search/curves.csv (python -m sw compare-search)
    compare_summary: CsvTable | None = None  # compare_search/summary.csv
    folders: list[Folder] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why something is absent
    problems: list[str] = field(default_factory=list)  # unreadable inputs, one line each

    @property
    def metric_names(self) -> list[str]:
        return self.run.metric_names if self.run else list(self.workload.accuracy.metrics)

    @property
    def objective_names(self) -> list[str]:
        """Objective names as stored (accuracies negated: `-top1`)."""
        return self.run.objective_names if self.run else []

    @property
    def cost_names(self) -> list[str]:
        return [n for n in self.objective_names if not n.startswith("-")]

    @property
    def has_heldout(self) -> bool:
        return bool(self.front_rows) and f"{HELDOUT}{self.metric_names[0]}" in self.front_rows[0]

    @property
    def best(self) -> int | None:
        return self.front.get("best") if self.front else None

    def heldout_status(self, row: Mapping) -> str:
        """A front row on held-out data: `best`, `meets` or `misses` (the constraint); "" without held-out data."""
        feasible = row.get(f"{HELDOUT}feasible")
        if feasible is None:
            return ""
        if self.best is not None and row.get("point") == self.best:
            return "best"
        return "meets" if feasible else "misses"


def to_float(value: Any) -> float:
    """A CSV/JSON cell as a float (NaN for empty or non-numeric)."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_csv(path: Path) -> CsvTable:
    """A CSV with a header row; `DataError` naming the file if it is not one."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: expected a CSV file with a header row ({exc})") from None
    if not columns:
        raise DataError(f"{path}: expected a CSV file with a header row, got an empty file")
    return CsvTable(path, columns, rows)


def load_inputs(workload: Workload, config_hash: str, run_id: int | None = None) -> StudyInputs:
    """Read every result of a study that exists; never evaluates or writes anything."""
    results_dir = workload.results_dir
    inputs = StudyInputs(workload, config_hash, results_dir)
    _load_run(inputs, run_id)
    _load_front(inputs)
    inputs.energy_table = _optional_csv(inputs, results_dir / "energy_table.csv",
                                        "no energy table: `python -m energy table WORKLOAD` builds it")
    inputs.energy_tables = [t for p in sorted(results_dir.glob("energy*.csv")) if p.name != "energy_table.csv"
                            if (t := _optional_csv(inputs, p, "")) is not None]
    inputs.weather = _optional_csv(inputs, results_dir / "weather" / "sweep.csv",
                                   "no weather sweep: `python -m sw weather-sweep WORKLOAD` writes one")
    inputs.sensitivity = _optional_csv(inputs, results_dir / "sensitivity" / "sensitivity.csv",
                                       "no sensitivity table: `python -m sw sensitivity WORKLOAD` writes one")
    inputs.compare = _optional_csv(inputs, results_dir / "compare_search" / "curves.csv",
                                   "no search comparison: `python -m sw compare-search WORKLOAD` writes one")
    inputs.compare_summary = _optional_csv(inputs, results_dir / "compare_search" / "summary.csv", "")
    inputs.cosim = [t for p in sorted((results_dir / "cosim").glob("*.csv")) if (t := _optional_csv(inputs, p, ""))]
    if not inputs.cosim:
        inputs.notes.append("no co-simulation report: `python -m cosim WORKLOAD` (make cosim) writes one")
    for name, (title, command) in FOLDERS.items():
        folder = _load_folder(inputs, name, title, command)
        if folder is not None:
            inputs.folders.append(folder)
    return inputs


def _optional_csv(inputs: StudyInputs, path: Path, absent_note: str) -> CsvTable | None:
    if not path.is_file():
        if absent_note:
            inputs.notes.append(absent_note)
        return None
    try:
        return read_csv(path)
    except DataError as exc:
        inputs.problems.append(str(exc))
        return None


def _load_folder(inputs: StudyInputs, name: str, title: str, command: str) -> Folder | None:
    path = inputs.results_dir / name
    if not path.is_dir():
        inputs.notes.append(f"no {title.lower()} results: `{command}` writes {path}/")
        return None
    folder = Folder(name, title, command, path)
    folder.tables = [t for p in sorted(path.glob("*.csv")) if (t := _optional_csv(inputs, p, ""))]
    folder.images = sorted(path.glob("*.png"))
    folder.documents = sorted([*path.glob("*.md"), *path.glob("*.json")])
    return folder


# -- the exploration run ------------------------------------------------------------------------
def _load_run(inputs: StudyInputs, run_id: int | None) -> None:
    db_path = inputs.results_dir / "results.sqlite"
    if not db_path.is_file():
        inputs.notes.append(f"no results database: `python -m sw explore {inputs.workload.path}` runs the search")
        return
    try:
        with ResultsDB(db_path) as db:
            if run_id is not None:
                run = db.run(run_id)
            else:
                run = db.latest_run(inputs.config_hash) or db.latest_run()
            if run is None:
                inputs.notes.append(f"{db_path}: no exploration run yet")
                return
            inputs.run = run
            inputs.individuals = db.individuals(run.id)
            inputs.hypervolume = db.hypervolume(run.id)
            inputs.hypervolume_source = "database"
            inputs.baselines = {name: metrics for name in _baseline_names(inputs.workload)
                                if (metrics := db.baseline(run.config_hash, name)) is not None}
    except (DataError, sqlite3.DatabaseError) as exc:
        inputs.problems.append(f"{db_path}: {exc}" if not str(exc).startswith(str(db_path)) else str(exc))
        return
    if not inputs.hypervolume and inputs.individuals:
        inputs.hypervolume = [HypervolumeRow(g, hv, ref) for g, hv, ref in
                              per_generation(run.objective_names, inputs.individuals)]
        inputs.hypervolume_source = "recomputed"


def _baseline_names(workload: Workload) -> list[str]:
    return ["fp32", f"int{workload.quantization.baseline_bits}"]


def _load_front(inputs: StudyInputs) -> None:
    """front.json of the selected run; else the run's front from the database (no held-out data)."""
    path = inputs.results_dir / "front.json"
    run = inputs.run
    if run is None:
        return
    if path.is_file():
        try:
            front = json.loads(path.read_text())
            if not isinstance(front, dict) or not isinstance(front.get("front"), list):
                raise ValueError("no 'front' list")
        except (OSError, ValueError) as exc:
            inputs.problems.append(f"{path}: expected the JSON Pareto front `explore` writes ({exc})")
            front = None
        if front is not None and front.get("run_id") == run.id:
            inputs.front = front
            inputs.front_rows = list(front["front"])
            inputs.baselines = {**inputs.baselines, **front.get("baselines", {})}
            return
        if front is not None:
            inputs.notes.append(f"{path} belongs to run {front.get('run_id')}, not run {run.id}: "
                                f"the front below is computed from the database, without held-out metrics")
    else:
        inputs.notes.append(f"no {path.name}: the front below is computed from the database, without held-out "
                            f"metrics (`python -m sw explore --resume` writes it)")
    inputs.front_rows = exploration_rows(run, inputs.individuals)


def exploration_rows(run: Run, individuals: Sequence[Individual]) -> list[dict]:
    """Front rows (as in front.json, without held-out columns) of a run's individuals."""
    rows = []
    for rank, ind in enumerate(pareto_front(individuals)):
        row: dict[str, Any] = {"point": rank, "generation": ind.generation, "index": ind.index}
        row.update({m: ind.metrics.get(m) for m in run.metric_names})
        row.update({n.lstrip("-"): objective_value(run, n, v) for n, v in zip(run.objective_names, ind.objectives)})
        row.update({name: int(b) for name, b in zip(run.var_names, ind.x)})
        rows.append(row)
    return rows


# -- energy -------------------------------------------------------------------------------------
ENERGY_OPERANDS = (("dram_w_energy_pj", "weights"), ("dram_i_energy_pj", "inputs"), ("dram_o_energy_pj", "outputs"))


def energy_layers(table: CsvTable) -> list[str]:
    """Layer names of an energy table CSV in forward order (the order the table writes them)."""
    return list(dict.fromkeys(row["layer"] for row in table.rows))


def layer_energy(table: CsvTable, bits: Mapping[str, tuple[int, int]], baseline_bits: int
                 ) -> list[dict[str, float]] | None:
    """DRAM energy (pJ) per layer and operand of one configuration, from an energy table CSV.

    A layer's output bits are the next layer's input bits (the last layer writes at the
    baseline bits), the rule `energy.table.EnergyTable` applies; None when the table has no
    row for some layer at its bits (a table built for other bit widths).
    """
    index = {(r["layer"], int(to_float(r["weight_bits"])), int(to_float(r["input_bits"])),
              int(to_float(r["output_bits"]))): r for r in table.rows}
    layers = energy_layers(table)
    out = []
    for k, name in enumerate(layers):
        wb, ib = bits[name]
        ob = bits[layers[k + 1]][1] if k + 1 < len(layers) else baseline_bits
        row = index.get((name, wb, ib, ob))
        if row is None:
            return None
        out.append({column: to_float(row.get(column)) for column, _ in ENERGY_OPERANDS})
    return out
