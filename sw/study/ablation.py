"""The calibration ablation: held-out accuracy of one uniform bit width under each recipe.

The ACIQ paper's ablation (Banner et al., NeurIPS 2019) adds its three parts one at a time:
naive (max) -> analytical clipping -> per-channel bit allocation -> bias correction; the
histogram methods (percentile, entropy, mse) are the usual alternatives. Each recipe is a
`calibration` section applied to the same fp32 model and data (`Study.variant`), calibrated
on the `calibration` split and measured on the held-out `reevaluation` split. Every layer
gets the same (weight, input) bits; the model input stays at `quantization.baseline_bits`
(camera data).

Writes `ablation.csv` and `ablation.md` under `results/<name>/ablation/`, row by row as each
recipe finishes (a killed run keeps the rows it finished).
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from sw.core.durable import atomic_write, write_text
from sw.quant.adapter import weight_quantizer
from sw.search.heldout import PHASE

NAIVE = {"method": "max", "weight_method": "max", "prior": "laplace", "bit_allocation": False,
         "bias_correction": "none", "rounding": "nearest"}
ACIQ = {**NAIVE, "method": "aciq", "weight_method": "aciq"}


@dataclass(frozen=True)
class AblationRecipe:
    name: str
    calibration: dict[str, Any]  # the workload's `calibration` keys this recipe sets


RECIPES: tuple[AblationRecipe, ...] = (
    AblationRecipe("naive (max)", NAIVE),
    AblationRecipe("+ ACIQ (laplace)", ACIQ),
    AblationRecipe("+ bit allocation", {**ACIQ, "bit_allocation": True}),
    AblationRecipe("+ bias correction", {**ACIQ, "bit_allocation": True, "bias_correction": "mean_variance"}),
    AblationRecipe("ACIQ + mean correction", {**ACIQ, "bit_allocation": True, "bias_correction": "mean"}),
    AblationRecipe("ACIQ (gauss)", {**ACIQ, "prior": "gauss"}),
    AblationRecipe("max + bias correction", {**NAIVE, "bias_correction": "mean_variance"}),
    AblationRecipe("max + mean correction", {**NAIVE, "bias_correction": "mean"}),
    AblationRecipe("percentile", {**NAIVE, "method": "percentile"}),
    AblationRecipe("entropy", {**NAIVE, "method": "entropy"}),
    AblationRecipe("mse", {**NAIVE, "method": "mse"}),
    AblationRecipe("percentile + AdaRound", {**NAIVE, "method": "percentile", "rounding": "adaround"}),
    AblationRecipe("ACIQ + AdaRound", {**ACIQ, "rounding": "adaround"}),
    AblationRecipe("ACIQ + AdaRound + mean correction", {**ACIQ, "rounding": "adaround", "bias_correction": "mean"}),
)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def mean_weight_bits(qmodel) -> float:
    """Weight bits averaged over every weight of the model (per-channel bits where allocated)."""
    total = bits = 0.0
    for layer in qmodel.layers().values():
        wq = weight_quantizer(layer)
        channel_bits = getattr(wq, "channel_bits", None)
        n = layer.weight.numel()
        if channel_bits is None:
            bits += wq.num_bits * n
        else:
            bits += float(channel_bits.double().flatten().sum()) * (n / channel_bits.numel())
        total += n
    return bits / total


def run_ablation(study, weight_bits: int, input_bits: int, recipes: Sequence[AblationRecipe] = RECIPES, *,
                 out_dir: Path | None = None, on_row: Callable[[dict], None] | None = None,
                 end_bits: int | None = None) -> list[dict]:
    """One row per recipe (plus fp32): its settings and held-out metrics at uniform W/A bits
    (`end_bits`: the first and the last layer at those bits instead, as MQBench's benchmark)."""
    out_dir = out_dir or study.results_dir / "ablation"
    metrics = list(study.workload.accuracy.metrics)
    fp32 = study.evaluate(study.fp32_model, PHASE)
    rows = [{"recipe": "fp32", **{f"heldout_{m}": fp32[m] for m in metrics}}]
    if on_row is not None:
        on_row(rows[0])
    for recipe in tqdm(recipes, desc="recipes", disable=not study.progress, leave=False):
        row: dict[str, Any] = {"recipe": recipe.name, **recipe.calibration, "weight_bits": weight_bits,
                               "input_bits": input_bits, "end_bits": end_bits}
        if recipe.calibration.get("bit_allocation") and not study.workload.quantization.per_channel_weights:
            row["note"] = "skipped: needs quantization.per_channel_weights: true"
            rows.append(row)
            if on_row is not None:
                on_row(row)
            write_ablation(rows, out_dir, study, weight_bits, input_bits)
            continue
        file = out_dir / f"calibration_{_slug(recipe.name)}.json"
        changes: dict[str, dict[str, Any]] = {"calibration": {**recipe.calibration, "file": str(file)}}
        if recipe.calibration.get("rounding", "nearest") != "nearest":  # learn the rounding at these bits only
            changes["search"] = {"bits": {"lower": weight_bits, "upper": weight_bits}}
        variant = study.variant(changes)
        start = time.perf_counter()
        qmodel = variant.quantized_model
        row["calibration_s"] = round(time.perf_counter() - start, 3)
        layer_bits = {name: (weight_bits, input_bits) for name in qmodel.layer_names}
        if end_bits is not None:
            layer_bits.update({name: (end_bits, end_bits) for name in (qmodel.layer_names[0], qmodel.layer_names[-1])})
        result = variant.evaluate_bits(layer_bits, PHASE)
        row["mean_weight_bits"] = round(mean_weight_bits(qmodel), 4)
        row.update({f"heldout_{m}": result[m] for m in metrics})
        rows.append(row)
        if on_row is not None:
            on_row(row)
        write_ablation(rows, out_dir, study, weight_bits, input_bits)
    return rows


COLUMNS = ("recipe", "method", "weight_method", "prior", "bit_allocation", "bias_correction", "rounding",
           "weight_bits", "input_bits", "end_bits", "mean_weight_bits")


def write_ablation(rows: Sequence[dict], out_dir: Path, study, weight_bits: int, input_bits: int) -> dict[str, Path]:
    """ablation.csv (every column) and ablation.md (the table), written atomically."""
    metrics = [f"heldout_{m}" for m in study.workload.accuracy.metrics]
    fields = [*COLUMNS, *metrics, "calibration_s", "note"]
    paths = {"csv": out_dir / "ablation.csv", "md": out_dir / "ablation.md"}
    with atomic_write(paths["csv"], newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_text(paths["md"], markdown(rows, study, weight_bits, input_bits))
    return paths


def markdown(rows: Sequence[dict], study, weight_bits: int, input_bits: int) -> str:
    metrics = list(study.workload.accuracy.metrics)
    w = study.workload
    samples = study.batches(PHASE).num_samples
    end_bits = next((r.get("end_bits") for r in rows if r.get("end_bits") is not None), None)
    layers = "every layer" if end_bits is None else f"first and last layer W{end_bits}A{end_bits}, every other"
    lines = [f"Calibration ablation, {w.name} ({w.model.name}), {layers} W{weight_bits}A{input_bits} "
             f"(model input {w.quantization.baseline_bits} bits), held-out `{PHASE}` split ({samples} images).", "",
             "| recipe | activations | weights | bit allocation | bias correction | rounding | mean weight bits | "
             + " | ".join(f"held-out {m}" for m in metrics) + " |",
             "| --- " * (7 + len(metrics)) + "|"]
    for r in rows:
        if r["recipe"] == "fp32":
            settings = ["fp32", "fp32", "", "", "", "32"]
        else:
            prior = f" ({r['prior']})"
            settings = [r["method"] + (prior if r["method"] == "aciq" else ""),
                        r["weight_method"] + (prior if r["weight_method"] == "aciq" else ""),
                        "yes" if r["bit_allocation"] else "", "" if r["bias_correction"] == "none" else r["bias_correction"],
                        r.get("rounding", "nearest"), f"{r['mean_weight_bits']:.2f}" if "mean_weight_bits" in r else ""]
        values = [f"{r[f'heldout_{m}']:.4f}" if f"heldout_{m}" in r else r.get("note", "") for m in metrics]
        lines.append("| " + " | ".join([r["recipe"], *settings, *values]) + " |")
    return "\n".join(lines) + "\n"
