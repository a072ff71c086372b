"""The Timeloop engine (optional): Timeloop's mapper with Accelergy energies, through timeloopfe.

Timeloop, Accelergy and timeloopfe are not on PyPI (energy/README.md says how to build them).
The engine needs `timeloop-mapper` and `accelergy` on PATH and a Python that imports `timeloopfe`:
this one, or the one that runs timeloopfe's `tl` command found on PATH. Without them it stops with
one line saying what is missing.

An accelerator is a shipped name (`energy/accelerators/timeloop/<name>/`) or a directory in the
layout of the Timeloop/Accelergy exercises (v0.4 specification): `arch.yaml`, `components/*.yaml`,
and optionally `mapper.yaml` and `variables.yaml`. Every file is a Jinja2 template rendered with
`TEMPLATE_DATA`: the bit widths and the problem dimensions of the layer.

Modelling (see energy/README.md, "Timeloop"):
- The problem is Timeloop's standard convolution (`problem_spec`): R/P/Wstride/Wdilation along
  the width, S/Q/Hstride/Hdilation along the height. A Linear layer is a 1x1 convolution.
- A grouped convolution is `groups` identical independent problems: one search for one group,
  every count, energy and cycle count multiplied by `groups` (groups run one after another).
- Timeloop has no padding: its input tensor is the window the convolution reads, zero halo
  included. Zeros are not stored in DRAM, so the DRAM input reads and their energy are scaled by
  (real input values in the window) / (window values) (`input_window`); exact when every input
  value crosses DRAM equally often.
- Each operand's DRAM is the outermost storage level that keeps it (an accelerator may split DRAM
  into one level per operand, each at its own word width), and it must be a DRAM level.
- Output bits: one full mapper search per requested output width (nothing is scaled or reused).
- Per-level breakdown: every storage level of the stats file becomes one record per operand it
  keeps: the DRAM levels (technology DRAM) as `dram`, a level with one instance (shared by the
  whole array) as `gb`, a level with several instances (per PE) as `rf`. On-chip bits are the
  accesses times the level's datawidth (what Timeloop modelled, e.g. partial sums at PSUM_BITS);
  energies are Timeloop's per-operand totals, with each level's remainder (leakage, address
  generation, reductions: its share of the summary's fJ/Compute minus its operands' energies)
  given to the operands in proportion, so every column adds up to Timeloop's own total.
- Not modelled with Timeloop: activations kept on chip between layers (`energy.residency`) and
  the DRAM traffic of pooling / residual adds (`energy.elementwise` other than `ignored`); the
  table refuses both with one line.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from energy.engines.base import PLAIN, DramCosts, Engine, LevelAccess, Metrics, Residency, psum_bits, summarise
from energy.layers import LayerGeometry
from sw.core.errors import UserError

INSTALL_HINT = ("engine 'timeloop' needs Timeloop and Accelergy (timeloop-mapper and accelergy on PATH) and a "
                "Python with timeloopfe, none of which are on PyPI: build and install them as energy/README.md describes "
                "(section Timeloop), or set 'energy.engine: zigzag'")
# Bump when the way layers are modelled changes: cached results of older revisions are not reused.
MODEL_REVISION = 2
SHIPPED = Path(__file__).resolve().parent.parent / "accelerators" / "timeloop"
DRIVER = Path(__file__).resolve().with_name("timeloop_driver.py")
TIMEOUT_S = 1800  # one mapper search; Timeloop's own stopping rules normally end it within a minute
DATASPACES = {"w": "Weights", "i": "Inputs", "o": "Outputs"}
OBJECTIVES = {"energy": ["energy", "delay"], "latency": ["delay", "energy"]}


# -- the Timeloop installation ----------------------------------------------------------------------
def timeloopfe_python() -> str | None:
    """A Python interpreter that imports timeloopfe: this one, or the one behind `tl` on PATH."""
    if importlib.util.find_spec("timeloopfe") is not None:
        return sys.executable
    tl = shutil.which("tl")
    if tl is None:
        return None
    try:
        with open(tl, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interpreter = first[2:].strip().split()[0] if first[2:].strip() else ""
    return interpreter if interpreter and Path(interpreter).is_file() else None


def missing_parts() -> list[str]:
    """What is missing for the Timeloop engine (empty when it can run)."""
    missing = [tool for tool in ("timeloop-mapper", "accelergy") if shutil.which(tool) is None]
    if timeloopfe_python() is None:
        missing.append("timeloopfe")
    return missing


@functools.lru_cache(maxsize=1)
def stack_versions() -> str:
    """timeloopfe and Accelergy versions of the installed stack (part of the cache key)."""
    python = timeloopfe_python()
    if python is None:
        return "timeloopfe unknown"
    code = "from importlib.metadata import version as v; print(v('timeloopfe'), v('accelergy'))"
    try:
        run = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        fe, acc = run.stdout.split()
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "timeloopfe unknown"
    return f"timeloopfe {fe} accelergy {acc}"


def shipped_accelerators() -> list[str]:
    """Names of the Timeloop accelerator directories this project ships."""
    return sorted(p.parent.name for p in SHIPPED.glob("*/arch.yaml"))


# -- the problem --------------------------------------------------------------------------------------
def problem_dims(g: LayerGeometry) -> dict[str, int]:
    """Timeloop's conv dimensions of ONE group of the layer (see the module docstring for axes)."""
    return {"C": g.in_channels // g.groups, "M": g.out_channels // g.groups, "R": g.kernel_w, "S": g.kernel_h,
            "N": g.batch, "P": g.out_w, "Q": g.out_h, "Wstride": g.stride_w, "Hstride": g.stride_h,
            "Wdilation": g.dilation_w, "Hdilation": g.dilation_h}


