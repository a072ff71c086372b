"""The figures of a study's report, each built from `StudyInputs` as a `Figure` (data + panels).

A figure whose input is missing is not built (the caller says why in the page).
"""

from __future__ import annotations

import math
from typing import Any

from sw.core.errors import DataError
from sw.report.inputs import ENERGY_OPERANDS, HELDOUT, StudyInputs, energy_layers, layer_energy, to_float
from sw.report.spec import NAN, Axis, Figure, Heatmap, HLine, Series
from sw.search.pareto import front_point

BLUE, GREEN, RED, GREY, GOLD, PINK = "#1f4e9c", "#2a8a4a", "#d62020", "#555555", "#f0b000", "#d9a0a0"
PALE = "#9aa9c4"
NAMES = ("front", "generations", "hypervolume", "bits", "energy", "weather", "sensitivity", "compare_search")  # every figure a report can draw
OPERAND_COLORS = {"weights": "#4c72b0", "inputs": "#dd8452", "outputs": "#55a868"}


def _label(name: str) -> str:
    return name.replace("_", " ")


def _first_cost(inputs: StudyInputs) -> tuple[int, str]:
    """(objective index, name) of the first cost objective."""
    for k, name in enumerate(inputs.objective_names):
        if not name.startswith("-"):
            return k, name
    return len(inputs.objective_names) - 1, inputs.objective_names[-1]


def _threshold_lines(inputs: StudyInputs) -> list[HLine]:
    metric = inputs.metric_names[0]
    lines = [HLine(inputs.run.thresholds[0], f"minimum {metric}", "#b03030")] if inputs.run.thresholds else []
    return lines


def front_figure(inputs: StudyInputs) -> Figure:
    """Every individual, the Pareto front on exploration data and, when present, the same points
    on held-out data (misses crossed out, the best point starred), threshold and baselines."""
    metric = inputs.metric_names[0]
    k, cost = _first_cost(inputs)
    front_by_x = {tuple(int(row[v]) for v in inputs.run.var_names): row for row in inputs.front_rows
                  if all(v in row for v in inputs.run.var_names)}
    best = inputs.best
    held = f"{HELDOUT}{metric}"
    columns = ["generation", "index", "cost", "feasible", "feasible_acc", "infeasible_acc", "front_acc",
               "heldout_acc", "heldout_miss_acc", "best_acc", "point"]
    rows = []
    for ind in sorted(inputs.individuals, key=lambda i: (i.objectives[k], -i.metrics.get(metric, NAN))):
        acc = ind.metrics.get(metric, NAN)
        row = front_by_x.get(tuple(ind.x))
        on_front = row is not None
        held_acc = to_float(row.get(held)) if on_front else NAN
        missed = on_front and held in row and not row.get(f"{HELDOUT}feasible", True)
        rows.append([ind.generation, ind.index, ind.objectives[k], int(ind.feasible),
                     acc if ind.feasible else NAN, NAN if ind.feasible else acc, acc if on_front else NAN,
                     held_acc, held_acc if missed else NAN,
                     held_acc if on_front and best is not None and row.get("point") == best else NAN,
                     row.get("point") if on_front else ""])
    series = [Series("cost", "infeasible_acc", "infeasible", "marks", PINK, "x", 3.5),
              Series("cost", "feasible_acc", "feasible", "marks", PALE, "o", 3.0),
              Series("cost", "front_acc", "Pareto front (exploration)", "line", BLUE, "o", 4.0)]
    if inputs.has_heldout:
        phase = inputs.front.get("heldout_phase", "held-out") if inputs.front else "held-out"
        series += [Series("cost", "heldout_acc", f"same points, held-out ({phase})", "line", GREEN, "s", 4.0,
                          dashed=True, filled=False),
                   Series("cost", "heldout_miss_acc", "misses the constraint on held-out data", "marks", RED, "x", 6.0),
                   Series("cost", "best_acc", f"best: point {best}", "marks", GOLD, "*", 6.0)]
    hlines = _threshold_lines(inputs)
    styles = [(GREY, True), ("#888888", False), ("#222222", False)]
    for (name, metrics), (color, dashed) in zip(inputs.baselines.items(), styles):
        if metric in metrics:
            hlines.append(HLine(float(metrics[metric]), f"{name} baseline", color, dashed))
    axis = Axis(_label(cost), f"{metric} accuracy", series, hlines=hlines, legend="below")
    caption = (f"Accuracy ({metric}) against {_label(cost)} of all {len(inputs.individuals)} individuals of run "
               f"{inputs.run.id}, with the Pareto front" + (" and its held-out accuracy" if inputs.has_heldout else ""))
    return Figure("front", f"{inputs.workload.name}: Pareto front", caption, columns, rows, [axis])


