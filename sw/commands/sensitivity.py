"""`python -m sw sensitivity WORKLOAD`: each layer's sensitivity to quantization at every bit width
the search allows: Hessian (Hutchinson) and Fisher (FIT) trace proxies, and the measured loss and
top1 drop when only that layer goes to those bits; their rank correlation is printed.

Proxies and measurements use the calibration data (selection data, never the held-out split).
Writes results/<name>/sensitivity/sensitivity.csv (read by `python -m sw allocate`)."""

from __future__ import annotations

import argparse
import csv

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sw.core.durable import atomic_write
from sw.evaluation.evaluate import evaluate
from sw.model.reconstruction import ensure_rounding
from sw.search.sensitivity import fisher_traces, hutchinson_traces, proxy, spearman, weight_perturbation
from sw.study.study import Study

HELP = "per-layer sensitivity (Hessian / Fisher trace proxies and measured drop) at every searched bit width"
PHASE = "calibration"
COLUMNS = ("layer", "bits", "parameters", "hessian_trace", "fisher_trace", "perturbation", "hessian_proxy",
           "fit_proxy", "loss_increase", "top1_drop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--samples", type=int, default=8, help="Hutchinson probes per calibration batch (default 8)")
    parser.add_argument("--progress", action="store_true", help="progress bars")


def _loss(model, batches) -> float:
    with torch.no_grad():
        total = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in batches)
    return total / batches.num_samples


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    qmodel = study.quantized_model
    layers = list(qmodel.layer_names)
    data = study.batches(PHASE)
    fp32 = study.fp32_model.eval()
    print(f"Sensitivity of {study.name}: {len(layers)} layers, bits {w.search.bits.lower}..{w.search.bits.upper}, "
          f"{PHASE} data ({data.num_samples} images)")
    hessian = hutchinson_traces(fp32, layers, data, F.cross_entropy, samples=args.samples)
    fisher = fisher_traces(fp32, layers, data, F.cross_entropy)
    base_bits = study.uniform_bits(w.quantization.baseline_bits)
    qmodel.set_layer_bits(base_bits)
    base_loss, base_top1 = _loss(qmodel, data), evaluate(qmodel, data)["top1"]
    rows = []
    pairs = [(i, b) for i in range(len(layers)) for b in range(w.search.bits.lower, w.search.bits.upper + 1)]
    for i, bits in tqdm(pairs, desc="layers x bits", disable=not args.progress, leave=False):
        name = layers[i]
        ensure_rounding(qmodel, study, {bits})  # learned rounding, where the workload asks for it
        qmodel.set_layer_bits({**base_bits, name: (bits, bits)})
        loss, top1 = _loss(qmodel, data), evaluate(qmodel, data)["top1"]
        n = qmodel.layers()[name].weight.numel()
        perturbation = weight_perturbation(qmodel, name, bits)
        rows.append({"layer": name, "bits": bits, "parameters": n, "hessian_trace": hessian[i],
                     "fisher_trace": fisher[i], "perturbation": perturbation,
                     "hessian_proxy": proxy(hessian[i], n, perturbation), "fit_proxy": proxy(fisher[i], n, perturbation),
                     "loss_increase": loss - base_loss, "top1_drop": base_top1 - top1})
    qmodel.set_layer_bits(base_bits)
    path = study.results_dir / "sensitivity" / "sensitivity.csv"
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    measured = [r["loss_increase"] for r in rows]
    for key in ("hessian_proxy", "fit_proxy"):
        print(f"  Spearman rank correlation, {key} vs measured loss increase: "
              f"{spearman([r[key] for r in rows], measured):.3f} over {len(rows)} (layer, bits)")
    print(f"written: {path}")
    return 0
