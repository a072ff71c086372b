"""`python -m sw.bench` (`nox -s bench`): cost of evaluating one candidate, fake quant vs fp32.

Measured side by side in one run, interleaved and repeated, reported as ratios:
- fp32: the plain model;
- fake quant, weights once: the search's path (bits set, weights fake-quantized once per
  candidate, inputs quantized on every forward);
- fake quant, weights every forward: pytorch-quantization's default behaviour.

and the calibration time of each method (collecting statistics, then amax at every bit width
2..8 as a search needs it), as a ratio to max calibration, with pytorch-quantization's own
entropy search on one histogram for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

# torch.jit deprecation chatter from pytorch-quantization's import is not a benchmark result
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import numpy as np
import torch
import torchvision

from sw.calibration import METHODS, Recipe, calibrate
from sw.models import DigitsCNN
from sw.quantized_model import QuantizedModel, QuantSettings


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

    def candidate() -> dict:
        return dict(zip(qmodel.layer_names, [(int(b), int(b)) for b in rng.integers(2, 9, n)]))

    def fp32() -> None:
        for x in data:
            model(x)

    def quantized() -> None:
        qmodel.set_layer_bits(candidate())  # frozen: re-quantizes the weights here, once
        for x in data:
            qmodel(x)

    for fn in (fp32, quantized):  # warm-up
        fn()
    times = {"fp32": [], "once": [], "every": []}
    for _ in range(repeats):  # interleaved so drifts in machine load hit all three alike
        times["fp32"].append(_time(fp32, 1))
        qmodel.freeze_weights()
        times["once"].append(_time(quantized, 1))
        qmodel.unfreeze_weights()
        times["every"].append(_time(quantized, 1))
    t = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "fp32_s": t["fp32"], "once_s": t["once"], "every_s": t["every"],
            "ratio_once": t["once"] / t["fp32"], "ratio_every": t["every"] / t["fp32"]}


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
    from pytorch_quantization.calib.histogram import _compute_amax_entropy

    from sw.clipping import Histogram, entropy_amax

    x = np.maximum(np.random.default_rng(0).normal(size=100_000), 0.0)
    counts, edges = np.histogram(x, bins=bins, range=(0.0, float(x.max())))
    hist = Histogram(counts.astype(np.float64), edges)
    library = _time(lambda: _compute_amax_entropy(counts.copy(), edges, 8, True, 1, hist.start_bin), 1)
    ours = _time(lambda: entropy_amax(hist, 8, True), 5)
    return library, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8, help="batches per candidate evaluation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calib-batches", type=int, default=4, help="batches for the calibration benchmark")
    args = parser.parse_args(argv)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [
        bench_model("resnet18", torchvision.models.resnet18(weights=None, num_classes=10), args.batches,
                    args.batch_size, args.repeats),
        bench_model("digits_cnn", DigitsCNN(10), args.batches, args.batch_size, args.repeats),
    ]
    print(f"one candidate = {args.batches} batches of {args.batch_size} x 3x32x32, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':<12}{'fp32 ms':>10}{'fq once ms':>12}{'ratio':>8}{'fq every ms':>13}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<12}{r['fp32_s'] * 1e3:>10.1f}{r['once_s'] * 1e3:>12.1f}{r['ratio_once']:>7.2f}x"
              f"{r['every_s'] * 1e3:>13.1f}{r['ratio_every']:>7.2f}x")
    print("target: resnet18 fake quant (weights once) <= 1.30x fp32")

    calibration = bench_calibration(torchvision.models.mobilenet_v2(weights=None, num_classes=10),
                                    args.calib_batches, args.batch_size)
    print(f"\ncalibration of mobilenet_v2 ({args.calib_batches} batches of {args.batch_size}) + amax at bits 2..8")
    print(f"{'method':<12}{'seconds':>10}{'ratio to max':>14}")
    for method, seconds in calibration.items():
        print(f"{method:<12}{seconds:>10.2f}{seconds / calibration['max']:>13.2f}x")
    library, ours = bench_entropy_search()
    print(f"entropy amax of one 2048-bin histogram (8 bits): pytorch-quantization {library * 1e3:.0f} ms, "
          f"vectorised {ours * 1e3:.1f} ms ({library / ours:.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
