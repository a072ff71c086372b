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
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import pickle
import statistics
import time
import warnings

import absl.logging
import cloudpickle

# torch.jit deprecation chatter from pytorch-quantization's import is not a benchmark result
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import numpy as np
import torch
import torchvision

from sw.model.calibration import METHODS, Recipe, calibrate
from sw.model.quantized_model import ActivationQuantizer, QuantizedModel, QuantSettings
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
    parser.add_argument("--only", choices=("models", "runners", "calibration"), help="run one part only")
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


if __name__ == "__main__":
    raise SystemExit(main())
