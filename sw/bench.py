"""`python -m sw.bench` (`nox -s bench`): cost of evaluating one candidate, fake quant vs fp32.

Measured side by side in one run, interleaved and repeated, for resnet18 and mobilenet_v2 at
32x32 (and the digits CNN); each ratio is the median over repeats of that repeat's time over
its own fp32 time (a shared machine's slow spells hit both):
- fp32: the plain model;
- fake quant, weights once: the search's path (bits set, weights fake-quantized once per
  candidate, the inference graph `sw.model.inference_graph`: layers called directly, each activation
  quantized in one fused pass with the ReLU in front of it, `sw.quant.fused_quant`);
- the same through the module graph (every QuantConv2d and quantizer module called, ReLUs as
  their own passes), and through it with the activations as five torch passes each (the two
  earlier paths; identical outputs, tested);
- fake quant, weights every forward: pytorch-quantization's default behaviour.

Then the search's evaluation throughput on the default study: candidates per second of a dask
LocalCluster and of a `dask scheduler` with `dask worker` processes (2 one-thread workers each) vs
the serial runner, on the same candidates, as parallel efficiency (candidates/s over 2 x the
one-thread serial rate), with dask's own cost per task and per call (`task_overhead`); the
calibration time of each method (statistics, then amax at every bit width 2..8 as a search
needs it) as a ratio to max calibration, with pytorch-quantization's own entropy search on one
histogram for comparison. Emulate a 2-core CI machine with `taskset -c 0,1`.

Then large evaluation sets (`--only data`): generated image folders of 2k, 4k and 8k 32x32 PNGs
evaluated as the search does (`Study.evaluate_bits`, random bits per layer), on the workload's
`device: auto` (a GPU where there is one): the one-time decode, the memory held (uint8), the time
per candidate and per 1k images (flat = linear growth) and the share of it spent handling data
(expanding uint8 batches to float32 and placing them: goal <= 10 %).

Then learned rounding (`--only rounding`): AdaRound's precompute time per layer and weight bit
width on the digits CNN, and one candidate's evaluation with learned vs nearest rounding as
ratios to fp32 (learned codes are applied when weights freeze, so the ratios should agree).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import pickle
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import absl.logging
import cloudpickle

# torch.jit deprecation chatter from pytorch-quantization's import is not a benchmark result
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import numpy as np
import torch
import torchvision
import yaml
from PIL import Image

from sw.data.datasets import build_dataset, loader_workers
from sw.model.calibration import METHODS, Recipe, calibrate
from sw.model.quantized_model import ActivationQuantizer, QuantizedModel, QuantSettings
from sw.model.reconstruction import RoundingSettings, RoundingStore, prepare_rounding
from sw.nets.models import DigitsCNN
from sw.problems.quantization_problem import worker_problem
from sw.quant.adapter import library_entropy_amax
from sw.quant.clipping import Histogram, entropy_amax
from sw.search.allocator import keep_freed_memory
from sw.search.runner import DaskBackend, DaskProcesses, SerialBackend, split_batches
from sw.study.study import Study


def _time(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@torch.no_grad()
def bench_model(name: str, model: torch.nn.Module, batches: int, batch_size: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    data = [torch.rand(batch_size, 3, 32, 32) for _ in range(batches)]
    model.eval()
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(calib_method="max"))
    calibrate(qmodel, [(x, None) for x in data[:2]], "max")
    rng = np.random.default_rng(0)
    n = len(qmodel.layer_names)

    every = copy.deepcopy(qmodel)  # pytorch-quantization's default: weights quantized on every forward
    qmodel.freeze_weights()
    for bits in range(2, 9):  # as a search's first population (every uniform configuration) does:
        qmodel.set_uniform_bits(bits)  # each layer's weights at every bit width, quantized once and kept

    def candidate() -> dict:
        return dict(zip(qmodel.layer_names, [(int(b), int(b)) for b in rng.integers(2, 9, n)]))

    def fp32() -> None:
        for x in data:
            model(x)

    def evaluate(q: QuantizedModel) -> None:
        q.set_layer_bits(candidate())  # frozen: the cached quantized weights of these bit widths
        for x in data:
            q(x)

    def module_graph() -> None:  # module calls, ReLUs as their own passes (before `sw.model.inference_graph`)
        QuantizedModel.use_inference_graph = False
        try:
            evaluate(qmodel)
        finally:
            QuantizedModel.use_inference_graph = True

    def unfused() -> None:  # and five torch passes per activation (before `sw.quant.fused_quant`)
        ActivationQuantizer.fused = False
        try:
            module_graph()
        finally:
            ActivationQuantizer.fused = True

    for fn in (fp32, lambda: evaluate(qmodel)):  # warm-up
        fn()
    times: dict[str, list[float]] = {"fp32": [], "once": [], "modules": [], "unfused": [], "every": []}
    for _ in range(repeats):  # interleaved so drifts in machine load hit all of them alike
        times["fp32"].append(_time(fp32, 1))
        times["once"].append(_time(lambda: evaluate(qmodel), 1))
        times["modules"].append(_time(module_graph, 1))
        times["unfused"].append(_time(unfused, 1))
        times["every"].append(_time(lambda: evaluate(every), 1))
    t = {k: statistics.median(v) for k, v in times.items()}
    # each repeat's own ratio, then the median: a repeat's paths run within a second of each other,
    # so a shared machine's slower and faster spells cancel out of the ratio (not out of the times)
    return {"model": name, **{f"{k}_s": v for k, v in t.items()},
            **{f"ratio_{k}": statistics.median(a / b for a, b in zip(times[k], times["fp32"]))
               for k in ("once", "modules", "unfused", "every")}}


def _warm_worker(workload: str, thresholds: tuple[float, ...], xs: list) -> None:
    """Build a dask worker's problem (model, calibration) and evaluate `xs` (compiles the fused
    quantizer, quantizes every layer's weights at every bit width) before the clock starts, as the
    serial runner is warmed."""
    problem = worker_problem(workload, thresholds)
    for x in xs:
        problem.evaluate_one(x)


def _no_op(x) -> dict:
    return {"x": x}


def _cpu_seconds(processes: list) -> list[float]:
    """User + system CPU seconds of each psutil process so far (0 for one that has ended)."""
    times = []
    for process in processes:
        try:
            t = process.cpu_times()
            times.append(t.user + t.system)
        except Exception:  # noqa: BLE001  # psutil.NoSuchProcess and kin: an ended process counts nothing
            times.append(0.0)
    return times


def task_overhead(backend: DaskBackend, cluster: DaskProcesses, tasks: int = 200) -> dict[str, float]:
    """Cost of the dask path alone, with a function that does nothing: `tasks` one-candidate tasks
    through `backend` (connected to `cluster`), wall ms per task and CPU ms per task of the scheduler,
    the worker processes (nannies included) and this process (the client); and the fixed cost of
    one call (a generation) with one task per worker: hand out, run, collect (median of 20)."""
    import psutil  # lazy: comes with dask.distributed, only for this benchmark

    roles = {"scheduler": [psutil.Process(cluster.processes[0].pid)], "workers": [], "client": [psutil.Process()]}
    for process in cluster.processes[1:]:
        nanny = psutil.Process(process.pid)
        roles["workers"] += [nanny, *nanny.children(recursive=True)]
    xs = [np.zeros(4, dtype=np.int64) for _ in range(tasks)]
    batches, backend.batches_per_worker = backend.batches_per_worker, tasks  # one candidate per task
    try:
        list(backend.imap(_no_op, xs[:20]))  # warm-up
        before = {role: _cpu_seconds(ps) for role, ps in roles.items()}
        start = time.perf_counter()
        list(backend.imap(_no_op, xs))
        wall = time.perf_counter() - start
        after = {role: _cpu_seconds(ps) for role, ps in roles.items()}
        workers = len(cluster.processes) - 1
        call_ms = statistics.median(_time(lambda: list(backend.imap(_no_op, xs[:workers])), 1) for _ in range(20)) * 1e3
    finally:
        backend.batches_per_worker = batches
    out = {"wall_ms": wall / tasks * 1e3, "call_ms": call_ms}
    for role in roles:
        out[f"{role}_cpu_ms"] = sum(max(0.0, b - a) for a, b in zip(before[role], after[role])) / tasks * 1e3
    return out


def bench_runners(candidates: int, workers: int = 2, repeats: int = 5) -> dict:
    """Candidates per second on the default study: the serial runner (this process, on torch's
    threads and on one), a dask LocalCluster and a scheduler with workers started as separate
    `dask scheduler` / `dask worker` processes, each with `workers` one-thread workers. One cluster
    at a time (as a search has), each measured `repeats` times interleaved with the serial runner.
    Parallel efficiency = candidates/s / (workers x one-thread serial candidates/s of the same
    repeat), median over repeats. Also the dask path's own cost per task and per call."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # worker processes read it too
    import distributed  # noqa: F401  # lazy: after the variable above (its loggers read it on import); quieted below

    for name in ("distributed", "dask"):  # cluster start/stop chatter is not a benchmark result
        logging.getLogger(name).setLevel(logging.ERROR)

    study = Study()
    problem = study.plugin.prepare_exploration_function(study.quantized_model, study, [0.0])
    rng = np.random.default_rng(1)
    lower, upper = int(problem.xl[0]), int(problem.xu[0])
    X = [rng.integers(lower, upper + 1, problem.n_var) for _ in range(candidates)]
    # every layer at every bit width, as a search's first population does, so no runner quantizes
    # weights inside the clock; then the first candidates (the fused kernel is built, caches warm)
    warm = [np.full(problem.n_var, bits) for bits in range(lower, upper + 1)] + X[:2]

    def run(backend, xs) -> tuple[float, float]:
        """(candidates per second, mean seconds one evaluation took where it ran)."""
        start = time.perf_counter()
        results = list(backend.imap(problem.evaluate_one, xs))
        assert len(results) == len(xs)
        return len(xs) / (time.perf_counter() - start), statistics.mean(out["wall_time"] for _, out in results)

    threads = torch.get_num_threads()
    serial = SerialBackend()
    run(serial, warm)
    samples: dict[str, list[tuple[float, float]]] = {kind: [] for kind in ("serial", "serial1", "local", "external")}
    startup: dict[str, float] = {}
    out: dict = {}

    def measure(kind: str, backend: DaskBackend, started: float) -> None:
        backend.client.run(_warm_worker, str(study.workload.path), (0.0,), warm)
        run(backend, warm[-2:])  # a first call (an external cluster's also compares each worker's numbers)
        startup[kind] = time.perf_counter() - started
        for _ in range(repeats):  # interleaved: a shared machine's slow spells hit every runner alike
            samples["serial"].append(run(serial, X))
            torch.set_num_threads(1)  # what each dask worker uses
            try:
                samples["serial1"].append(run(serial, X))
            finally:
                torch.set_num_threads(threads)
            samples[kind].append(run(backend, X))
        out[f"{kind}_efficiencies"] = [d / (workers * s) for (d, _), (s, _)
                                       in zip(samples[kind], samples["serial1"][-repeats:])]

    started = time.perf_counter()
    local = DaskBackend(workers)
    try:
        measure("local", local, started)
    finally:
        local.close()
    started = time.perf_counter()
    with DaskProcesses(workers) as cluster:
        external = DaskBackend(workers, cluster.address)
        try:
            measure("external", external, started)
            overhead = task_overhead(external, cluster)
        finally:
            external.close()
    batch = [X[i] for i in split_batches(candidates, DaskBackend.batches_per_worker * workers)[0]]  # one task's
    shipped = {"to_worker_bytes": len(cloudpickle.dumps(problem.evaluate_one)) + len(pickle.dumps(batch)),
               "back_bytes": len(pickle.dumps([problem.evaluate_one(x) for x in batch])), "batch": len(batch)}
    out.update({"candidates": candidates, "workers": workers, "repeats": repeats, "threads": threads,
                "study": study.workload.name, "startup_s": startup, "overhead": overhead, "shipped": shipped})
    for kind, values in samples.items():
        out[f"{kind}_cps"] = statistics.median(cps for cps, _ in values)
        out[f"{kind}_task_s"] = statistics.median(task for _, task in values)
    for kind in ("local", "external"):
        out[f"{kind}_efficiency"] = statistics.median(out[f"{kind}_efficiencies"])
    return out


