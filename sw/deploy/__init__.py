"""From the searched fake-quant model to deployable forms, proven to compute the same numbers.

    QuantizedModel --lowering--> DeployGraph --+--> IntegerModel (integer_model.py): int codes,
                                               |      int32 accumulators, fixed-point requantization
                                               +--> QDQ ONNX (onnx_export.py), run in onnxruntime
    verification.py: each against the fake-quant model, per tensor and in accuracy

`lowering.lower(qmodel)` reads the model's torch.fx graph (traced in module mode) into a
small list of operations with every quantizer's integer parameters (`sw.quant.presets.QuantParams`):
the one description both back ends are built from.
"""
