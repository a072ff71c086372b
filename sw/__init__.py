"""sw: mixed-precision quantization exploration (calibration, NSGA-II search, QAT, robustness)."""

__version__ = "0.1.0"