def problem_spec(g: LayerGeometry) -> dict:
    """The timeloopfe v0.4 `problem` of one group: instance and the standard convolution shape."""
    return {"problem": {
        "version": 0.4,
        "instance": problem_dims(g),
        "shape": {
            "name": "conv2d",
            "dimensions": ["C", "M", "R", "S", "N", "P", "Q"],
            "coefficients": [{"name": n, "default": 1} for n in ("Wstride", "Hstride", "Wdilation", "Hdilation")],
            "data_spaces": [
                {"name": "Weights", "projection": [[["C"]], [["M"]], [["R"]], [["S"]]]},
                {"name": "Inputs", "projection": [[["N"]], [["C"]], [["R", "Wdilation"], ["P", "Wstride"]],
                                                  [["S", "Hdilation"], ["Q", "Hstride"]]]},
                {"name": "Outputs", "projection": [[["N"]], [["M"]], [["Q"]], [["P"]]], "read_write": True},
            ],
        },
    }}


def input_window(g: LayerGeometry) -> tuple[int, int]:
    """(real input values, window values) per (batch, channel) of the input window Timeloop models.

    The window is ((P-1)*stride + (R-1)*dilation + 1) wide (likewise high) and starts `pad` values
    before the real input, so it includes the zero padding and excludes input columns the
    convolution never reads.
    """
    def axis(out: int, kernel: int, stride: int, dilation: int, pad_before: int, size: int) -> tuple[int, int]:
        window = (out - 1) * stride + (kernel - 1) * dilation + 1
        return max(0, min(size, window - pad_before)), window

    real_w, window_w = axis(g.out_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left, g.in_w)
    real_h, window_h = axis(g.out_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.in_h)
    return real_w * real_h, window_w * window_h


def template_data(g: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int) -> dict[str, int]:
    """Jinja2 data of the accelerator files: bit widths and the problem dimensions of one group."""
    return {"WEIGHT_BITS": weight_bits, "INPUT_BITS": input_bits, "OUTPUT_BITS": output_bits,
            "PSUM_BITS": psum_bits(g, weight_bits, input_bits), "GROUPS": g.groups, **problem_dims(g)}


