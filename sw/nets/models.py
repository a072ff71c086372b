"""Model construction: registered custom models (digits_cnn; the MLPerf Tiny set: resnet8, resnet20,
mobilenet_v1_025, ds_cnn), torchvision models by name, opted-in custom code.

`build_architecture` gives the untrained fp32 network (enough for shape tracing);
`build_model` gives it with weights: a user's state_dict file (loaded with
`weights_only=True`), or the project's own deterministically trained and cached checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from sw.core.errors import DataError
from sw.core.registry import Registry
from sw.nets.mlperf_tiny import DSCNN, MobileNetV1, ResNet8, ResNet20
from sw.nets.training import cached_checkpoint, train_and_cache

ModelFactory = Callable[[int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


@MODELS.register("digits_cnn")
class DigitsCNN(nn.Module):
    """A small CNN for 3 x 32 x 32 inputs: three conv blocks and a classifier (~25k parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(3, 16), nn.MaxPool2d(2),
            block(16, 32), nn.MaxPool2d(2),
            block(32, 64), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


MODELS.add("resnet8", ResNet8)
MODELS.add("resnet20", ResNet20)
MODELS.add("mobilenet_v1_025", MobileNetV1)
MODELS.add("ds_cnn", DSCNN)


def is_torchvision_model(name: str) -> bool:
    import torchvision.models as tvm  # lazy: torchvision's import (1.5 s) only for its models

    return name in tvm.list_models(module=tvm)


def build_architecture(workload) -> nn.Module:
    """The workload's network with freshly initialised weights (seeded, so deterministic)."""
    cfg = workload.model
    torch.manual_seed(cfg.train.seed)
    if cfg.name in MODELS:
        return MODELS.get(cfg.name)(cfg.num_classes)
    if is_torchvision_model(cfg.name):
        import torchvision.models as tvm  # lazy: as above

        # weights=None: never download; the project trains or loads its own weights.
        return tvm.get_model(cfg.name, weights=None, num_classes=cfg.num_classes)
    factory = MODELS.get(cfg.name, file=workload.path, key="model.name",
                         trust_custom_code=workload.trust_custom_code)
    return factory(cfg.num_classes)


def load_state_dict_file(model: nn.Module, path: Path) -> nn.Module:
    """Load a state_dict safely (`weights_only=True`); one clear error on any problem."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, not a torch file, or contains pickled code
        raise DataError(f"{path}: expected a PyTorch state_dict file loadable with weights_only=True ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{path}: weights do not match the model architecture ({first})") from None
    return model


def build_model(workload, *, progress: bool = False) -> nn.Module:
    """The fp32 model in eval mode, with weights from `model.weights` or the trained cache."""
    model = build_architecture(workload)
    if workload.model.weights:
        load_state_dict_file(model, Path(workload.model.weights))
    else:
        path = cached_checkpoint(workload)
        if not path.exists():
            train_and_cache(workload, model, progress=progress)
        load_state_dict_file(model, path)
    return model.eval()
