"""Dataset loaders: the `DATASETS` registry and `build_dataset` / `build_loader` for a workload spec.

Every dataset yields `(image, label)`: `image` a float32 tensor `3 x S x S` with values in
[0, 1] (S = `spec.image_size`), `label` an int. Nothing is normalised here: models that
want normalisation do it in their first layer, so corruptions always see plain images.

Registered datasets:

- `digits` (default, bundled with scikit-learn): 1797 real 8x8 handwritten digits,
  upscaled bilinearly to S x S and replicated to RGB. Splits are a fixed (seed 0, whatever
  `spec.seed` is), stratified 60/20/20 train/val/test partition; `all` is everything,
  null is `test`.
- `imagefolder`: `<path>/<class>/<image files>` (the ImageNet-val layout). Images are
  resized (shorter side to S) and center-cropped. `split` null or `all`: the whole folder;
  `train`/`val`/`test`: the same fixed, seeded, stratified 60/20/20 partition as digits
  (so phases never share an image); an empty part is an error.
- `cifar10`: a local copy in either official layout, the binary one (`data_batch_1.bin` ..
  `data_batch_5.bin`, `test_batch.bin`) or the Python one (`data_batch_1` .. `data_batch_5`,
  `test_batch`, pickled dicts). `path` may be the folder holding the batch files or its parent
  holding `cifar-10-batches-bin/` or `cifar-10-batches-py/`. `test` is the test batch; the
  data batches are split into `train` (the first 90 %) and `val` (the last 10 %: the last
  5000 images of the full dataset); `all` is data batches followed by the test batch.
  The pickles are read with an unpickler that only allows what numpy array reconstruction
  needs, so a malicious file raises `DataError` instead of running code.
- `imagenet_c`: `<path>/<corruption>/<severity>/<class>/<image files>` (the ImageNet-C
  layout); `spec.corruption` selects the subfolder and is never applied on the fly; `split`
  as for `imagefolder`.

Each entry also knows its number of classes (`DatasetEntry.classes(spec)`), so a workload
whose `model.num_classes` does not match its data is refused when it is loaded.

`build_dataset(spec)` applies the spec's corruption (except for `imagenet_c`, whose images
are already corrupted), then the sample limit. The corruption wraps the full dataset, so
an image's per-image corruption seed does not depend on `sample_limit` or `randomize`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset

from sw.core.errors import DataError
from sw.core.registry import Registry
from sw.core.schema import Config
from sw.data import cifar
from sw.data.corrupted_dataset import CorruptedDataset

SPLITS = ("train", "val", "test", "all")


def _unknown_classes(spec: Config) -> int | None:
    return None


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: `factory(spec)` returns the full dataset of `spec.split` at `spec.image_size`;
    `classes(spec)` its number of classes (None where it cannot be known without loading it);
    `decodes_files`: each item is decoded from an image file (DataLoader workers pay off)."""

    name: str
    needs_path: bool
    factory: Callable[[Config], Dataset]
    classes: Callable[[Config], int | None] = _unknown_classes
    decodes_files: bool = False


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def _register(name: str, needs_path: bool, classes: Callable[[Config], int | None] = _unknown_classes,
              decodes_files: bool = False) -> Callable[[Callable[[Config], Dataset]], Callable[[Config], Dataset]]:
    def add(factory: Callable[[Config], Dataset]) -> Callable[[Config], Dataset]:
        DATASETS.add(name, DatasetEntry(name, needs_path, factory, classes, decodes_files))
        return factory

    return add


class ImageTensors(Dataset):
    """Images held in memory (uint8 or float, 1 or 3 channels) served as float32 `3 x S x S` in [0, 1].

    Single-channel images are replicated to RGB per item and images of another size are
    resized per item, so the stored tensors stay as small as the source allows.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) != len(labels):
            raise ValueError(f"expected N x (1|3) x H x W images and N labels, got {tuple(images.shape)}, {len(labels)}")
        self.images = images
        self.labels = labels
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        image = image.to(torch.float32) / 255.0 if image.dtype == torch.uint8 else image.to(torch.float32)
        if image.shape[-2:] != (self.size, self.size):
            image = resize(image[None], self.size)[0]
        if image.shape[0] == 1:
            image = image.repeat(3, 1, 1)
        return image, int(self.labels[index])


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of N x C x H x W float images to size x size, kept in [0, 1]."""
    shrinking = min(images.shape[-2:]) > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrinking).clamp_(0.0, 1.0)


