"""Quantizer-level numerics: the pytorch-quantization adapter, presets, clipping/ACIQ/histograms, bit allocation, bias correction, the fused kernel, LSQ."""
