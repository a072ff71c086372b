"""The Timeloop engine (optional): Timeloop + Accelergy through `timeloopfe`.

Timeloop, Accelergy and timeloopfe are not on PyPI; without them this engine stops with one line
saying how to install them. With them, an accelerator is a directory in the layout of the
Timeloop/Accelergy exercises (v4 specification): `arch.yaml`, `components/*.yaml`, `mapper.yaml`
and optionally `variables.yaml`; per-operand bit widths are passed as the variables
`WEIGHT_BITS`, `INPUT_BITS` and `OUTPUT_BITS`, which the architecture's `datawidth` attributes
must use. The outermost storage level is taken as DRAM.

NOTE: this machine has no Timeloop, so this path is untested here (see energy/README.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from energy.engines import Engine, Metrics
from energy.layers import LayerGeometry
from sw.errors import UserError

INSTALL_HINT = ("engine 'timeloop' needs Timeloop and Accelergy (timeloop-mapper, timeloop-model and accelergy on "
                "PATH) and the timeloopfe Python package, none of which are on PyPI: install them from "
                "https://github.com/NVlabs/timeloop and https://github.com/Accelergy-Project (or use the "
                "timeloopaccelergy/timeloop-accelergy-pytorch Docker image), or set 'energy.engine: zigzag'")
MODEL_REVISION = 1


def missing_parts() -> list[str]:
    """What is missing for the Timeloop engine (empty when it can run)."""
    missing = [tool for tool in ("timeloop-mapper", "timeloop-model", "accelergy") if shutil.which(tool) is None]
    try:
        import timeloopfe.v4  # noqa: F401
    except ImportError:
        try:
            import pytimeloop.timeloopfe.v4  # noqa: F401
        except ImportError:
            missing.append("timeloopfe")
    return missing


def _tl():
    try:
        import timeloopfe.v4 as tl
    except ImportError:
        import pytimeloop.timeloopfe.v4 as tl
    return tl


class TimeloopEngine(Engine):
    name = "timeloop"

    def check(self) -> None:
        missing = missing_parts()
        if missing:
            raise UserError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
        self._files()

    def version(self) -> str:
        from importlib import metadata

        try:
            version = metadata.version("timeloopfe")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return f"timeloopfe {version} model r{MODEL_REVISION} map={self.mapping_objective}"

    def _files(self) -> list[Path]:
        folder = Path(self.accelerator)
        arch = folder / "arch.yaml"
        if not arch.is_file():
            raise UserError(f"energy.accelerator: expected a Timeloop accelerator directory with arch.yaml, "
                            f"components/*.yaml and mapper.yaml, got {self.accelerator!r}")
        files = [arch, *sorted((folder / "components").glob("*.yaml"))]
        files += [f for f in (folder / "mapper.yaml", folder / "variables.yaml") if f.is_file()]
        return files

    def accelerator_id(self) -> str:
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in self._files())).hexdigest()[:16]
        return f"{Path(self.accelerator).name}:{digest}"

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                 output_bits: Sequence[int]) -> dict[int, Metrics]:
        self.check()
        return {ob: self._one(geometry, weight_bits, input_bits, ob) for ob in output_bits}

    def _one(self, g: LayerGeometry, wb: int, ib: int, ob: int) -> Metrics:
        import yaml

        tl = _tl()
        problem = {"problem": {"version": 0.4, "instance": {
            "C": g.in_channels // g.groups, "M": g.out_channels // g.groups, "G": g.groups, "N": g.batch,
            "R": g.kernel_h, "S": g.kernel_w, "P": g.out_h, "Q": g.out_w,
            "Hstride": g.stride_h, "Wstride": g.stride_w, "Hdilation": g.dilation_h, "Wdilation": g.dilation_w}}}
        with tempfile.TemporaryDirectory(prefix="timeloop-") as tmp:
            prob = Path(tmp) / "problem.yaml"
            prob.write_text(yaml.safe_dump(problem))
            spec = tl.Specification.from_yaml_files(*map(str, self._files()), str(prob))
            spec.variables["WEIGHT_BITS"], spec.variables["INPUT_BITS"], spec.variables["OUTPUT_BITS"] = wb, ib, ob
            spec.mapper.optimization_metrics = ["energy"] if self.mapping_objective == "energy" else ["delay"]
            tl.call_mapper(spec, output_dir=tmp)
            stats = (Path(tmp) / "timeloop-mapper.stats.txt").read_text()
        return parse_stats(stats, {"w": wb, "i": ib, "o": ob})


def parse_stats(text: str, bits: dict[str, int]) -> Metrics:
    """Metrics from a timeloop-mapper.stats.txt: outermost level accesses and energy, totals."""
    levels = re.split(r"\n=== (.+?) ===\n", text)
    top_name, top = levels[-2], levels[-1] if len(levels) >= 3 else ("", "")
    out: Metrics = {}
    names = {"w": "Weights", "i": "Inputs", "o": "Outputs"}
    dram_energy = 0.0
    for short, ds in names.items():
        section = re.search(rf"{ds}:\n(.*?)(?:\n    \w+:\n|\Z)", top, re.S)
        body = section.group(1) if section else ""

        def number(label: str) -> float:
            m = re.search(rf"{label}\s*(?:\(per-instance\))?\s*:\s*([\d.e+]+)", body)
            return float(m.group(1)) if m else 0.0

        reads, updates, fills = number("Scalar reads"), number("Scalar updates"), number("Scalar fills")
        out[f"dram_{short}_read_bits"] = reads * bits[short]
        out[f"dram_{short}_write_bits"] = (updates + fills) * bits[short]
        out[f"dram_{short}_read_words"] = number("Vector reads")
        out[f"dram_{short}_write_words"] = number("Vector updates") + number("Vector fills")
        out[f"dram_{short}_energy_pj"] = number("Energy \\(total\\)")
        dram_energy += out[f"dram_{short}_energy_pj"]
    width = re.search(r"Word bits\s*:\s*(\d+)", top)
    out["dram_word_bits"] = float(width.group(1)) if width else 0.0
    total = re.search(r"Energy:\s*([\d.e+]+)\s*uJ", text)
    cycles = re.search(r"Cycles:\s*(\d+)", text)
    out["energy_total_pj"] = float(total.group(1)) * 1e6 if total else float("nan")
    out["dram_energy_pj"] = dram_energy
    out["mac_energy_pj"] = float("nan")
    out["latency_cycles"] = float(cycles.group(1)) if cycles else float("nan")
    del top_name
    return out
