"""Shared fixtures: small workloads written to temporary folders, a quickly trained digits CNN.

Plain helpers live in modules next to this file (importable from any test, `pythonpath`
includes tests/): workload_files (TINY, deep_update), fused_kernel, tiny_graph_net,
quant_reference, tiny_quantized. Tests never import from conftest itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workload_files import deep_update, write_tiny_workload

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

try:
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory) -> Path:
    """One results folder per test session: the trained tiny CNN checkpoint is cached there."""
    return tmp_path_factory.mktemp("shared_results")


@pytest.fixture
def write_workload(tmp_path, shared_results):
    """write_workload(changes=None, name="w.yaml", raw=None) -> Path of a workload YAML in the test's
    folder: TINY with its results in the session's shared folder, then `changes`; or `raw` as is."""

    def write(changes: dict | None = None, name: str = "w.yaml", raw: str | None = None) -> Path:
        if raw is not None:
            (tmp_path / name).write_text(raw)
            return tmp_path / name
        return write_tiny_workload(tmp_path, deep_update({"results": {"dir": str(shared_results)}}, changes or {}), name)

    return write


@pytest.fixture(scope="module")
def tiny_workload(tmp_path_factory) -> Path:
    """The tiny workload with its own results folder, one per test module (trains its CNN there once)."""
    return write_tiny_workload(tmp_path_factory.mktemp("tiny"))
