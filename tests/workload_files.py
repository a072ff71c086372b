"""The tiny test workload (`TINY`: a digits CNN, small search) and writing workload files from it.

Plain helpers, importable from any test (`pythonpath` includes tests/): the fixtures in
tests/conftest.py and the module-scoped study fixtures of single test files build on them."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

TINY = {
    "name": "tiny",
    "problem": "quantization_problem",
    "model": {"name": "digits_cnn", "num_classes": 10, "input_shape": [3, 32, 32], "weights": None,
              "train": {"epochs": 4, "lr": 0.05, "batch_size": 64, "seed": 0}},
    "accuracy": {"metrics": ["top1"]},
    "datasets": {
        "retraining": {"name": "digits", "split": "train", "batch_size": 64},
        "calibration": {"name": "digits", "split": "train", "sample_limit": 128, "batch_size": 128},
        "exploration": {"name": "digits", "split": "val", "sample_limit": 120, "batch_size": 120},
        "reevaluation": {"name": "digits", "split": "test", "sample_limit": 120, "batch_size": 120},
    },
    "calibration": {"method": "max"},
    "search": {"pop_size": 6, "generations": 3, "seed": 3, "bits": {"lower": 2, "upper": 6},
               "minimum_accuracy": 0.5},
    "results": {"dir": "results"},
}


def deep_update(base: dict, changes: dict) -> dict:
    """A copy of `base` with `changes` merged in, nested dicts key by key (other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def write_tiny_workload(folder: Path, changes: dict | None = None, name: str = "tiny.yaml") -> Path:
    """`folder/name`: TINY with its results in `folder/results`, then `changes` merged in."""
    data = deep_update(TINY, {"results": {"dir": str(folder / "results")}})
    path = folder / name
    path.write_text(yaml.safe_dump(deep_update(data, changes or {})))
    return path