def print_runners(r: dict) -> None:
    """The runner benchmark as a table: every runner side by side, one run."""
    w = r["workers"]
    print(f"\nsearch evaluation, default study ({r['study']}): {r['candidates']} candidates per call; one cluster at "
          f"a time, {r['repeats']} repeats each, interleaved with the serial runner (medians); parallel efficiency = "
          f"candidates/s / ({w} x serial on 1 thread, same repeat); goal >= 0.9")
    print(f"{'runner':<44}{'cand/s':>8}{'ms/eval':>9}{'vs serial':>11}{'efficiency':>12}")
    rows = (("serial", f"serial, {r['threads']} torch threads"), ("serial1", "serial, 1 torch thread"),
            ("local", f"dask LocalCluster, {w} workers x 1 thread"),
            ("external", f"dask scheduler + {w} `dask worker --nthreads 1`"))
    for kind, label in rows:
        efficiency = f"{r[kind + '_efficiency']:>11.2f}" if kind + "_efficiency" in r else f"{'':>11}"
        print(f"{label:<44}{r[kind + '_cps']:>8.2f}{r[kind + '_task_s'] * 1e3:>9.0f}"
              f"{r[kind + '_cps'] / r['serial_cps']:>10.2f}x{efficiency}")
    for kind in ("local", "external"):
        print(f"  {kind} efficiency per repeat: " + " ".join(f"{e:.2f}" for e in r[kind + "_efficiencies"]))
    o, s = r["overhead"], r["shipped"]
    print(f"dask per task (external scheduler, no-op tasks): {o['wall_ms']:.1f} ms wall; CPU "
          f"{o['scheduler_cpu_ms']:.2f} ms scheduler, {o['workers_cpu_ms']:.2f} ms workers, "
          f"{o['client_cpu_ms']:.2f} ms client; one call of one no-op task per worker {o['call_ms']:.1f} ms")
    print(f"shipped per task of {s['batch']} candidates: {s['to_worker_bytes']} bytes out, {s['back_bytes']} bytes "
          f"back (the problem goes as its workload path, built once per worker); cluster start + warm-up (not "
          f"counted) {r['startup_s']['local']:.1f} s local, {r['startup_s']['external']:.1f} s external")


