"""Large evaluation sets: decoded once (uint8 where 8-bit, bit-identical floats), memory bounded.

Image folders are written by the tests (PNG files through PIL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sw.bench import write_image_folder
from sw.core.errors import DataError, UserError
from sw.core.schema import Config
from sw.data.datasets import build_dataset, build_loader, loader_workers
from sw.evaluation.evaluate import Batches, BatchCache, compact, expand
from sw.nets.models import DigitsCNN
from sw.study.study import Study


def write_folder(root: Path, per_class: int, classes: int = 10, side: int = 40, seed: int = 0) -> Path:
    """`root/<class>/<i>.png`: random RGB images (side x side, so the loader resizes and crops)."""
    return write_image_folder(root, per_class * classes, side=side, classes=classes, seed=seed)


def folder_spec(root: Path, **changes) -> Config:
    return Config({"name": "imagefolder", "path": str(root), "split": None, "sample_limit": None, "batch_size": 16,
                   "randomize": False, "seed": 0, "image_size": 32, "corruption": None, **changes})


def test_compact_keeps_8_bit_images_as_uint8_and_expands_them_bit_for_bit():
    codes = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(2, 3, 1, 1)
    images = codes.float() / 255.0  # what ToTensor and the datasets compute
    packed = compact(images)
    assert packed.dtype == torch.uint8 and torch.equal(packed, codes)
    assert torch.equal(expand(packed).view(torch.int32), images.view(torch.int32))
    not_8_bit = images.clone()
    not_8_bit[0, 0, 0, 1] += 1e-4
    assert compact(not_8_bit) is not_8_bit  # kept as float32: nothing is rounded away
    digits_like = torch.rand(4, 3, 8, 8)
    assert compact(digits_like).dtype == torch.float32


def test_folder_is_decoded_once_into_uint8_identical_to_the_uncached_images(tmp_path):
    root = write_folder(tmp_path / "images", per_class=4)
    spec = folder_spec(root)
    batches = Batches.from_loader(build_loader(spec))
    assert batches.num_samples == 40 and len(batches) == 3
    assert {x.dtype for x, _ in batches.batches} == {torch.uint8}
    assert batches.nbytes == 40 * 3 * 32 * 32 + 40 * 8  # uint8 images, int64 labels: a quarter of float32
    uncached = build_dataset(spec)  # decoded per item, as the loader always did
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert images.dtype == torch.float32
    assert torch.equal(images, torch.stack([uncached[i][0] for i in range(40)]))
    assert labels.tolist() == [uncached[i][1] for i in range(40)]


def test_decoding_workers_give_the_same_images(tmp_path):
    root = write_folder(tmp_path / "images", per_class=3)
    spec = folder_spec(root)
    serial = torch.cat([x for x, _ in Batches.from_loader(build_loader(spec, workers=0))])
    parallel_loader = build_loader(spec, workers=2)
    assert parallel_loader.num_workers == 2
    assert torch.equal(torch.cat([x for x, _ in Batches.from_loader(parallel_loader)]), serial)


def test_automatic_workers_only_where_files_are_decoded_and_many(tmp_path):
    root = write_folder(tmp_path / "images", per_class=1)
    spec = folder_spec(root)
    dataset = build_dataset(spec)
    assert loader_workers(spec, dataset, None) == 0  # 10 images: a worker's start costs more than it saves
    assert loader_workers(spec, dataset, 3) == 3
    big = torch.utils.data.ConcatDataset([dataset] * 100)  # 1000 file-decoded images
    assert loader_workers(spec, big, None) >= 1
    digits = Config({**spec, "name": "digits", "path": None})
    assert loader_workers(digits, big, None) == 0  # in-memory tensors: nothing to decode


def test_a_set_over_the_memory_bound_is_refused_before_it_is_decoded(tmp_path):
    root = write_folder(tmp_path / "images", per_class=40)  # 400 images: 1.2 MB as uint8
    (root / "c0" / "zz_bad.png").write_bytes(b"not a png")  # the 41st image: decoding it fails
    loader = build_loader(folder_spec(root))
    with pytest.raises(DataError) as info:
        Batches.from_loader(loader, max_bytes=1 << 20, what="w.yaml: datasets.exploration")
    message = str(info.value)
    assert message.startswith("w.yaml: datasets.exploration: 401 images of 3x32x32 (torch.uint8) need 1 MiB decoded, "
                              "more than loading.memory_mb (1)")
    assert "\n" not in message
    with pytest.raises(DataError, match="zz_bad.png: not a readable image"):  # within the bound: decoded on
        Batches.from_loader(loader, max_bytes=2 << 20)


def test_cache_evicts_the_least_recently_used_set_within_its_bound():
    def sized(n: int) -> Batches:
        return Batches([(torch.zeros(n, dtype=torch.uint8), torch.zeros(0))])

    cache = BatchCache(max_bytes=100)
    cache.put("a", sized(40))
    cache.put("b", sized(40))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", sized(40))
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.used == 80
    cache.put("huge", sized(100))  # alone at the bound: everything else goes
    assert len(cache) == 1 and cache.used == 100


@pytest.fixture
def folder_workload(tmp_path, write_workload):
    torch.manual_seed(0)
    weights = tmp_path / "cnn.pt"
    torch.save(DigitsCNN(10).state_dict(), weights)
    root = write_folder(tmp_path / "images", per_class=6)

    def write(**changes) -> Path:
        folder = {"name": "imagefolder", "path": str(root), "batch_size": 16, "split": "all", "sample_limit": None}
        return write_workload({"model": {"weights": str(weights)}, "device": "cpu",
                               "datasets": {"exploration": folder, "reevaluation": folder}, **changes})

    return root, write


def test_study_evaluates_candidates_without_touching_the_files_again(folder_workload):
    root, write = folder_workload
    study = Study(write())
    first = study.evaluate_bits(study.uniform_bits(4))
    shutil.rmtree(root)  # nothing can be decoded from here on
    assert study.evaluate_bits(study.uniform_bits(4)) == first
    for bits in (8, 3, 6):
        study.evaluate_bits(study.uniform_bits(bits))
    assert study.batches("exploration") is study.batches("exploration")
    assert study.batches("exploration").num_samples == 60
    assert study.batches("exploration").batches[0][0].dtype == torch.uint8


def test_study_memory_bound_is_one_clear_error(folder_workload):
    root, write = folder_workload
    study = Study(write(loading={"memory_mb": 1}))
    images = torch.cat([x for x, _ in study.batches("exploration")])  # 60 images fit in 1 MiB
    assert images.shape == (60, 3, 32, 32)
    big = write_folder(root.parent / "big", per_class=40)
    path = write(loading={"memory_mb": 1}, datasets={"exploration": {"name": "imagefolder", "path": str(big),
                                                                      "split": "all", "sample_limit": None}})
    with pytest.raises(UserError, match=r"datasets\.exploration: 400 images .* more than loading\.memory_mb \(1\)"):
        Study(path).batches("exploration")
