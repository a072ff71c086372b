"""The compute device of a study: `device: auto | cpu | cuda | cuda:N` in the workload.

`resolve_device` is the one place a device name becomes a `torch.device`: every model, batch and
training loop of a study goes where it says (`sw.study.study.Study.device`). `auto` takes the
current CUDA device when torch sees one, else the CPU. Asking for CUDA where there is none is a
user error (one line), not a traceback from deep inside torch.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import torch

from sw.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def valid_device_name(name: Any) -> bool:
    """Whether `name` is one of auto, cpu, cuda, cuda:N (syntax only; availability is checked on use)."""
    return isinstance(name, str) and _NAME.match(name) is not None


def resolve_device(name: str, *, where: Any = "workload") -> torch.device:
    """The torch device `name` asks for; `where` (a workload file) prefixes the error.

    auto: the current CUDA device if torch sees one, else cpu. cuda / cuda:N: that device, or a
    `UserError` when CUDA is absent or has fewer devices."""
    if not valid_device_name(name):
        raise UserError(f"{where}: device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    if not available:
        raise UserError(f"{where}: device: {name} requested but no CUDA device is available "
                        f"(torch {torch.__version__} sees none); use device: cpu or auto")
    index = torch.cuda.current_device() if name == "cuda" else int(name.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"{where}: device: {name} requested but only {count} CUDA device(s) are available "
                        f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters (else buffers) live; cpu for a module with neither."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
