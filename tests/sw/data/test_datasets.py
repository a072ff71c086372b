"""Dataset loaders: digits splits, image folders, both CIFAR-10 layouts, ImageNet-C, subsets, errors.

Fixtures encode each item's label (and for CIFAR a record id) in its pixel values, so the
tests check that images and labels line up without trusting the code under test.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from sw.core.errors import DataError
from sw.core.schema import Config
from sw.data.corrupted_dataset import CorruptedDataset
from sw.data.cifar import SafeUnpickler
from sw.data.datasets import DATASETS, build_dataset, build_loader

DEFAULTS = dict(name="digits", path=None, split=None, sample_limit=None, batch_size=16, randomize=False,
                seed=0, image_size=32, corruption=None)


def spec(**changes) -> Config:
    values = {**DEFAULTS, **changes}
    if isinstance(values["corruption"], dict):
        values["corruption"] = Config(values["corruption"])
    if values["path"] is not None:
        values["path"] = str(values["path"])
    return Config(values)


def check_item(item, size: int) -> None:
    image, label = item
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    assert image.shape == (3, size, size)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert isinstance(label, int)


def signature(item) -> tuple[bytes, int]:
    image, label = item
    return image.numpy().tobytes(), label


# ---------------------------------------------------------------- registry


def test_registry_lists_the_four_datasets():
    assert {"digits", "imagefolder", "cifar10", "imagenet_c"} <= set(DATASETS.names())
    assert not DATASETS.get("digits").needs_path
    assert all(DATASETS.get(name).needs_path for name in ("imagefolder", "cifar10", "imagenet_c"))


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_splits() -> dict[str, list]:
    return {split: [item for item in build_dataset(spec(split=split))] for split in ("train", "val", "test", "all")}


def test_digits_all_are_the_real_digits_upscaled_to_rgb(digits_splits):
    digits = load_digits()
    everything = digits_splits["all"]
    assert len(everything) == len(digits.target) == 1797
    reference = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    reference = torch.nn.functional.interpolate(reference, size=32, mode="bilinear", align_corners=False)
    for index in (0, 1, 500, 1796):
        check_item(everything[index], 32)
        image, label = everything[index]
        assert label == digits.target[index]
        for channel in range(3):
            torch.testing.assert_close(image[channel], reference[index, 0].clamp(0, 1))


def test_digits_splits_partition_everything_60_20_20_per_class(digits_splits):
    parts = {split: Counter(map(signature, digits_splits[split])) for split in ("train", "val", "test")}
    assert parts["train"] + parts["val"] + parts["test"] == Counter(map(signature, digits_splits["all"]))
    assert not (set(parts["train"]) & set(parts["val"])) and not (set(parts["val"]) & set(parts["test"]))
    totals = Counter(label for _, label in digits_splits["all"])
    for split, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = Counter(label for _, label in digits_splits[split])
        assert set(counts) == set(range(10))
        for label, total in totals.items():
            assert abs(counts[label] - fraction * total) <= 1, (split, label)


def test_digits_splits_ignore_the_spec_seed_and_honour_image_size():
    a, b = build_dataset(spec(split="val", seed=0)), build_dataset(spec(split="val", seed=7))
    assert [signature(a[i]) for i in range(5)] == [signature(b[i]) for i in range(5)]
    big = build_dataset(spec(split="val", image_size=48))
    check_item(big[3], 48)
    assert big[3][1] == a[3][1]


def test_sample_limit_takes_the_first_items_or_a_seeded_random_subset():
    full = build_dataset(spec(split="test"))
    first = build_dataset(spec(split="test", sample_limit=10))
    assert len(first) == 10
    assert [signature(first[i]) for i in range(10)] == [signature(full[i]) for i in range(10)]

    def drawn(seed: int) -> list:
        subset = build_dataset(spec(split="test", sample_limit=10, randomize=True, seed=seed))
        assert len(subset) == 10
        return [signature(subset[i]) for i in range(10)]

    assert drawn(3) == drawn(3)
    assert drawn(3) != drawn(4)
    assert drawn(3) != [signature(full[i]) for i in range(10)]
    assert set(drawn(3)) <= set(map(signature, full))
    assert len(build_dataset(spec(split="test", sample_limit=10_000))) == len(full)


def test_loader_batches_and_seeded_shuffle():
    s = spec(split="val", sample_limit=40, batch_size=16)
    batches = list(build_loader(s))
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    assert batches[0][0].shape == (16, 3, 32, 32) and batches[0][0].dtype == torch.float32
    plain = torch.cat([b[1] for b in batches])
    order = [torch.cat([b[1] for b in build_loader(s, shuffle=True)]) for _ in range(2)]
    assert torch.equal(order[0], order[1])
    assert not torch.equal(order[0], plain)
    assert sorted(order[0].tolist()) == sorted(plain.tolist())


def test_corruption_wraps_the_full_dataset_before_the_subset():
    fog = {"condition": "fog", "severity": 4, "seed": 1}
    corrupted = build_dataset(spec(split="test", sample_limit=3, randomize=True, seed=5, corruption=fog))
    clean = build_dataset(spec(split="test", sample_limit=3, randomize=True, seed=5))
    reference = CorruptedDataset(build_dataset(spec(split="test")), "fog", 4, seed=1)
    for position, index in enumerate(clean.indices):
        check_item(corrupted[position], 32)
        assert corrupted[position][1] == clean[position][1]
        assert (corrupted[position][0] - clean[position][0]).abs().mean() > 0.02
        torch.testing.assert_close(corrupted[position][0], reference[index][0])


# ---------------------------------------------------------------- image folders

FOLDER_VALUES = {"cat": 40, "dog": 200}  # class folder -> grey value of the image centre


def write_framed_png(path: Path, value: int, height: int = 32, width: int = 64) -> None:
    """A wide image: black left quarter, white right quarter, `value` grey in the centre square."""
    pixels = np.full((height, width, 3), value, dtype=np.uint8)
    pixels[:, : (width - height) // 2] = 0
    pixels[:, width - (width - height) // 2:] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    for name, value in FOLDER_VALUES.items():
        for i in range(3):
            write_framed_png(tmp_path / "folder" / name / f"{i}.png", value)
    return tmp_path / "folder"


def test_imagefolder_labels_follow_sorted_class_folders_and_images_are_center_cropped(image_folder):
    dataset = build_dataset(spec(name="imagefolder", path=image_folder, split="all"))
    assert len(dataset) == 6
    expected = {index: FOLDER_VALUES[name] for index, name in enumerate(sorted(FOLDER_VALUES))}
    for item in dataset:
        check_item(item, 32)
        image, label = item
        # the crop removed the black and white bands: only the class's grey is left
        torch.testing.assert_close(image, torch.full_like(image, expected[label] / 255), atol=1.5 / 255, rtol=0)


def test_imagefolder_resizes_the_shorter_side_and_without_split_is_the_whole_folder(image_folder):
    dataset = build_dataset(spec(name="imagefolder", path=image_folder, image_size=16))
    assert len(dataset) == 6
    image, label = dataset[0]
    check_item((image, label), 16)
    centre = image[:, 4:12, 4:12]
    torch.testing.assert_close(centre, torch.full_like(centre, FOLDER_VALUES["cat"] / 255), atol=2 / 255, rtol=0)


def test_imagefolder_split_is_a_fixed_seeded_stratified_partition(tmp_path):
    """10 + 5 images whose grey value identifies them: train/val/test are disjoint, cover the folder,
    are 60/20/20 per class, and do not depend on the phase's seed."""
    grey = {("ant", i): 10 + 10 * i for i in range(10)} | {("bee", i): 150 + 10 * i for i in range(5)}
    for (name, i), value in grey.items():
        write_framed_png(tmp_path / "f" / name / f"{i}.png", value, height=8, width=8)

    def items(split, seed=0) -> list[tuple[int, int]]:
        dataset = build_dataset(spec(name="imagefolder", path=tmp_path / "f", split=split, image_size=8, seed=seed))
        return [(round(float(image.mean()) * 255), label) for image, label in dataset]

    parts = {split: items(split) for split in ("train", "val", "test")}
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(items("all")) == sorted(items(None))
    assert sorted(items("all")) == sorted((value, 0 if name == "ant" else 1) for (name, _), value in grey.items())
    for split, (ants, bees) in {"train": (6, 3), "val": (2, 1), "test": (2, 1)}.items():
        assert [label for _, label in parts[split]].count(0) == ants
        assert [label for _, label in parts[split]].count(1) == bees
    assert items("val", seed=5) == parts["val"]
    assert items("train") == parts["train"]  # the same partition on every call

    (tmp_path / "g" / "ant").mkdir(parents=True)
    write_framed_png(tmp_path / "g" / "ant" / "only.png", 50, height=8, width=8)
    with pytest.raises(DataError, match=r"split 'test' is empty.*split: all"):
        build_dataset(spec(name="imagefolder", path=tmp_path / "g", split="test", image_size=8))


