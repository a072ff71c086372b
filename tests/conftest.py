"""Shared fixtures: small workloads written to temporary folders, a quickly trained digits CNN."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

try:
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover
    pass

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


def require_fused_kernel() -> None:
    """Skip, naming why, where the fused fake-quant kernel (`sw.quant.fused_quant`) cannot be built."""
    from sw.quant import fused_quant

    reason = fused_quant.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the fused kernel did not build here: {reason}")


def deep_update(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory) -> Path:
    """One results folder per test session: the trained tiny CNN checkpoint is cached there."""
    return tmp_path_factory.mktemp("shared_results")


@pytest.fixture
def write_workload(tmp_path, shared_results):
    """write_workload(changes=None, name="w.yaml", raw=None) -> Path of a workload YAML."""

    def write(changes: dict | None = None, name: str = "w.yaml", raw: str | None = None) -> Path:
        path = tmp_path / name
        if raw is not None:
            path.write_text(raw)
            return path
        data = deep_update(TINY, {"results": {"dir": str(shared_results)}})
        data = deep_update(data, changes or {})
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="module")
def tiny_workload(tmp_path_factory) -> Path:
    """The tiny workload with its own results folder, one per test module (trains its CNN there once)."""
    root = tmp_path_factory.mktemp("tiny")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(deep_update(TINY, {"results": {"dir": str(root / "results")}})))
    return path
