"""CorruptedDataset: on-the-fly corruption, per-image seeds, the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from sw.data import corruptions
from sw.data.corrupted_dataset import CorruptedDataset, to_float_chw, to_uint8_hwc


def digits_dataset(n: int = 12) -> TensorDataset:
    """n real handwritten digits (scikit-learn), 8x8 upscaled to 3x32x32 in [0, 1]."""
    digits = load_digits()
    images = torch.tensor(digits.images[:n] / 16.0, dtype=torch.float32)[:, None]
    images = torch.nn.functional.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).repeat(1, 3, 1, 1)
    return TensorDataset(images, torch.tensor(digits.target[:n]))


@pytest.fixture(scope="module")
def base() -> TensorDataset:
    return digits_dataset()


def test_items_are_corrupted_float_images_with_their_labels(base):
    dataset = CorruptedDataset(base, "fog", 3, seed=0)
    assert len(dataset) == len(base)
    for index in (0, 5):
        image, label = dataset[index]
        clean, clean_label = base[index]
        assert image.dtype == torch.float32 and image.shape == clean.shape
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label == clean_label
        assert (image - clean).abs().mean() > 0.02  # actually corrupted


def test_each_item_is_the_corruption_of_its_base_image_with_a_derived_seed(base):
    dataset = CorruptedDataset(base, "snow", 2, seed=4)
    image, _ = dataset[3]
    expected = corruptions.corrupt(to_uint8_hwc(base[3][0]), "snow", 2, corruptions.derive_seed(4, 3))
    np.testing.assert_array_equal(to_uint8_hwc(image), expected)


def test_identical_images_get_different_noise_but_runs_repeat(base):
    twice = TensorDataset(torch.stack([base[0][0], base[0][0]]), torch.tensor([0, 0]))
    first = CorruptedDataset(twice, "gaussian_noise", 3, seed=0)
    second = CorruptedDataset(twice, "gaussian_noise", 3, seed=0)
    assert not torch.equal(first[0][0], first[1][0])
    assert torch.equal(first[1][0], second[1][0])
    assert not torch.equal(first[1][0], CorruptedDataset(twice, "gaussian_noise", 3, seed=1)[1][0])


def test_uint8_conversion_round_trips():
    array = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_hwc(to_float_chw(array)), array)


def test_cache_is_written_and_read_back(base, tmp_path):
    dataset = CorruptedDataset(base, "frost", 1, seed=0, cache_dir=tmp_path)
    image, _ = dataset[2]
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1
    assert "frost" in str(files[0]) and "severity1" in str(files[0]) and "seed0" in str(files[0])
    stored = np.load(files[0], allow_pickle=False)
    np.testing.assert_array_equal(stored, to_uint8_hwc(image))
    # Overwrite the cached file: a fresh dataset must return what the cache holds.
    marker = np.full_like(stored, 77)
    np.save(files[0], marker, allow_pickle=False)
    again, _ = CorruptedDataset(base, "frost", 1, seed=0, cache_dir=tmp_path)[2]
    np.testing.assert_array_equal(to_uint8_hwc(again), marker)


def test_changed_base_item_never_returns_stale_data(base, tmp_path):
    CorruptedDataset(base, "fog", 2, seed=0, cache_dir=tmp_path)[0]
    changed_images = base.tensors[0].clone()
    changed_images[0] = changed_images[1]
    changed = TensorDataset(changed_images, base.tensors[1])
    image, _ = CorruptedDataset(changed, "fog", 2, seed=0, cache_dir=tmp_path)[0]
    expected = corruptions.corrupt(to_uint8_hwc(base[1][0]), "fog", 2, corruptions.derive_seed(0, 0))
    np.testing.assert_array_equal(to_uint8_hwc(image), expected)
    assert len(list(tmp_path.rglob("*.npy"))) == 2


def test_condition_severity_and_seed_have_separate_cache_entries(base, tmp_path):
    images = [CorruptedDataset(base, c, s, seed=k, cache_dir=tmp_path)[0][0]
              for c, s, k in [("fog", 1, 0), ("fog", 5, 0), ("snow", 1, 0), ("fog", 1, 1)]]
    assert len(list(tmp_path.rglob("*.npy"))) == 4
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not torch.equal(images[i], images[j])


def test_unreadable_cache_file_is_recomputed(base, tmp_path):
    reference, _ = CorruptedDataset(base, "rain", 4, seed=0)[1]
    CorruptedDataset(base, "rain", 4, seed=0, cache_dir=tmp_path)[1]
    (cached,) = tmp_path.rglob("*.npy")
    cached.write_bytes(b"not a numpy file")
    image, _ = CorruptedDataset(base, "rain", 4, seed=0, cache_dir=tmp_path)[1]
    assert torch.equal(image, reference)
    np.testing.assert_array_equal(np.load(cached, allow_pickle=False), to_uint8_hwc(reference))


def test_materialize_matches_item_access_serial_and_in_processes(base, tmp_path):
    dataset = CorruptedDataset(base, "sun_flare", 5, seed=2)
    expected = torch.stack([dataset[i][0] for i in range(len(dataset))])
    serial = dataset.materialize(workers=1)
    assert torch.equal(serial.tensors[0], expected)
    assert torch.equal(serial.tensors[1], base.tensors[1].long())
    cached = CorruptedDataset(base, "sun_flare", 5, seed=2, cache_dir=tmp_path)
    with corruptions.process_pool(2) as pool:
        parallel = cached.materialize(executor=pool)
    assert torch.equal(parallel.tensors[0], expected)
    assert len(list(tmp_path.rglob("*.npy"))) == len(base)


def test_invalid_condition_or_severity_fails_at_construction(base):
    with pytest.raises(corruptions.UnknownConditionError):
        CorruptedDataset(base, "hail", 1, seed=0)
    with pytest.raises(corruptions.SeverityError):
        CorruptedDataset(base, "fog", 0, seed=0)


def test_materialize_a_subset_keeps_each_images_seed(base, tmp_path):
    dataset = CorruptedDataset(base, "snow", 3, seed=1, cache_dir=tmp_path)
    subset = dataset.materialize(indices=[7, 2, 9])
    for position, index in enumerate([7, 2, 9]):
        assert torch.equal(subset.tensors[0][position], dataset[index][0])
        assert int(subset.tensors[1][position]) == int(base[index][1])
    assert len(list(tmp_path.rglob("*.npy"))) == 3


def test_a_study_explored_under_a_condition_caches_its_corrupted_images(write_workload):
    from sw.data.corrupted_dataset import cache_dir_for
    from sw.study.study import Study

    snow = {"condition": "snow", "severity": 2}
    path = write_workload({"datasets": {"exploration": {"sample_limit": 12, "batch_size": 12, "corruption": snow}}})
    study = Study(path)
    cache = cache_dir_for(study.results_dir)
    before = {p for p in cache.rglob("*") if p.is_file()} if cache.exists() else set()
    first = study.batches("exploration")
    written = {p for p in cache.rglob("*") if p.is_file()} - before
    assert len(written) >= 12
    again = Study(path).batches("exploration")  # a new process would read the same files
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