def bench_calibration(model: torch.nn.Module, batches: int, batch_size: int) -> dict[str, float]:
    """Seconds per calibration method: statistics on the data, then amax at bits 2..8."""
    torch.manual_seed(0)
    data = [(torch.rand(batch_size, 3, 32, 32), None) for _ in range(batches)]
    seconds = {}
    for method in ("max", *[m for m in METHODS if m != "max"]):
        histogram = method in ("percentile", "entropy", "mse")
        qmodel = QuantizedModel(model.eval(), (3, 32, 32), QuantSettings(calib_method="histogram" if histogram else "max"))
        recipe = Recipe(method=method, weight_method="aciq" if method == "aciq" else "max")
        start = time.perf_counter()
        calibrate(qmodel, data, recipe)
        for bits in range(2, 9):
            qmodel.set_uniform_bits(bits)
        seconds[method] = time.perf_counter() - start
    return seconds


def bench_entropy_search(bins: int = 2048) -> tuple[float, float]:
    """(pytorch-quantization's entropy search, ours) on one histogram of ReLU'd Gaussian data, seconds."""
    x = np.maximum(np.random.default_rng(0).normal(size=100_000), 0.0)
    counts, edges = np.histogram(x, bins=bins, range=(0.0, float(x.max())))
    hist = Histogram(counts.astype(np.float64), edges)
    library = _time(lambda: library_entropy_amax(counts.copy(), edges, 8, True, 1, hist.start_bin), 1)
    ours = _time(lambda: entropy_amax(hist, 8, True), 5)
    return library, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8, help="batches per candidate evaluation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calib-batches", type=int, default=4, help="batches for the calibration benchmark")
    parser.add_argument("--candidates", type=int, default=32, help="candidates per call in the runner benchmark")
    parser.add_argument("--runner-repeats", type=int, default=5, help="interleaved repeats of the runner benchmark")
    parser.add_argument("--data-sizes", default="2000,4000,8000", help="images of the generated folders (data part)")
    parser.add_argument("--data-model", default="digits_cnn",
                        help="model of the data part (digits_cnn: the cheapest, so data handling weighs most)")
    parser.add_argument("--data-repeats", type=int, default=5)
    parser.add_argument("--rounding-bits", default="2,3,4", help="weight bit widths of the learned-rounding part")
    parser.add_argument("--rounding-iterations", type=int, default=RoundingSettings.iterations,
                        help="AdaRound steps per layer and bit width (default: the workload default)")
    parser.add_argument("--only", choices=("models", "runners", "calibration", "data", "rounding"),
                        help="run one part only")
    args = parser.parse_args(argv)
    absl.logging.set_verbosity(absl.logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    keep_freed_memory()  # as the search runners do (sw.search.runner.make_backend); fp32 and fake quant alike
    if args.only in (None, "models"):
        bench_models(args)
    if args.only in (None, "runners"):
        print_runners(bench_runners(args.candidates, repeats=args.runner_repeats))
    if args.only in (None, "calibration"):
        bench_calibration_table(args)
    if args.only in (None, "rounding"):
        print_rounding(bench_rounding([int(b) for b in args.rounding_bits.split(",")], args.rounding_iterations,
                                      args.batches, args.batch_size, args.repeats))
    if args.only in (None, "data"):
        print_data(bench_data([int(n) for n in args.data_sizes.split(",")], args.data_model, args.data_repeats,
                              args.batch_size * 4))
    return 0


def bench_models(args) -> None:
    rows = [bench_model(name, make(), args.batches, args.batch_size, args.repeats) for name, make in (
        ("resnet18", lambda: torchvision.models.resnet18(weights=None, num_classes=10)),
        ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10)),
        ("digits_cnn", lambda: DigitsCNN(10)))]
    print(f"one candidate = {args.batches} batches of {args.batch_size} x 3x32x32, {args.repeats} repeats "
          f"(times: medians; ratios: median of each repeat's ratio to its fp32), {torch.get_num_threads()} threads")
    print(f"{'model':<13}{'fp32 ms':>9}{'fq once ms':>12}{'ratio':>8}{'modules ms':>12}{'ratio':>8}"
          f"{'unfused ms':>12}{'ratio':>8}{'fq every ms':>13}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<13}{r['fp32_s'] * 1e3:>9.1f}{r['once_s'] * 1e3:>12.1f}{r['ratio_once']:>7.2f}x"
              f"{r['modules_s'] * 1e3:>12.1f}{r['ratio_modules']:>7.2f}x"
              f"{r['unfused_s'] * 1e3:>12.1f}{r['ratio_unfused']:>7.2f}x"
              f"{r['every_s'] * 1e3:>13.1f}{r['ratio_every']:>7.2f}x")
    print("fq once: the search's path (inference graph: ReLU + quantizer in one fused pass); modules: the module "
          "graph; unfused: the module graph with five torch passes per activation; fq every: weights quantized "
          "on every forward; goal: fq once <= 1.05x fp32 quiet, <= 1.2x under load")