# -- the stats file ------------------------------------------------------------------------------------
@dataclass
class DataspaceStats:
    """One operand at one storage level; counts are per instance, as Timeloop prints them."""

    reads: float
    fills: float
    updates: float
    instances: float  # utilized instances
    energy_pj: float  # all instances

    @property
    def writes(self) -> float:
        return self.fills + self.updates

    @property
    def total_reads(self) -> float:
        """Reads of all utilized instances."""
        return self.reads * self.instances

    @property
    def total_writes(self) -> float:
        """Fills and updates of all utilized instances."""
        return self.writes * self.instances


@dataclass
class LevelStats:
    """One storage level of `timeloop-mapper.stats.txt`."""

    index: int
    name: str
    technology: str  # DRAM or SRAM
    word_bits: int
    block_size: int
    cluster_size: int
    instances: int
    dataspaces: dict[str, DataspaceStats] = field(default_factory=dict)

    @property
    def width_bits(self) -> int:
        """Bits of one storage word as Timeloop models it (whole values only)."""
        return self.word_bits * self.block_size * self.cluster_size

    @property
    def values_per_word(self) -> int:
        return self.block_size * self.cluster_size


@dataclass
class TimeloopStats:
    """What the engine reads from a `timeloop-mapper.stats.txt` (or `timeloop-model.stats.txt`)."""

    levels: list[LevelStats]  # storage levels, innermost first
    compute_energy_pj: float
    computes: float
    cycles: float
    energy_total_pj: float
    compute_instances: float = 1.0  # arithmetic units of the array
    utilized_compute_instances: float = 1.0  # of which the mapping uses
    level_energy_pj: dict[str, float] = field(default_factory=dict)  # summary fJ/Compute x computes, per level

    def backing_level(self, dataspace: str) -> LevelStats:
        """The outermost level that keeps `dataspace`: where it lives before and after the layer."""
        for level in reversed(self.levels):
            if dataspace in level.dataspaces:
                return level
        raise ValueError(f"no storage level keeps {dataspace}")


class StatsError(ValueError):
    """A stats file without the sections the engine needs."""


def _number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern + r"\s*[:=]\s*([-+\d.eE]+)", text)
    if m is None:
        raise StatsError(f"no '{what}' in the Timeloop stats")
    return float(m.group(1))


def _actual(kind: str, text: str) -> float:
    """A count printed as `Actual <kind>` by sparse-capable levels and as `<kind>` by dense ones."""
    actual = re.search(rf"(?m)^\s*Actual {kind}\s*[:=]\s*([-+\d.eE]+)", text, re.I)
    return float(actual.group(1)) if actual else _number(rf"(?m)^\s*{kind}", text, kind)


def _dataspace(body: str) -> DataspaceStats:
    # Sparse-capable buffers print "Actual scalar reads (per-instance)" (next to algorithmic, gated
    # and skipped counts); dense ones "Scalar reads (per-instance)". Both are the accesses performed.
    def count(kind: str) -> float:
        return _actual(rf"[Ss]calar {kind} \(per-instance\)", body)

    instances = re.search(r"(?m)^\s*Utilized instances \((?:max|average)\)\s*:\s*([-+\d.eE]+)", body)
    return DataspaceStats(reads=count("reads"), fills=count("fills"), updates=count("updates"),
                          instances=float(instances.group(1)) if instances else 1.0,
                          energy_pj=_number(r"(?m)^\s*Energy \(total\)", body, "Energy (total)"))


