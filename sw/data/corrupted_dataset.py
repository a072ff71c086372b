"""A dataset seen through a weather condition, corrupted on the fly and cached on disk.

`CorruptedDataset(base, condition, severity, seed, cache_dir)` wraps any dataset whose
items are `(float32 tensor 3 x S x S in [0, 1], label)`. Each image is converted to
`uint8 H x W x 3` (rounded, so an image that was not on the 1/255 grid is quantized to
it), corrupted with `sw.data.corruptions.corrupt` using a per-image seed derived from
(`seed`, index), and converted back to float in [0, 1].

Cache: one `.npy` file per image holding the corrupted `uint8` image (lossless: the
corruption's output is uint8). The file name carries condition, severity, seed, index
and a fingerprint of the base item's pixels, so a changed base dataset never returns
stale data. Files are written atomically (temporary file + rename), read with
`allow_pickle=False`, and an unreadable file is recomputed rather than trusted.

`materialize(executor=pool, indices=...)` corrupts the whole dataset (or a subset, each
image keeping the seed of its index) at once in a process pool and returns it as an
in-memory `TensorDataset`: the weather sweep uses it to corrupt each (condition, severity)
once and evaluate every model on the same tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from tqdm import tqdm

from sw.core.errors import DataError
from sw.data import corruptions

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the corruption code changes what it produces
CHUNK = 32  # images per task sent to a worker process


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """float tensor 3 x H x W in [0, 1] -> uint8 H x W x 3 (rounded, clipped)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise DataError(f"corrupted dataset: expected base images as 3 x H x W tensors, got {got}")
    array = image.detach().to(torch.float32).cpu().numpy().transpose(1, 2, 0)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def to_float_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float32 tensor 3 x H x W in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32) / 255.0


def fingerprint(image: np.ndarray) -> str:
    """A short content hash of a uint8 image (shape included)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class CorruptedDataset(Dataset):
    """`base` with `condition` at `severity` applied to every image (see module docstring)."""

    def __init__(self, base: Dataset, condition: str, severity: int, seed: int = 0,
                 cache_dir: Path | str | None = None):
        corruptions.check_condition(condition)
        corruptions.check_severity(severity)
        self.base = base
        self.condition = condition
        self.severity = int(severity)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.base[index]
        clean = to_uint8_hwc(image)
        path = self._cache_path(index, clean)
        corrupted = self._load(path, clean.shape)
        if corrupted is None:
            corrupted = corruptions.corrupt(clean, self.condition, self.severity, self.image_seed(index))
            self._store(path, corrupted)
        return to_float_chw(corrupted), label

    def image_seed(self, index: int) -> int:
        """The seed of image `index`: different per image, the same on every run."""
        return corruptions.derive_seed(self.seed, index)

    def materialize(self, workers: int = 1, progress: bool = False, executor: Executor | None = None,
                    indices: Sequence[int] | None = None) -> TensorDataset:
        """Corrupt every image (or those at `indices`, in that order) and return them in memory.

        Uncached images are corrupted in `executor` when given (reuse one pool across many
        calls: starting processes costs seconds), else in a new pool of `workers` processes.
        An image keeps the seed of its index in this dataset, so a subset materialised here
        equals the same subset of `self`.
        """
        indices = list(range(len(self))) if indices is None else [int(i) for i in indices]
        images: list[torch.Tensor | None] = [None] * len(indices)
        labels = []
        todo: list[tuple[int, int, np.ndarray, Path | None]] = []  # (position, index, clean image, cache path)
        for position, index in enumerate(indices):
            image, label = self.base[index]
            labels.append(int(label))
            clean = to_uint8_hwc(image)
            path = self._cache_path(index, clean)
            cached = self._load(path, clean.shape)
            if cached is None:
                todo.append((position, index, clean, path))
            else:
                images[position] = to_float_chw(cached)
        log.info("%s/%d: %d of %d images cached", self.condition, self.severity, len(indices) - len(todo), len(indices))
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        bar = tqdm(total=len(todo), desc=f"{self.condition} s{self.severity}", disable=not progress,
                   leave=False, unit="img")
        for chunk, results in zip(chunks, self._corrupt_chunks(chunks, workers, executor), strict=True):
            for (position, _, _, path), corrupted in zip(chunk, results, strict=True):
                self._store(path, corrupted)
                images[position] = to_float_chw(corrupted)
            bar.update(len(chunk))
        bar.close()
        if not indices:
            return TensorDataset(torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.long))
        return TensorDataset(torch.stack(images), torch.tensor(labels, dtype=torch.long))

    def _corrupt_chunks(self, chunks: Sequence[list], workers: int, executor: Executor | None):
        """Yield the corrupted images of each chunk, in order."""
        args = [([clean for _, _, clean, _ in chunk], [self.image_seed(i) for _, i, _, _ in chunk]) for chunk in chunks]
        if executor is None and (workers <= 1 or len(chunks) <= 1):
            for images, seeds in args:
                yield corruptions.corrupt_many(images, self.condition, self.severity, seeds)
            return
        with contextlib.ExitStack() as stack:
            pool = executor or stack.enter_context(corruptions.process_pool(min(workers, len(chunks))))
            futures = [pool.submit(corruptions.corrupt_many, images, self.condition, self.severity, seeds)
                       for images, seeds in args]
            for future in futures:
                yield future.result()

    # ------------------------------------------------------------ cache

    def _cache_path(self, index: int, clean: np.ndarray) -> Path | None:
        if self.cache_dir is None:
            return None
        folder = self.cache_dir / f"v{CACHE_VERSION}" / self.condition / f"severity{self.severity}" / f"seed{self.seed}"
        return folder / f"{index:07d}-{fingerprint(clean)}.npy"

    @staticmethod
    def _load(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
        if path is None or not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
            return None
        if array.dtype != np.uint8 or array.shape != shape:
            log.warning("ignoring cache file %s with unexpected %s %s", path, array.dtype, array.shape)
            return None
        return array

    @staticmethod
    def _store(path: Path | None, image: np.ndarray) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.save(handle, image, allow_pickle=False)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            raise DataError(f"{path.parent}: cannot write the corruption cache ({exc})") from None


def cache_dir_for(results_dir: Path | str) -> Path:
    """The default corruption cache of a results folder (shared by studies: keys are content hashes)."""
    return Path(results_dir) / "corruption_cache"
