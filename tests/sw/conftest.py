"""Fixtures shared by the tests of `sw` (tests/conftest.py has those of every test)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def two_threads():
    """torch (and so the fused kernel) on 2 threads, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
