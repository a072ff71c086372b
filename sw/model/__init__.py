"""Model-level quantization: fx preparation, BN folding, the inference graph, QuantizedModel, calibration, checkpoints, layer sizes."""