def bench_calibration_table(args) -> None:
    calibration = bench_calibration(torchvision.models.mobilenet_v2(weights=None, num_classes=10),
                                    args.calib_batches, args.batch_size)
    print(f"\ncalibration of mobilenet_v2 ({args.calib_batches} batches of {args.batch_size}) + amax at bits 2..8")
    print(f"{'method':<12}{'seconds':>10}{'ratio to max':>14}")
    for method, seconds in calibration.items():
        print(f"{method:<12}{seconds:>10.2f}{seconds / calibration['max']:>13.2f}x")
    library, ours = bench_entropy_search()
    print(f"entropy amax of one 2048-bin histogram (8 bits): pytorch-quantization {library * 1e3:.0f} ms, "
          f"vectorised {ours * 1e3:.1f} ms ({library / ours:.0f}x)")


def write_image_folder(root: Path, images: int, side: int = 32, classes: int = 10, seed: int = 0) -> Path:
    """`root/c<k>/<i>.png`: `images` random RGB PNGs of side x side over `classes` class folders."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"c{i % classes}" / f"{i}.png")
    return root


def bench_data(sizes: list[int], model: str, repeats: int, batch_size: int) -> list[dict]:
    """Per image-folder size: decode once, then candidates as the search evaluates them (see the module
    doc). Every size is measured in each repeat (interleaved), so a shared machine's slow spells hit all
    sizes alike; `growth` is the median over repeats of the time per image relative to the first size's."""
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        net = DigitsCNN(10) if model == "digits_cnn" else torchvision.models.get_model(model, weights=None, num_classes=10)
        torch.save(net.state_dict(), tmp / "weights.pt")
        for n in sizes:
            root = write_image_folder(tmp / f"images{n}", n)
            folder = {"name": "imagefolder", "path": str(root), "split": "all", "batch_size": batch_size}
            workload = {"name": f"bench_data_{n}", "device": "auto",
                        "model": {"name": model, "num_classes": 10, "input_shape": [3, 32, 32],
                                  "weights": str(tmp / "weights.pt")},
                        "datasets": {"calibration": {**folder, "sample_limit": 256}, "exploration": folder},
                        "calibration": {"method": "max"}, "results": {"dir": str(tmp / "results")}}
            path = tmp / f"bench_data_{n}.yaml"
            path.write_text(yaml.safe_dump(workload))
            study = Study(path)
            qmodel = study.quantized_model
            for bits in range(2, 9):  # every layer at every bit width, as a search's first population does
                qmodel.set_uniform_bits(bits)
            spec = study.workload.dataset("exploration")
            workers = loader_workers(spec, build_dataset(spec), study.workload.loading.workers)
            start = time.perf_counter()
            batches = study.batches("exploration")
            decode = time.perf_counter() - start
            runs.append((n, study, batches, np.random.default_rng(0)))
            rows.append({"images": n, "decode_s": decode, "workers": workers, "held_mib": batches.nbytes / 2**20,
                         "stored": str(batches.batches[0][0].dtype).split(".")[-1], "device": str(study.device),
                         "model": model, "repeats": repeats, "batch_size": batch_size})

        def candidate(study: Study, rng) -> None:
            names = study.quantized_model.layer_names
            study.evaluate_bits({name: (int(b), int(b)) for name, b in zip(names, rng.integers(2, 9, len(names)))})

        def data_only(study: Study, batches) -> None:  # what an evaluation does with the data besides the model
            for x, y in batches:
                x.to(study.device, non_blocking=True), y.to(study.device, non_blocking=True)
            if study.device.type == "cuda":
                torch.cuda.synchronize(study.device)

        for _, study, batches, rng in runs:  # warm-up
            candidate(study, rng)
            data_only(study, batches)
        # (wall, CPU) seconds: this process's CPU time is what a busy shared machine disturbs least
        cand: list[list[tuple[float, float]]] = [[] for _ in runs]
        data: list[list[tuple[float, float]]] = [[] for _ in runs]
        for _ in range(repeats):
            for i, (_, study, batches, rng) in enumerate(runs):
                cand[i].append(_wall_and_cpu(lambda: candidate(study, rng)))
                data[i].append(_wall_and_cpu(lambda: data_only(study, batches)))
        for i, row in enumerate(rows):
            for k, clock in enumerate(("", "cpu_")):
                c_i, d_i, c_0 = ([t[k] for t in ts] for ts in (cand[i], data[i], cand[0]))
                row.update({f"{clock}candidate_s": statistics.median(c_i), f"{clock}data_s": statistics.median(d_i),
                            f"{clock}fraction": statistics.median(d / c for d, c in zip(d_i, c_i)),
                            f"{clock}growth": statistics.median((c / c0) / (row["images"] / rows[0]["images"])
                                                                for c, c0 in zip(c_i, c_0))})
        runs.clear()
    return rows