def parse_stats(text: str) -> TimeloopStats:
    """Parse the per-level section and the summary of a Timeloop stats file.

    Raises `StatsError` when it is not one (or lacks a compute level, a storage level or totals).
    """
    blocks = re.split(r"(?m)^Level (\d+)\n-+\n", text.split("\nNetworks\n", 1)[0])
    if len(blocks) < 3:
        raise StatsError("no 'Level N' sections in the Timeloop stats")
    levels: list[LevelStats] = []
    compute_energy = computes = None
    for index, block in zip(blocks[1::2], blocks[2::2]):
        name = re.match(r"=== (.+?) ===", block.strip())
        if name is None:
            raise StatsError(f"level {index} has no '=== name ===' header")
        if "Computes (total)" in block:  # the arithmetic level
            compute_energy = _number(r"Energy \(total\)", block, "Energy (total)")
            computes = _actual(r"Computes \(total\)", block)
            compute_instances = _number(r"(?m)^\s*Instances", block, "Instances")
            utilized = re.search(r"(?m)^\s*Utilized instances\s*:\s*([-+\d.eE]+)", block)
            utilized_instances = float(utilized.group(1)) if utilized else compute_instances
            continue
        specs, _, stats = block.partition("\n    STATS\n")
        level = LevelStats(
            index=int(index), name=name.group(1),
            technology=re.search(r"Technology\s*:\s*(\S+)", specs).group(1) if "Technology" in specs else "",
            # sparse-capable levels say "Data word bits" and "Data block size"
            word_bits=int(_number(r"(?m)^\s*(?:Data w|W)ord bits", specs, "Word bits")),
            block_size=int(_number(r"(?m)^\s*(?:Data b|B)lock size", specs, "Block size")),
            cluster_size=int(_number(r"Cluster size", specs, "Cluster size")),
            instances=int(_number(r"Instances", specs, "Instances")))
        for ds, body in re.findall(r"(?ms)^    (\w+):\n(.*?)(?=^    \w+:\n|\Z)", stats):
            level.dataspaces[ds] = _dataspace(body)
        levels.append(level)
    if compute_energy is None or not levels:
        raise StatsError("no compute level or no storage level in the Timeloop stats")
    summary = text.rpartition("\nSummary Stats\n")[2]
    if not summary or summary == text:
        raise StatsError("no 'Summary Stats' in the Timeloop stats")
    cycles = _number(r"(?m)^Cycles", summary, "Cycles")
    per_compute = summary.partition("\nfJ/Compute\n")[2]
    total_fj = _number(r"(?m)^\s*Total", per_compute, "fJ/Compute Total")
    total_computes = _actual("Computes", summary)
    level_energy = {lv.name: float(m.group(1)) * total_computes / 1000.0 for lv in levels
                    if (m := re.search(rf"(?m)^\s*{re.escape(lv.name)}\s*=\s*([-+\d.eE]+)", per_compute))}
    return TimeloopStats(levels=levels, compute_energy_pj=compute_energy, computes=computes, cycles=cycles,
                         energy_total_pj=total_fj * total_computes / 1000.0, compute_instances=compute_instances,
                         utilized_compute_instances=utilized_instances, level_energy_pj=level_energy)


