"""The model registry (built-in and torchvision networks) and fp32 / quantization-aware training."""
