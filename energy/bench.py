"""Benchmark (not a test): build the resnet18 (10 classes, 32x32) energy table cold, then warm.

Prints wall time, mapping searches (engine calls) against the naive layers x bit widths count,
and the per-candidate lookup time of the search's cost function. Run: `python -m energy bench`.
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

import numpy as np


def main(workers: int = 2, lower: int = 2, upper: int = 8, mode: str = "tied", cache: str | None = None,
         image_size: int = 32) -> int:
    import torchvision

    from energy.layers import trace_layers
    from energy.table import TableSpec, build_from_layers

    layers = trace_layers(torchvision.models.resnet18(num_classes=10), [3, image_size, image_size])
    spec = TableSpec(bits=tuple(range(lower, upper + 1)), mode=mode, baseline_bits=upper, workers=workers)
    pairs = len(spec.input_pairs())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(cache) if cache else Path(tmp) / "bench_cache.sqlite"
        print(f"resnet18 {image_size}x{image_size}: {len(layers)} layers, bits {lower}..{upper} ({mode}), "
              f"{workers} workers, cache {path}")
        table, cold = build_from_layers(layers, spec, path, progress=True)
        _, warm = build_from_layers(layers, spec, path)
    naive = len(layers) * pairs * len(spec.bits)
    print(f"{'':28}{'wall s':>10}{'searches':>10}{'hits':>8}")
    print(f"{'cold build':28}{cold.seconds:>10.1f}{cold.misses:>10}{cold.hits:>8}")
    print(f"{'warm build (cache only)':28}{warm.seconds:>10.1f}{warm.misses:>10}{warm.hits:>8}")
    print(f"engine searches {cold.misses} vs layers x (W,I) pairs x output widths = {naive} "
          f"({cold.geometries} distinct geometries; output widths re-evaluated on the searched mapping)")
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
