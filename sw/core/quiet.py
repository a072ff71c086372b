"""Quiet by default: library deprecation chatter is not for users (unless --verbose)."""

from __future__ import annotations

import warnings
from typing import Sequence


def silence_library_warnings(argv: Sequence[str]) -> None:
    """Ignore the libraries' FutureWarning/DeprecationWarning (torch.jit in pytorch-quantization,
    ...) and torchvision's UserWarnings unless `--verbose`/`-v` is among `argv`. Call it before
    importing torch: some of them are raised at import time."""
    if {"--verbose", "-v"} & set(argv):
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