def generations_figure(inputs: StudyInputs) -> Figure:
    """All individuals, coloured by the generation that produced them."""
    metric = inputs.metric_names[0]
    k, cost = _first_cost(inputs)
    rows = [[ind.generation, ind.index, ind.objectives[k], ind.metrics.get(metric, NAN), int(ind.feasible)]
            for ind in sorted(inputs.individuals, key=lambda i: (i.generation, i.index))]
    axis = Axis(_label(cost), f"{metric} accuracy",
                [Series("cost", "acc", "", "scatter", BLUE, "o", 4.0, meta="generation")],
                hlines=_threshold_lines(inputs), meta_label="generation", legend="south east")
    caption = (f"Every individual of run {inputs.run.id} by generation "
               f"({len({ind.generation for ind in inputs.individuals})} generations)")
    return Figure("generations", f"{inputs.workload.name}: individuals per generation", caption,
                  ["generation", "index", "cost", "acc", "feasible"], rows, [axis])


def hypervolume_figure(inputs: StudyInputs) -> Figure:
    rows = [[r.generation, r.hv] for r in inputs.hypervolume]
    ref = inputs.hypervolume[0].ref_point if inputs.hypervolume else []
    axis = Axis("generation", "hypervolume", [Series("generation", "hv", "", "line", BLUE, "o", 4.0)],
                ticks=[(r[0], str(r[0])) for r in rows] if len(rows) <= 20 else None)
    names = ", ".join(f"{_label(n.lstrip('-'))} {'(negated) ' if n.startswith('-') else ''}{v:.4g}"
                      for n, v in zip(inputs.objective_names, ref))
    caption = (f"Hypervolume of the feasible individuals found up to each generation, reference point {names}"
               + (" (recomputed: the run predates the hypervolume table)" if inputs.hypervolume_source == "recomputed" else ""))
    return Figure("hypervolume", f"{inputs.workload.name}: hypervolume per generation", caption,
                  ["generation", "hv"], rows, [axis])


def bits_figure(inputs: StudyInputs) -> Figure:
    """The decision variables (bit widths) of every front point: one row per point."""
    names = inputs.run.var_names
    rows = []
    for r, point in enumerate(inputs.front_rows):
        for c, name in enumerate(names):
            rows.append([c, r, int(to_float(point.get(name))), name, point.get("point", r)])
    marks = {"best": " (best)", "misses": " (held-out miss)"}
    labels = [f"P{p.get('point', r)}" + marks.get(inputs.heldout_status(p), "") for r, p in enumerate(inputs.front_rows)]
    heat = Heatmap("col", "row", "bits", [n.removesuffix(".bits") for n in names], labels, "decision variable",
                   "Pareto point (cheapest first)", "bits")
    caption = f"Bit widths of the {len(inputs.front_rows)} Pareto points per layer (decision variable)"
    return Figure("bits", f"{inputs.workload.name}: bit widths of the Pareto front", caption,
                  ["col", "row", "bits", "variable", "point"], rows, heatmap=heat)


