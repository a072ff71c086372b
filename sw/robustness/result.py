"""What a weather sweep measured: its models and their metrics under every (condition, severity).

`SweepModel` is one swept model (fp32, a uniform baseline or a Pareto point) with its costs;
`SweepResult` holds every model's metrics, clean (`CLEAN`) and corrupted, and derives accuracy
drops and means from them; `summary_lines` is its text table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

CLEAN = ("clean", 0)  # the uncorrupted data: condition "clean", severity 0
FP32_BITS = 32.0  # where fp32 sits on a weighted-bits axis
ENERGY = "dram_energy"  # the cost provider (sw.search.costs) a sweep asks for, and its sweep.csv column


@dataclass
class SweepModel:
    """One model of a sweep: fp32 (`bits` None), a uniform bit configuration, or a Pareto point
    (`x`: its decision vector, applied through the problem plugin)."""

    label: str
    bits: dict[str, tuple[int, int]] | None
    cost: float  # the workload's bit weighting (`search.weighting`) of `bits`
    dram_energy: float | None = None
    x: tuple[int, ...] | None = None

    @property
    def key(self) -> str:
        """Identifies the model in the results table: 'fp32', its per-layer bits as JSON, or, for a
        point whose decision vector carries more than bits (a plugin's own variables, a clipping
        method per layer), the bits and that vector: two points with equal bits stay apart."""
        if self.bits is None:
            return "fp32"
        bits = {name: list(b) for name, b in sorted(self.bits.items())}
        if self.x is None:
            return json.dumps(bits, separators=(",", ":"))
        return json.dumps({"bits": bits, "x": [int(v) for v in self.x]}, separators=(",", ":"))


@dataclass
class SweepResult:
    """Metrics of every model under every (condition, severity), clean included."""

    sweep_id: int
    phase: str
    seed: int
    metric_names: list[str]
    conditions: list[str]
    severities: list[int]
    models: list[SweepModel]
    metrics: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)  # (label, cond, sev)
    evaluated: int = 0
    reused: int = 0
    cost_name: str = "weighted_bits"  # the workload's `search.weighting`: the CSV column and plot axis
    energy_label: str = "DRAM energy (uJ)"  # axis label of the models' `dram_energy` (from its cost provider)

    @property
    def metric(self) -> str:
        return self.metric_names[0]

    @property
    def combos(self) -> list[tuple[str, int]]:
        """Every (condition, severity) of the sweep, clean first."""
        return [CLEAN] + [(c, s) for c in self.conditions for s in self.severities]

    def accuracy(self, label: str, condition: str, severity: int) -> float:
        return self.metrics[(label, condition, severity)][self.metric]

    def clean(self, label: str) -> float:
        return self.accuracy(label, *CLEAN)

    def drop(self, label: str, condition: str, severity: int) -> float:
        """Accuracy lost to the condition: the model's clean accuracy minus its corrupted one."""
        return self.clean(label) - self.accuracy(label, condition, severity)

    def mean_accuracy(self, label: str, condition: str) -> float:
        return float(np.mean([self.accuracy(label, condition, s) for s in self.severities]))


def summary_lines(result: SweepResult) -> Iterable[str]:
    """A text table: clean accuracy and mean accuracy over severities per condition."""
    width = max(6, *(len(c) for c in result.conditions))
    yield f"{'model':>6} {'bits':>6}  {'clean':>{width}}  " + "  ".join(f"{c:>{width}}" for c in result.conditions)
    for model in result.models:
        yield (f"{model.label:>6} {model.cost:>6.2f}  {result.clean(model.label):>{width}.4f}  "
               + "  ".join(f"{result.mean_accuracy(model.label, c):>{width}.4f}" for c in result.conditions))
