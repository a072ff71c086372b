"""Skipping a test that needs the fused fake-quant kernel where it cannot be built here."""

from __future__ import annotations

import pytest

from sw.quant import fused_quant


def require_fused_kernel() -> None:
    """Skip, naming why, where the fused fake-quant kernel (`sw.quant.fused_quant`) cannot be built."""
    reason = fused_quant.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the fused kernel did not build here: {reason}")