def energy_figure(inputs: StudyInputs) -> tuple[Figure | None, str]:
    """DRAM energy per layer and operand: the all-baseline-bit model and the best (or cheapest)
    Pareto point, side by side; (None, why) when the table cannot price them."""
    table = inputs.energy_table
    layers = energy_layers(table)
    base = inputs.workload.quantization.baseline_bits
    configs: dict[str, dict[str, tuple[int, int]]] = {f"all {base}-bit": {n: (base, base) for n in layers}}
    why = ""
    if inputs.front is not None and inputs.front_rows:
        point = inputs.best if inputs.best is not None else 0
        try:
            bits, _ = front_point(inputs.results_dir / "front.csv", layers, point=point)
            configs[f"point {point}" + (" (best)" if inputs.best is not None else " (cheapest)")] = bits
        except (DataError, IndexError) as exc:
            why = f"the front's bits could not be read per layer ({exc})"
    energies = {label: layer_energy(table, bits, base) for label, bits in configs.items()}
    missing = [label for label, e in energies.items() if e is None]
    if missing:
        why = f"the energy table has no entries for {', '.join(missing)} (built for other bit widths?)"
        energies = {label: e for label, e in energies.items() if e is not None}
    if not energies:
        return None, why
    columns = ["x", "layer"]
    series: list[Series] = []
    width = 0.8 / len(energies)
    for c, (label, values) in enumerate(energies.items()):
        shift = (c - (len(energies) - 1) / 2) * width
        prefix = f"c{c}"
        parts = [part for _, part in ENERGY_OPERANDS]
        columns += [f"{prefix}_{part}_uj" for part in parts] + [f"{prefix}_cum_{part}" for part in parts]
        for depth in range(len(parts) - 1, -1, -1):  # tallest (cumulative) first, so each stays visible
            series.append(Series("x", f"{prefix}_cum_{parts[depth]}", f"{parts[depth]}, {label}", "bar",
                                 _shade(OPERAND_COLORS[parts[depth]], c), shift=shift, width=width * 0.92))
    rows = []
    for k, name in enumerate(layers):
        row: list[Any] = [k, name]
        for values in energies.values():
            parts = [values[k][column] / 1e6 for column, _ in ENERGY_OPERANDS]
            row += parts + [sum(parts[:d + 1]) for d in range(len(parts))]
        rows.append(row)
    totals = {label: sum(sum(v.values()) for v in values) / 1e6 for label, values in energies.items()}
    axis = Axis("layer", "DRAM energy [uJ]", series, ticks=[(k, n) for k, n in enumerate(layers)], legend="outer")
    caption = ("DRAM energy per layer, stacked by operand (weights, inputs, outputs): "
               + "; ".join(f"{label} {total:.4g} uJ in all" for label, total in totals.items()))
    return Figure("energy", f"{inputs.workload.name}: DRAM energy per layer and operand", caption, columns, rows,
                  [axis]), why


def _shade(color: str, k: int) -> str:
    """The operand's colour, lighter for the second configuration."""
    if k == 0:
        return color
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    mix = 0.45
    return "#" + "".join(f"{round(v + (255 - v) * mix):02x}" for v in (r, g, b))