def _require_path(spec: Config) -> Path:
    if spec.get("path") is None:
        raise DataError(f"dataset '{spec.name}': 'path' is required (the folder holding the dataset)")
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (dataset '{spec.name}')")
    return path


# ---------------------------------------------------------------- splits

SPLIT_SEED = 0  # fixed, whatever `spec.seed` is: every phase cuts the same partition
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test


def stratified_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of a split: per class, a seeded shuffle cut 60/20/20 into train/val/test."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}, expected one of {', '.join(SPLITS)}")
    labels = np.asarray(labels)
    if split == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = round(len(members) * SPLIT_FRACTIONS[0])
        n_val = round(len(members) * SPLIT_FRACTIONS[1])
        part = {"train": members[:n_train], "val": members[n_train:n_train + n_val],
                "test": members[n_train + n_val:]}[split]
        chosen.append(part)
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


# ---------------------------------------------------------------- digits

DIGITS_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: scikit-learn's import (1 s) only for this dataset

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted indices of a digits split: per class, a seeded shuffle cut 60/20/20."""
    if split not in SPLITS:
        raise DataError(f"dataset 'digits': unknown split {split!r}, expected one of {', '.join(SPLITS)}")
    return stratified_split(_digits_raw()[1], split)


@functools.lru_cache(maxsize=8)
def _digits_tensors(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's digits as N x 1 x size x size floats in [0, 1] (cached: several phases share them)."""
    images, labels = _digits_raw()
    index = digits_split_indices(split)
    small = torch.from_numpy(images[index])[:, None]
    return resize(small, size), torch.from_numpy(labels[index])


@_register("digits", needs_path=False, classes=lambda spec: DIGITS_CLASSES)
def digits(spec: Config) -> Dataset:
    images, labels = _digits_tensors(spec.split or "test", spec.image_size)
    return ImageTensors(images, labels, spec.image_size)


# ---------------------------------------------------------------- image folders


def _load_rgb(path: str) -> Any:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def image_folder(root: Path, size: int, what: str = "imagefolder") -> Dataset:
    """`<root>/<class>/<images>` resized (shorter side) and center-cropped to size x size."""
    from torchvision import transforms  # lazy: torchvision's import (1.5 s) only for image folders
    from torchvision.datasets import ImageFolder  # lazy: as above

    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of class subfolders <class>/<image files> ({what})")
    if not any(entry.is_dir() for entry in root.iterdir()):
        raise DataError(f"{root}: expected class subfolders <class>/<image files> ({what}), found none")
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    try:
        dataset = ImageFolder(str(root), transform=transform, loader=_load_rgb, allow_empty=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"{root}: cannot read the image folder ({exc})") from None
    if len(dataset) == 0:
        raise DataError(f"{root}: expected image files in the class subfolders <class>/<image files> ({what}), "
                        f"found none")
    return dataset


def split_folder(dataset: Any, split: str | None, root: Path) -> Any:
    """Keep the images of one seeded stratified split of an ImageFolder (null or `all`: all of them).

    The folder dataset itself is narrowed (not wrapped), so indices into the result are
    indices of the split, as for every other dataset.
    """
    if split in (None, "all"):
        return dataset
    keep = stratified_split(dataset.targets, split)
    if len(keep) == 0:
        raise DataError(f"{root}: split '{split}' is empty: the folder's {len(dataset)} images are too few for a "
                        f"60/20/20 train/val/test partition per class (use split: all)")
    dataset.samples = [dataset.samples[i] for i in keep]
    dataset.imgs = dataset.samples
    dataset.targets = [dataset.targets[i] for i in keep]
    return dataset


def _count_class_folders(folder: Path) -> int | None:
    """Class subfolders of an image folder (ImageFolder's labels), None if it is not a folder (yet)."""
    if not folder.is_dir():
        return None
    return sum(1 for entry in os.scandir(folder) if entry.is_dir())


def _folder_classes(spec: Config) -> int | None:
    return _count_class_folders(Path(spec.path)) if spec.get("path") else None


def _imagenet_c_classes(spec: Config) -> int | None:
    folder = _imagenet_c_folder(spec)
    return _count_class_folders(folder) if folder else None


