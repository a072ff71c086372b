"""Limits and method names that several layers need (the schema, the quantizers, the commands)."""

from __future__ import annotations

MIN_BITS = 2  # signed integers need two bits (1-bit signed fake quant is 0/0)
MAX_BITS = 16
MAX_SEED = 2**32 - 1  # numpy's global seed (pymoo, corruptions) takes 0 .. 2^32 - 1
CALIBRATION_METHODS = ("max", "percentile", "entropy", "mse", "aciq")
HISTOGRAM_METHODS = ("percentile", "entropy", "mse")
ROUNDINGS = ("nearest", "adaround")  # weight rounding of a calibration (sw.model.reconstruction)
