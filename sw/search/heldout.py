"""Held-out truth: every Pareto point and baseline re-evaluated on data the search never saw.

The search selects on the `exploration` data, so the front it reports is optimistic: a point
that just meets the accuracy constraint there can miss it on other images. After the search,
every Pareto point (and the fp32 and uniform baselines) is evaluated on the `reevaluation`
data; a point is *held-out feasible* when it meets every threshold of the run there too, and
`best` is the cheapest held-out feasible point. Anything a user acts on (`--point best`)
is chosen on these numbers.

Results go to the study's results database, table `heldout`, one row per
(config hash, phase, model), committed as each evaluation finishes: `model` is a baseline's
name (`fp32`, `int8`) or a point's decision vector as JSON. A killed re-evaluation continues
where it stopped, and a point already evaluated under the same configuration (any run) is
never evaluated again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

from sw.search.results import Individual, Run

PHASE = "reevaluation"
PREFIX = "heldout_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS heldout (
    config_hash TEXT NOT NULL,
    phase TEXT NOT NULL,
    model TEXT NOT NULL,
    metrics TEXT NOT NULL,
    wall_time REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, phase, model)
)
"""


@dataclass
class HeldOut:
    """Held-out metrics of the Pareto points (by decision vector) and of the baselines (by name)."""

    points: dict[tuple[int, ...], dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluated: int = 0
    reused: int = 0


def point_key(x: Sequence[int]) -> str:
    return json.dumps([int(v) for v in x])


def meets(metrics: Mapping[str, float], run: Run) -> bool:
    """Does a model meet every threshold of the run (the same numbers the search constrained)?"""
    return all(metrics[m] >= t for m, t in zip(run.metric_names, run.thresholds))


def _evaluate(study, name: str | None, x) -> dict[str, float]:
    """A baseline (`fp32`, or `int<b>`: every layer at b bits) or a decision vector, on held-out data."""
    if name == "fp32":
        return study.evaluate(study.fp32_model, PHASE)
    if name:
        return study.evaluate_bits(study.uniform_bits(int(name.removeprefix("int"))), PHASE)
    return study.evaluate_point(x, PHASE)


def reevaluate(study, db, front: Sequence[Individual], baselines: Iterable[str] = ()) -> HeldOut:
    """Held-out metrics of `front` and the named baselines; evaluates (and stores) only what is missing."""
    db.execute(SCHEMA)
    rows = db.execute("SELECT model, metrics FROM heldout WHERE config_hash = ? AND phase = ?",
                      (study.config_hash, PHASE))
    stored = {model: json.loads(metrics) for model, metrics in rows}
    work = [(name, name, None) for name in baselines] + [(point_key(ind.x), None, ind.x) for ind in front]
    result = HeldOut()
    todo = []
    for key, name, x in work:
        if key in stored:
            _keep(result, name, x, stored[key])
            result.reused += 1
        else:
            todo.append((key, name, x))
    for key, name, x in tqdm(todo, desc="held-out re-evaluation", disable=not study.progress, leave=False):
        start = time.perf_counter()
        metrics = _evaluate(study, name, x)
        db.execute("INSERT OR REPLACE INTO heldout VALUES (?, ?, ?, ?, ?, ?)",
                   (study.config_hash, PHASE, key, json.dumps(metrics), time.perf_counter() - start, time.time()))
        _keep(result, name, x, metrics)
        result.evaluated += 1
    return result


def _keep(result: HeldOut, name: str | None, x, metrics: dict[str, float]) -> None:
    if name:
        result.baselines[name] = metrics
    else:
        result.points[tuple(int(v) for v in x)] = metrics


def best_index(rows: Sequence[Mapping]) -> int | None:
    """The cheapest front row (rows are sorted by cost) that meets the constraint on held-out data."""
    return next((i for i, row in enumerate(rows) if row.get(f"{PREFIX}feasible")), None)
