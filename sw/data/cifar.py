"""The CIFAR-10 reader: both official layouts (binary records and Python pickles).

CIFAR-10's Python batches are pickles, and a pickle can run arbitrary code while it loads: they
are read with `SafeUnpickler`, which allows only what numpy array reconstruction needs, so a
malicious file raises `DataError` instead of running code. Decoded splits are cached in memory
and invalidated when the batch files change.
"""

from __future__ import annotations

import codecs
import functools
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sw.core.errors import DataError

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric  # type: ignore[no-redef]

CIFAR_SIDE = 32
CIFAR_RECORD = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # label byte + 3 colour planes
CIFAR_CLASSES = 10
CIFAR_DATA_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_VAL_FRACTION = 0.1  # the last 5000 of the 50000 training images


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array refers to, under both numpy 1 and numpy 2 module names."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode, ("codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # pickle protocol 5
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global raises `DataError`.

    CIFAR-10's Python batches are pickles, and a pickle can run arbitrary code through
    the globals it names. Every global goes through `find_class`, so refusing all but the
    numpy reconstruction functions makes loading an untrusted file safe.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>"):
        # latin1: the official batches were written by Python 2, whose str holds numpy's raw bytes.
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(f"{self.source}: refusing to unpickle '{module}.{name}' "
                            f"(only numpy arrays are allowed in a CIFAR-10 batch)") from None


def _cifar_folder(root: Path) -> tuple[Path, str]:
    """(folder holding the batch files, 'bin' or 'py')."""
    for folder in (root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"):
        if not folder.is_dir():
            continue
        if any((folder / f"{name}.bin").is_file() for name in (*CIFAR_DATA_BATCHES, CIFAR_TEST_BATCH)):
            return folder, "bin"
        if any((folder / name).is_file() for name in (*CIFAR_DATA_BATCHES, CIFAR_TEST_BATCH)):
            return folder, "py"
    raise DataError(f"{root}: expected a CIFAR-10 folder with data_batch_1.bin .. data_batch_5.bin and "
                    f"test_batch.bin (binary layout) or data_batch_1 .. data_batch_5 and test_batch "
                    f"(python layout)")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR_CLASSES):
        raise DataError(f"{path}: expected CIFAR-10 labels in 0..9, got {int(labels.min())}..{int(labels.max())}")


def read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch -> (uint8 N x 3 x 32 x 32, int64 N labels)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CIFAR-10 batch ({exc})") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"{path}: expected CIFAR-10 binary records of {CIFAR_RECORD} bytes "
                        f"(1 label byte + 3072 pixel bytes), got a file of {raw.size} bytes")
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, path)
    return records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels


def read_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch (a dict with b'data' N x 3072 uint8 and b'labels') -> images, labels."""
    try:
        with open(path, "rb") as handle:
            batch = SafeUnpickler(handle, source=str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # a malformed pickle can raise nearly anything while decoding
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict with 'data' and 'labels', got {type(batch).__name__}")

    def field(name: str) -> Any:
        for key in (name.encode(), name):
            if key in batch:
                return batch[key]
        raise DataError(f"{path}: expected a CIFAR-10 batch dict with key '{name}', found keys "
                        f"{sorted(map(str, batch))}")

    data, labels = field("data"), field("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_RECORD - 1:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' as an N x 3072 uint8 array, got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected 'labels' as a list of integers") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    _check_labels(labels, path)
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels


def _read_cifar_batches(folder: Path, layout: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    reader, suffix = (read_cifar_binary, ".bin") if layout == "bin" else (read_cifar_python, "")
    parts = []
    for name in names:
        path = folder / f"{name}{suffix}"
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR-10 batch file (expected {', '.join(n + suffix for n in names)} "
                            f"in {folder})")
        parts.append(reader(path))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@functools.lru_cache(maxsize=4)
def _cifar_arrays(folder: str, layout: str, split: str, stamp: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded uint8 images and labels of a split (cached; `stamp` invalidates on changed files)."""
    root = Path(folder)
    if split == "test":
        images, labels = _read_cifar_batches(root, layout, (CIFAR_TEST_BATCH,))
    else:
        names = CIFAR_DATA_BATCHES + ((CIFAR_TEST_BATCH,) if split == "all" else ())
        images, labels = _read_cifar_batches(root, layout, names)
        if split in ("train", "val"):
            n_train = len(images) - round(len(images) * CIFAR_VAL_FRACTION)
            part = slice(0, n_train) if split == "train" else slice(n_train, None)
            images, labels = images[part], labels[part]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(labels))


def _files_stamp(folder: Path) -> tuple:
    entries = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.startswith(("data_batch_", "test_batch")):
            info = entry.stat()
            entries.append((entry.name, info.st_size, info.st_mtime_ns))
    return tuple(entries)


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 3 x 32 x 32 images and int64 labels of a split ('train', 'val', 'test', 'all') of
    the CIFAR-10 copy at `root` (the batch folder or its parent)."""
    folder, layout = _cifar_folder(root)
    return _cifar_arrays(str(folder.resolve()), layout, split, _files_stamp(folder))
