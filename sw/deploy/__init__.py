"""From the searched fake-quant model to deployable forms (integer model, QDQ ONNX), proven to compute the same numbers."""
