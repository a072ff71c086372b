"""`python -m sw calibrate WORKLOAD`: calibrate every quantizer and write the calibration file."""

from __future__ import annotations

import argparse

from sw.model.calibration import ensure_calibrated
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant.adapter import amax_summary
from sw.study.study import Study

HELP = "calibrate the quantizers (max, percentile, entropy, mse, aciq) and save them as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    qmodel = QuantizedModel(study.fp32_model, w.model.input_shape, QuantSettings.from_workload(w))
    path = ensure_calibrated(qmodel, study, force=True)
    for name, q in qmodel.iter_quantizers():
        print(f"  {name:<40} {'unsigned' if q.unsigned else 'signed':>8}  amax {amax_summary(q)}")
    print(f"calibration ({w.calibration.method}) written: {path}")
    return 0