def test_imagefolder_errors_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"{empty}.*class subfolders"):
        build_dataset(spec(name="imagefolder", path=empty))
    (empty / "cat").mkdir()
    (empty / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=rf"{empty}.*image files"):
        build_dataset(spec(name="imagefolder", path=empty))
    (empty / "cat" / "broken.png").write_bytes(b"not a png at all")
    dataset = build_dataset(spec(name="imagefolder", path=empty))
    with pytest.raises(DataError, match=r"broken\.png.*not a readable image"):
        dataset[0]


# ---------------------------------------------------------------- CIFAR-10

PER_BATCH, TEST_RECORDS = 4, 3


def cifar_records(batch: int, count: int) -> tuple[np.ndarray, list[int]]:
    """Records whose red plane is 20 * label, green 20 * label + 1, blue a unique record id."""
    ids = [batch * 10 + i for i in range(count)]
    labels = [(record * 7) % 10 for record in ids]
    data = np.zeros((count, 3, 1024), dtype=np.uint8)
    for row, (record, label) in enumerate(zip(ids, labels)):
        data[row, 0], data[row, 1], data[row, 2] = 20 * label, 20 * label + 1, record
    return data.reshape(count, 3072), labels


CIFAR_FILES = [(f"data_batch_{b}", b, PER_BATCH) for b in range(1, 6)] + [("test_batch", 9, TEST_RECORDS)]