def layer_metrics(stats: TimeloopStats, geometry: LayerGeometry, bits: dict[str, int]) -> Metrics:
    """Table metrics of a layer from the stats of one of its groups (see the module docstring).

    `bits` maps "w", "i", "o" to the operand's bits in DRAM (outputs: the final output bits).
    """
    g = geometry.groups
    real, window = input_window(geometry)
    backing = {op: stats.backing_level(ds) for op, ds in DATASPACES.items()}
    for op, level in backing.items():
        if level.technology != "DRAM":
            raise StatsError(f"the outermost memory holding {DATASPACES[op]} is {level.name} ({level.technology}), "
                             f"not a DRAM")
    records: list[LevelAccess] = []
    for level in stats.levels:
        kept = {op: level.dataspaces[ds] for op, ds in DATASPACES.items() if ds in level.dataspaces}
        own = sum(s.energy_pj for s in kept.values())
        # the level's energy outside its operands' access energies, shared in proportion; the summary
        # prints fJ/Compute to two decimals, so a difference within that rounding is rounding
        summary = stats.level_energy_pj.get(level.name, own)
        rounding = 0.005e-3 * stats.computes + 0.005 * len(kept)
        scale_energy = summary / own if own > 0 and abs(summary - own) > rounding else 1.0
        for op, s in kept.items():
            dram = level is backing[op]
            if level.technology == "DRAM" and not dram:
                raise StatsError(f"{level.name} keeps {DATASPACES[op]} but is not its outermost memory")
            scale = real / window if dram and op == "i" else 1.0  # the zero halo is not read from DRAM
            reads, writes = s.total_reads * scale, s.total_writes * scale
            width = bits[op] if dram else level.word_bits
            per_word = level.values_per_word
            records.append(LevelAccess(
                memory=level.name, level="dram" if dram else "gb" if level.instances == 1 else "rf", operand=op,
                read_words=(math.ceil(reads / per_word) if dram else reads / per_word) * g,
                write_words=(math.ceil(writes / per_word) if dram else writes / per_word) * g,
                read_bits=reads * width * g, write_bits=writes * width * g,
                energy_pj=s.energy_pj * scale * scale_energy * g))
    ideal = stats.computes / stats.compute_instances
    return summarise(records, mac_energy_pj=stats.compute_energy_pj * g, latency_cycles=stats.cycles * g,
                     ideal_cycles=ideal * g, spatial_utilization=stats.utilized_compute_instances / stats.compute_instances,
                     dram_word_bits=float(max(level.width_bits for level in backing.values())),
                     dram_o_final_bits=float(geometry.n_outputs * bits["o"]))


