"""Benchmark (not a test): build the resnet18 (10 classes, 32x32) energy table cold, then warm.

Prints wall time, mapping searches (engine calls) against the naive layers x bit widths count,
and the per-candidate lookup time of the search's cost function. `--compare N` first runs N of
the table's mapping searches (evenly spread over layers and bit pairs; -1: all of them) with
ZigZag's stock pipeline and with this project's energy-first search, interleaved in the same
worker processes so both see the same machine load, and checks every result is identical.
Run: `python -m energy bench`.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import timeit
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torchvision

from energy.build import build_from_layers
from energy.pool import quiet_zigzag, time_both_pipelines
from energy.table import TableSpec
from energy.trace import trace_layers


def side_by_side(engine, layers, spec, count: int, workers: int) -> tuple[float, float, int, int]:
    """Time `count` searches with both pipelines: (stock seconds, fast seconds, identical, compared)."""
    distinct = {g.key(): g for g in layers.values()}
    tasks = [(engine, g, wb, ib, max(spec.bits)) for g in distinct.values() for wb, ib in spec.input_pairs()]
    if 0 < count < len(tasks):
        tasks = [tasks[int(k)] for k in np.linspace(0, len(tasks) - 1, count)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=quiet_zigzag) as pool:
        results = list(pool.map(time_both_pipelines, tasks))
    stock = sum(r[0] for r in results)
    fast = sum(r[1] for r in results)
    return stock, fast, sum(r[2] for r in results), len(results)


def main(workers: int = 2, lower: int = 2, upper: int = 8, mode: str = "separate", cache: str | None = None,
         image_size: int = 32, compare: int = 0, accelerator: str = "eyeriss_like") -> int:
    layers = trace_layers(torchvision.models.resnet18(num_classes=10), [3, image_size, image_size])
    spec = TableSpec(accelerator=accelerator, bits=tuple(range(lower, upper + 1)), mode=mode, baseline_bits=upper,
                     workers=workers)
    engine = spec.make_engine()
    engine.check()
    pairs = len(spec.input_pairs())
    print(f"resnet18 {image_size}x{image_size} on {accelerator}: {len(layers)} layers, bits {lower}..{upper} ({mode}), "
          f"{workers} workers")
    if compare:
        stock, fast, same, n = side_by_side(engine, layers, spec, compare, workers)
        print(f"side by side, {n} mapping searches in the same {workers} processes: ZigZag stock pipeline "
              f"{stock:.1f} s, energy-first search {fast:.1f} s (x{stock / fast:.2f}); identical results: {same}/{n}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(cache) if cache else Path(tmp) / "bench_cache.sqlite"
        table, cold = build_from_layers(layers, spec, path, progress=True, engine=engine)
        _, warm = build_from_layers(layers, spec, path, engine=engine)
    naive = len(layers) * pairs * len(spec.bits)
    print(f"{'':28}{'wall s':>10}{'searches':>10}{'hits':>8}")
    print(f"{'cold build':28}{cold.seconds:>10.1f}{cold.misses:>10}{cold.hits:>8}")
    print(f"{'warm build (cache only)':28}{warm.seconds:>10.1f}{warm.misses:>10}{warm.hits:>8}")
    print(f"engine searches {cold.misses} vs layers x (W,I) pairs x output widths = {naive} "
          f"({cold.geometries} distinct geometries; output widths re-evaluated on the searched mapping)")
    if compare:
        print(f"stock pipeline estimate for the cold build: {cold.seconds * stock / fast:.0f} s "
              f"(cold build x the side-by-side ratio)")
    rng = np.random.default_rng(0)
    configs = []
    for _ in range(200):
        b = rng.integers(lower, upper + 1, size=(len(layers), 2))
        if mode == "tied":
            b[:, 1] = b[:, 0]
        configs.append({n: (int(w), int(i)) for n, (w, i) in zip(table.layer_names, b)})
    it = iter(configs * 50)
    per_call = timeit.timeit(lambda: table.lookup(next(it), "dram_energy_uj"), number=5000) / 5000
    print(f"lookup (dram_energy_uj, {len(layers)} layers): {per_call * 1e3:.3f} ms per candidate")
    print(f"all-{upper}-bit DRAM energy {table.lookup(table.uniform(upper), 'dram_energy_uj'):.2f} uJ, "
          f"all-{lower}-bit {table.lookup(table.uniform(lower), 'dram_energy_uj'):.2f} uJ")
    return 0