def weather_figure(inputs: StudyInputs) -> Figure | None:
    """Accuracy against severity (0: clean) per condition, one line per model (sweep.csv)."""
    table = inputs.weather
    needed = {"model", "condition", "severity"}
    metric = next((m for m in inputs.metric_names if m in table.columns), None)
    if not needed <= set(table.columns) or metric is None:
        return None
    models = list(dict.fromkeys(r["model"] for r in table.rows))
    conditions = [c for c in dict.fromkeys(r["condition"] for r in table.rows) if c != "clean"]
    severities = sorted({int(to_float(r["severity"])) for r in table.rows if r["condition"] != "clean"})
    value = {(r["model"], r["condition"], int(to_float(r["severity"]))): to_float(r[metric]) for r in table.rows}
    clean = {m: value.get((m, "clean", 0), NAN) for m in models}
    columns = ["severity"] + [f"{c}.{m}" for c in conditions for m in models]
    rows = []
    for s in [0, *severities]:
        rows.append([s] + [clean[m] if s == 0 else value.get((m, c, s), NAN) for c in conditions for m in models])
    palette = ["#000000", "#777777", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#d62728"]
    # each model named once, in the first panel where its line has a point (an empty series is not
    # drawn, so a label given to it would be lost)
    drawn = {name for k, name in enumerate(columns) if any(not math.isnan(row[k]) for row in rows)}
    labelled = {m: next((c for c in conditions if f"{c}.{m}" in drawn), None) for m in models}
    axes = []
    for condition in conditions:
        series = [Series("severity", f"{condition}.{m}", m if labelled[m] == condition else "", "line",
                         palette[i % len(palette)], "o", 3.0, dashed=(m == "fp32")) for i, m in enumerate(models)]
        axes.append(Axis("severity (0: clean)", f"{metric} accuracy", series, title=condition,
                         ticks=[(s, str(s)) for s in [0, *severities]], legend="south west"))
    if not axes:
        return None
    caption = (f"{metric} accuracy under {len(conditions)} weather conditions against severity, for "
               f"{', '.join(models)} (from {table.path.name})")
    return Figure("weather", f"{inputs.workload.name}: accuracy vs weather severity", caption, columns, rows, axes)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _chosen_bits(inputs: StudyInputs, layer: str) -> float:
    """The weight bits the best (else the cheapest) front point gives `layer`; NaN without a front."""
    if not inputs.front_rows:
        return NAN
    row = inputs.front_rows[inputs.best if inputs.best is not None else 0]
    return to_float(row.get(f"{layer}.bits", row.get(f"{layer}.weight_bits")))


def sensitivity_figure(inputs: StudyInputs) -> Figure | None:
    """Per layer against bits: the Fisher-trace proxy (log10) and the measured loss increase
    (sensitivity.csv), a star at the bits the best front point chose."""
    table = inputs.sensitivity
    if not {"layer", "bits", "fit_proxy", "loss_increase"} <= set(table.columns):
        return None
    layers = list(dict.fromkeys(r["layer"] for r in table.rows))
    bits = sorted({int(to_float(r["bits"])) for r in table.rows})
    value = {(r["layer"], int(to_float(r["bits"]))): r for r in table.rows}
    columns = ["bits"]
    for k in range(len(layers)):
        columns += [f"l{k}_log_fit", f"l{k}_loss", f"l{k}_chosen_log_fit", f"l{k}_chosen_loss"]
    rows = []
    for b in bits:
        row: list[Any] = [b]
        for layer in layers:
            r = value.get((layer, b), {})
            fit, loss = to_float(r.get("fit_proxy")), to_float(r.get("loss_increase"))
            log_fit, log_loss = (math.log10(v) if v > 0 else NAN for v in (fit, loss))
            chosen = _chosen_bits(inputs, layer) == b
            row += [log_fit, log_loss, log_fit if chosen else NAN, log_loss if chosen else NAN]
        rows.append(row)
    panels = []
    for key, ylabel in (("log_fit", "log10 Fisher-trace proxy"), ("loss", "log10 measured loss increase (> 0)")):
        series = []
        for k, layer in enumerate(layers):
            color = PALETTE[k % len(PALETTE)]
            series += [Series("bits", f"l{k}_{key}", layer if key == "log_fit" else "", "line", color, "o", 3.0),
                       Series("bits", f"l{k}_chosen_{key}", "", "marks", color, "*", 7.0)]
        panels.append(Axis("bits (only this layer; the others at the baseline bits)", ylabel, series,
                           ticks=[(b, str(b)) for b in bits], legend="north east"))
    chosen = ("best" if inputs.best is not None else "cheapest") if inputs.front_rows else None
    caption = ("Sensitivity of each layer to its bit width on the calibration data: the Fisher-trace proxy and the "
               "measured loss increase when only that layer is quantized (where it is positive)"
               + (f"; stars: the bits of the {chosen} Pareto point" if chosen else ""))
    return Figure("sensitivity", f"{inputs.workload.name}: sensitivity per layer", caption, columns, rows, panels,
                  columns_per_row=2)


def compare_figure(inputs: StudyInputs) -> Figure | None:
    """Hypervolume against evaluations per search method (compare_search/curves.csv): the median
    over seeds at each evaluation count, and each seed's curve thin."""
    table = inputs.compare
    if not {"method", "seed", "evaluations", "hypervolume"} <= set(table.columns):
        return None
    curves: dict[str, dict[str, dict[int, float]]] = {}
    for r in table.rows:
        curves.setdefault(r["method"], {}).setdefault(r["seed"], {})[int(to_float(r["evaluations"]))] = \
            to_float(r["hypervolume"])
    longest = max((max(c) for seeds in curves.values() for c in seeds.values()), default=0)
    methods = list(curves)
    columns = ["evaluations"] + [f"m{k}_median" for k in range(len(methods))]
    rows = []
    for n in range(1, longest + 1):
        row: list[Any] = [n]
        for method in methods:
            values = [c[n] for c in curves[method].values() if n in c]
            complete = len(values) == len(curves[method])
            row.append(sorted(values)[(len(values) - 1) // 2] if values and complete else NAN)
        rows.append(row)
    series = [Series("evaluations", f"m{k}_median", f"{m} (median of {len(curves[m])})", "line",
                     PALETTE[k % len(PALETTE)], "none", 2.0) for k, m in enumerate(methods)]
    axis = Axis("evaluations", "hypervolume (exploration data)", series, legend="south east")
    caption = ("Hypervolume of the feasible points found against the number of evaluated candidates, per search "
               "method (lower median over seeds while every seed's run is that long; one reference point for all)")
    return Figure("compare_search", f"{inputs.workload.name}: hypervolume vs evaluations", caption, columns, rows,
                  [axis])