def _imagenet_c_folder(spec: Config) -> Path | None:
    corruption = spec.get("corruption")
    if spec.get("path") is None or not corruption or None in (corruption.get("condition"), corruption.get("severity")):
        return None
    return Path(spec.path) / str(corruption["condition"]) / str(corruption["severity"])


@_register("imagefolder", needs_path=True, classes=_folder_classes, decodes_files=True)
def imagefolder(spec: Config) -> Dataset:
    """The folder, or one seeded split of it (`spec.split`)."""
    root = _require_path(spec)
    return split_folder(image_folder(root, spec.image_size), spec.split, root)


@_register("imagenet_c", needs_path=True, classes=_imagenet_c_classes, decodes_files=True)
def imagenet_c(spec: Config) -> Dataset:
    """The `<path>/<corruption.condition>/<corruption.severity>` folder of an ImageNet-C tree."""
    root = _require_path(spec)
    folder = _imagenet_c_folder(spec)
    if folder is None:
        raise DataError(f"dataset 'imagenet_c' ({root}): key 'corruption' with 'condition' and 'severity' is "
                        f"required to choose the subfolder <path>/<condition>/<severity>")
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"{folder}: no such folder; expected the ImageNet-C layout "
                        f"<path>/<corruption>/<severity>/<class>/<images> (corruptions found: "
                        f"{', '.join(found) or 'none'})")
    return split_folder(image_folder(folder, spec.image_size, what="imagenet_c"), spec.split, folder)


@_register("cifar10", needs_path=True, classes=lambda spec: cifar.CIFAR_CLASSES)
def cifar10(spec: Config) -> Dataset:
    split = spec.split or "test"
    if split not in SPLITS:
        raise DataError(f"dataset 'cifar10': unknown split {split!r}, expected one of {', '.join(SPLITS)}")
    images, labels = cifar.load_split(_require_path(spec), split)
    return ImageTensors(images, labels, spec.image_size)


# ---------------------------------------------------------------- building


def build_dataset(spec: Config, *, cache_dir: Path | str | None = None) -> Dataset:
    """The dataset a workload spec describes: split, size, corruption, then sample limit.

    `cache_dir` keeps corrupted images on disk (keyed by content hash), so repeated runs and
    worker processes corrupt each image once.
    """
    entry = DATASETS.get(spec.name)
    dataset = entry.factory(spec)
    corruption = spec.get("corruption")
    if corruption and spec.name != "imagenet_c":
        dataset = CorruptedDataset(dataset, corruption["condition"], corruption["severity"],
                                   corruption.get("seed", 0), cache_dir=cache_dir)
    limit = spec.get("sample_limit")
    if limit is not None and limit < len(dataset):
        if spec.get("randomize"):
            generator = torch.Generator().manual_seed(spec.get("seed", 0))
            indices = torch.randperm(len(dataset), generator=generator)[:limit].sort().values.tolist()
        else:
            indices = list(range(limit))
        dataset = Subset(dataset, indices)
    return dataset


AUTO_WORKERS_FROM = 1000  # images of a file-decoding dataset from which `workers: null` starts processes
AUTO_WORKERS_MAX = 4


def loader_workers(spec: Config, dataset: Dataset, workers: int | None) -> int:
    """DataLoader processes for `dataset`: `workers` as given, or (null) up to 4, one per core, for a
    file-decoding dataset of >= 1000 images (decoding dominates there), else 0. Always 0 inside a
    daemon process (a dask worker), which may not start children."""
    if multiprocessing.current_process().daemon:
        return 0
    if workers is not None:
        return workers
    if DATASETS.get(spec.name).decodes_files and len(dataset) >= AUTO_WORKERS_FROM:
        return min(AUTO_WORKERS_MAX, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return 0


def build_loader(spec: Config, *, shuffle: bool = False, cache_dir: Path | str | None = None,
                 workers: int | None = 0) -> DataLoader:
    """A DataLoader over `build_dataset(spec)`; shuffling is seeded with `spec.seed`; `workers`
    decoding processes (None: `loader_workers`' choice)."""
    generator = torch.Generator().manual_seed(spec.get("seed", 0)) if shuffle else None
    dataset = build_dataset(spec, cache_dir=cache_dir)
    return DataLoader(dataset, batch_size=spec.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=loader_workers(spec, dataset, workers))