def _wall_and_cpu(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def print_data(rows: list[dict]) -> None:
    """The large-evaluation-set benchmark as a table."""
    r0 = rows[0]
    print(f"\nlarge evaluation sets: image folders of 32x32 PNGs, {r0['model']} on {r0['device']}, batches of "
          f"{r0['batch_size']}, {r0['repeats']} repeats (medians); decoded once per study, held as "
          f"{r0['stored']}; data = expanding to float32 + placing the batches")
    print(f"{'':>36}{'---------------- wall ----------------':>40}{'---------------- CPU -----------------':>40}")
    print(f"{'images':>7}{'decode s':>10}{'workers':>9}{'held MiB':>10}"
          + f"{'cand ms':>9}{'ms/1k img':>11}{'vs first':>10}{'data %':>10}" * 2)
    for r in rows:
        line = f"{r['images']:>7}{r['decode_s']:>10.2f}{r['workers']:>9}{r['held_mib']:>10.1f}"
        for clock in ("", "cpu_"):
            per_k = r[f"{clock}candidate_s"] * 1e3 / (r["images"] / 1000)
            line += (f"{r[f'{clock}candidate_s'] * 1e3:>9.0f}{per_k:>11.1f}{r[f'{clock}growth']:>9.2f}x"
                     f"{r[f'{clock}fraction'] * 100:>9.2f}%")
        print(line)
    print("vs first: time per image relative to the smallest set, median of each repeat's ratio (1.00 = linear "
          "growth); data %: the data part's share of a candidate, median of each repeat's ratio; goal: <= 10 %; "
          f"CPU: this process's CPU seconds (all its threads); load average {os.getloadavg()[0]:.1f}")

def bench_rounding(bit_widths: list[int], iterations: int, batches: int, batch_size: int, repeats: int) -> dict:
    """Learned rounding (AdaRound) on the digits CNN: the precompute per layer and weight bit width,
    then one candidate's evaluation with learned vs nearest rounding, each as a ratio to fp32."""
    torch.manual_seed(0)
    data = [torch.rand(batch_size, 3, 32, 32) for _ in range(batches)]
    model = DigitsCNN(10).eval()
    models = {}
    learned: list = []
    with tempfile.TemporaryDirectory() as folder:
        for method in ("nearest", "adaround"):
            qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(calib_method="max"))
            calibrate(qmodel, [(x, None) for x in data[:2]], "max")
            if method == "adaround":
                settings = RoundingSettings(method=method, iterations=iterations)
                store = RoundingStore(Path(folder) / "rounding", {"bench": True})
                learned = prepare_rounding(qmodel, [(x, None) for x in data[:2]], bit_widths, settings, store)
            qmodel.freeze_weights()
            for bits in bit_widths:
                qmodel.set_uniform_bits(bits)
            models[method] = qmodel.eval()
    rng = np.random.default_rng(0)
    names = models["nearest"].layer_names

    def candidate() -> dict:
        return {n: (int(b), 8) for n, b in zip(names, rng.choice(bit_widths, len(names)))}

    def run(q) -> None:
        with torch.no_grad():
            for x in data:
                q(x)

    def evaluate(q: QuantizedModel) -> None:
        q.set_layer_bits(candidate())
        run(q)

    for q in models.values():
        evaluate(q)
    times: dict[str, list[float]] = {"fp32": [], "nearest": [], "adaround": []}
    for _ in range(repeats):
        times["fp32"].append(_time(lambda: run(model), 1))
        for method, q in models.items():
            times[method].append(_time(lambda q=q: evaluate(q), 1))
    return {"learned": [(layer, bits, report.seconds, report.kept) for layer, bits, report in learned],
            "iterations": iterations, "candidate": f"{batches} batches of {batch_size}",
            **{f"{k}_s": statistics.median(v) for k, v in times.items()},
            **{f"ratio_{k}": statistics.median(a / b for a, b in zip(times[k], times["fp32"]))
               for k in ("nearest", "adaround")}}


def print_rounding(r: dict) -> None:
    print(f"\nlearned rounding (AdaRound, {r['iterations']} steps) on the digits CNN: precompute per layer and "
          "weight bit width, once per study (stored, resumable)")
    print(f"{'layer':<16}{'bits':>5}{'seconds':>9}  kept")
    for layer, bits, seconds, kept in r["learned"]:
        print(f"{layer:<16}{bits:>5}{seconds:>9.2f}  {kept}")
    total = sum(x[2] for x in r["learned"])
    print(f"total {total:.1f} s for {len(r['learned'])} (layer, bits); mean {total / max(1, len(r['learned'])):.2f} s each")
    print(f"one candidate ({r['candidate']}), median ratio to fp32: nearest {r['ratio_nearest']:.2f}x, learned "
          f"rounding {r['ratio_adaround']:.2f}x (learned codes are applied when the weights freeze: no per-candidate cost)")


if __name__ == "__main__":
    raise SystemExit(main())