def write_cifar_binary(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, batch, count in CIFAR_FILES:
        data, labels = cifar_records(batch, count)
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    return folder


def write_cifar_python(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for position, (name, batch, count) in enumerate(CIFAR_FILES):
        data, labels = cifar_records(batch, count)
        content = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                   b"filenames": [f"{i}.png".encode() for i in range(count)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=(2, 4, 5)[position % 3])  # every numpy pickle form
    return folder


def expected_cifar(split: str) -> list[tuple[int, int]]:
    """(record id, label) of a split, derived from the fixture layout only."""
    data_records = [(r, (r * 7) % 10) for _, b, n in CIFAR_FILES[:5] for r in (b * 10 + i for i in range(n))]
    test_records = [(90 + i, ((90 + i) * 7) % 10) for i in range(TEST_RECORDS)]
    n_val = len(data_records) // 10  # the last 10 % of the data batches (5000 of 50000)
    return {"train": data_records[:-n_val], "val": data_records[-n_val:], "test": test_records,
            "all": data_records + test_records}[split]


def decoded(dataset) -> list[tuple[int, int]]:
    out = []
    for item in dataset:
        check_item(item, 32)
        image, label = item
        pixels = (image * 255).round().to(torch.int64)
        assert torch.all(pixels[0] == 20 * label) and torch.all(pixels[1] == 20 * label + 1)
        assert torch.all(pixels[2] == pixels[2, 0, 0])
        out.append((int(pixels[2, 0, 0]), label))
    return out


@pytest.mark.parametrize("layout", ["binary", "python"])
@pytest.mark.parametrize("split", ["train", "val", "test", "all"])
def test_cifar10_layouts_decode_images_labels_and_splits(tmp_path, layout, split):
    folder = (write_cifar_binary if layout == "binary" else write_cifar_python)(tmp_path / "cifar")
    dataset = build_dataset(spec(name="cifar10", path=folder, split=split))
    assert decoded(dataset) == expected_cifar(split)


def test_cifar10_found_in_the_official_subfolder_and_resized(tmp_path):
    write_cifar_python(tmp_path / "cifar-10-batches-py")
    dataset = build_dataset(spec(name="cifar10", path=tmp_path, split="test", image_size=20))
    image, label = dataset[0]
    check_item((image, label), 20)
    # constant planes stay constant under resizing
    torch.testing.assert_close(image[0], torch.full((20, 20), 20 * label / 255))
    assert label == expected_cifar("test")[0][1]


def test_cifar10_missing_batch_file_names_it(tmp_path):
    folder = write_cifar_binary(tmp_path / "cifar")
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_3\.bin: missing CIFAR-10 batch file"):
        build_dataset(spec(name="cifar10", path=folder, split="train"))
    assert len(build_dataset(spec(name="cifar10", path=folder, split="test"))) == TEST_RECORDS


def test_cifar10_errors_for_a_wrong_folder_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}: expected a CIFAR-10 folder"):
        build_dataset(spec(name="cifar10", path=tmp_path))
    binary = write_cifar_binary(tmp_path / "bin")
    (binary / "test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(DataError, match=r"test_batch\.bin: expected CIFAR-10 binary records of 3073 bytes"):
        build_dataset(spec(name="cifar10", path=binary, split="test"))
    python = write_cifar_python(tmp_path / "py")
    (python / "test_batch").write_bytes((python / "data_batch_1").read_bytes()[:50])
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR-10 python batch"):
        build_dataset(spec(name="cifar10", path=python, split="test"))


class RunsACommand:
    """A pickle payload that runs a shell command when unpickled by plain pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": RunsACommand(marker), b"labels": [0]})
    with pytest.raises(DataError, match=r"refusing to unpickle '(posix|os)\.system'"):
        SafeUnpickler(io.BytesIO(payload)).load()
    folder = write_cifar_python(tmp_path / "cifar")
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle"):
        build_dataset(spec(name="cifar10", path=folder, split="test"))
    assert not marker.exists()


def test_restricted_unpickler_still_reads_numpy_arrays():
    array = np.arange(24, dtype=np.uint8).reshape(4, 6)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        loaded = SafeUnpickler(io.BytesIO(pickle.dumps({b"data": array}, protocol=protocol))).load()
        np.testing.assert_array_equal(loaded[b"data"], array)


# ---------------------------------------------------------------- ImageNet-C


@pytest.fixture
def imagenet_c_tree(tmp_path) -> Path:
    """fog at severities 1 and 3, two classes each; the grey value encodes severity and class."""
    root = tmp_path / "imagenet-c"
    for severity in (1, 3):
        for label, name in enumerate(("n01", "n02")):
            for i in range(2):
                write_framed_png(root / "fog" / str(severity) / name / f"{i}.png",
                                 50 * severity + 10 * label)
    return root


def test_imagenet_c_reads_the_selected_subfolder_without_corrupting_again(imagenet_c_tree):
    dataset = build_dataset(spec(name="imagenet_c", path=imagenet_c_tree, split="all",
                                 corruption={"condition": "fog", "severity": 3, "seed": 0}))
    assert len(dataset) == 4
    labels = []
    for item in dataset:
        check_item(item, 32)
        image, label = item
        labels.append(label)
        value = (50 * 3 + 10 * label) / 255
        torch.testing.assert_close(image, torch.full_like(image, value), atol=1.5 / 255, rtol=0)
    assert sorted(labels) == [0, 0, 1, 1]


def test_imagenet_c_errors_name_the_missing_key_and_folder(imagenet_c_tree):
    with pytest.raises(DataError, match=r"imagenet_c.*'corruption'.*'condition' and 'severity'"):
        build_dataset(spec(name="imagenet_c", path=imagenet_c_tree))
    with pytest.raises(DataError, match=r"fog/5: no such folder.*corruptions found: fog"):
        build_dataset(spec(name="imagenet_c", path=imagenet_c_tree,
                           corruption={"condition": "fog", "severity": 5, "seed": 0}))