def failure_reason(log: str, accelergy_log: str = "") -> str:
    """Why Timeloop failed, on one line, from its console output and Accelergy's log ('' if unknown)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if any(ln.startswith("Failed to run Accelergy") for ln in lines):
        acc = [ln.split(None, 3)[-1] for ln in accelergy_log.splitlines() if " ERROR " in ln]
        acc = [ln for ln in acc if not ln.startswith("=")]
        hints = [ln.split("estimating value:", 1)[1].strip() for ln in accelergy_log.splitlines()
                 if "estimating value:" in ln and ln.split("estimating value:", 1)[1].strip()]
        reason = "Accelergy failed" + (f": {acc[0]}" if acc else "")
        return (reason[:200] + (f" ({hints[-1][:150]})" if hints else "")).strip()
    found = [ln for ln in lines if re.match(r"(ERROR|MESSAGE)\b|.*(Assertion|error:|terminate called)", ln)]
    if not found:
        return ""
    reason = found[0].removeprefix("MESSAGE:").strip().rstrip(".")
    if reason.startswith("no valid mappings"):
        reason = reason.split(". Some suggestions")[0]
        why = [ln.split("STATEMENT:", 1)[1].strip() for ln in lines if "STATEMENT:" in ln]
        reason += f" ({why[-1].rstrip('.')})" if why else ""
    return reason[:300]


# -- the engine ------------------------------------------------------------------------------------
class TimeloopEngine(Engine):
    """Timeloop's mapper + Accelergy on a Timeloop v0.4 accelerator directory."""

    name = "timeloop"

    def __init__(self, accelerator: str, mapping_objective: str = "energy", **mapper_settings):
        super().__init__(accelerator, mapping_objective, **mapper_settings)
        if mapping_objective not in OBJECTIVES:
            raise UserError(f"energy.mapping_objective: expected one of {', '.join(OBJECTIVES)}, "
                            f"got {mapping_objective!r}")

    def version(self) -> str:
        return f"{stack_versions()} model r{MODEL_REVISION} map={self.mapping_objective}"

    def folder(self) -> Path:
        """The accelerator directory: a shipped name or a path."""
        candidate = Path(self.accelerator)
        if (SHIPPED / self.accelerator / "arch.yaml").is_file() and "/" not in self.accelerator:
            return SHIPPED / self.accelerator
        if not (candidate / "arch.yaml").is_file():
            raise UserError(f"energy.accelerator: expected a shipped Timeloop accelerator "
                            f"({', '.join(shipped_accelerators())}) or a Timeloop accelerator directory with "
                            f"arch.yaml and components/*.yaml, got {self.accelerator!r}")
        return candidate

    def files(self) -> list[Path]:
        folder = self.folder()
        files = [folder / "arch.yaml", *sorted((folder / "components").glob("*.yaml"))]
        return files + [f for f in (folder / "mapper.yaml", folder / "variables.yaml") if f.is_file()]

    def accelerator_id(self) -> str:
        digest = hashlib.sha256(b"\0".join(f.name.encode() + b"\0" + f.read_bytes() for f in self.files()))
        return f"{self.folder().name}:{digest.hexdigest()[:16]}"

    def check(self) -> None:
        missing = missing_parts()
        if missing:
            raise UserError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
        self.files()

    def dram_costs(self) -> DramCosts:
        raise UserError("energy.elementwise: the timeloop engine models each layer on its own (its DRAM costs come "
                        "from Accelergy per layer), so pooling / residual-add traffic is not modelled; set "
                        "'energy.elementwise: ignored' or 'energy.engine: zigzag'")

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                 output_bits: Sequence[int], residency: Residency = PLAIN) -> dict[int, Metrics]:
        if residency != PLAIN:  # supports_residency is False: the table never asks
            raise UserError("energy.residency: the timeloop engine keeps no activation on chip between layers")
        self.check()
        return {ob: self.evaluate_one(geometry, weight_bits, input_bits, ob)
                for ob in sorted(set(int(b) for b in output_bits))}

    def evaluate_one(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int) -> Metrics:
        """One mapper search for one group of the layer at these bit widths; metrics of the whole layer."""
        stats = self.search(geometry, weight_bits, input_bits, output_bits)
        try:
            return layer_metrics(parse_stats(stats), geometry, {"w": weight_bits, "i": input_bits, "o": output_bits})
        except StatsError as exc:
            raise UserError(f"timeloop on {geometry.describe()} at W{weight_bits}/I{input_bits}/O{output_bits} bits, "
                            f"accelerator {self.accelerator!r}: {exc}") from None

    def search(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int) -> str:
        """Run timeloop-mapper through timeloopfe; the text of timeloop-mapper.stats.txt."""
        where = (f"timeloop on {geometry.describe()} at W{weight_bits}/I{input_bits}/O{output_bits} bits, "
                 f"accelerator {self.accelerator!r}")
        python = timeloopfe_python()
        if python is None:
            raise UserError(f"{INSTALL_HINT} (missing: timeloopfe)")
        tmp = Path(tempfile.mkdtemp(prefix="timeloop-"))
        keep = False
        try:
            problem = tmp / "problem.yaml"
            problem.write_text(yaml.safe_dump(problem_spec(geometry), sort_keys=False))
            request = tmp / "request.json"
            request.write_text(json.dumps({
                "files": [str(f.resolve()) for f in self.files()] + [str(problem)],
                "data": template_data(geometry, weight_bits, input_bits, output_bits),
                "metrics": OBJECTIVES[self.mapping_objective], "output_dir": str(tmp / "out")}))
            try:
                run = subprocess.run([python, str(DRIVER), str(request)], capture_output=True, text=True,
                                     timeout=TIMEOUT_S, cwd=tmp)
            except subprocess.TimeoutExpired:
                keep = True
                raise UserError(f"{where}: no result after {TIMEOUT_S} s (outputs kept in {tmp})") from None
            stats = tmp / "out" / "timeloop-mapper.stats.txt"
            if run.returncode != 0 or not stats.is_file():
                keep = True
                log, acc = tmp / "out" / "timeloop.log", tmp / "out" / "timeloop-mapper.accelergy.log"
                reason = failure_reason(*(f.read_text(errors="replace") if f.is_file() else "" for f in (log, acc)))
                lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
                reason = reason or (lines[-1] if lines else f"exit status {run.returncode}")
                raise UserError(f"{where}: {reason} (outputs kept in {tmp})")
            return stats.read_text()
        finally:
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
