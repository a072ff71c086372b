"""`python -m sw corrupt-images IN OUT`: ImageNet-C layout, determinism, resumption, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data
from workload_files import TINY, deep_update

from sw.cli import main
from sw.commands.corrupt_images import path_seed
from sw.data import corruptions


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two classes of real photographs, one smaller than 32 px and one JPEG."""
    root = tmp_path / "in"
    (root / "cat").mkdir(parents=True)
    (root / "rocket").mkdir()
    Image.fromarray(data.chelsea()).resize((48, 36)).save(root / "cat" / "chelsea.png")
    Image.fromarray(data.astronaut()).resize((20, 20)).save(root / "cat" / "small.png")
    Image.fromarray(data.rocket()).resize((40, 40)).save(root / "rocket" / "rocket.jpg", quality=95)
    Image.fromarray(data.camera()).resize((33, 33)).save(root / "rocket" / "gray.png")  # grayscale
    return root


def test_writes_the_imagenet_c_layout_with_sizes_kept(image_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["corrupt-images", str(image_folder), str(out), "--conditions", "fog", "rain",
                 "--severities", "1", "5", "--workers", "1"]) == 0
    sources = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*.*"))
    for condition in ("fog", "rain"):
        for severity in ("1", "5"):
            written = sorted(p.relative_to(out / condition / severity)
                             for p in (out / condition / severity).rglob("*.*"))
            assert written == sources
            for rel in sources:
                with Image.open(image_folder / rel) as a, Image.open(out / condition / severity / rel) as b:
                    assert a.size == b.size and b.mode == "RGB"
    assert not list(out.rglob("*.partial"))


def test_png_output_is_exactly_the_corruption_of_the_input(image_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["corrupt-images", str(image_folder), str(out), "--conditions", "snow",
                 "--severities", "3", "--seed", "5", "--workers", "1"]) == 0
    rel = "cat/chelsea.png"
    clean = np.asarray(Image.open(image_folder / rel).convert("RGB"))
    expected = corruptions.corrupt(clean, "snow", 3, path_seed(5, rel))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "snow" / "3" / rel)), expected)


def test_parallel_run_equals_serial_run(image_folder, tmp_path):
    args = ["--conditions", "frost", "sun_flare", "--severities", "2", "--format", "png"]
    assert main(["corrupt-images", str(image_folder), str(tmp_path / "a"), *args, "--workers", "1"]) == 0
    assert main(["corrupt-images", str(image_folder), str(tmp_path / "b"), *args, "--workers", "2"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 2 * 4
    for rel in files:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / rel)),
                                      np.asarray(Image.open(tmp_path / "b" / rel)))


def test_existing_outputs_are_kept_unless_overwrite(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["corrupt-images", str(image_folder), str(out), "--conditions", "fog", "--severities", "2",
            "--workers", "1"]
    assert main(args) == 0
    target = out / "fog" / "2" / "cat" / "chelsea.png"
    target.write_bytes(b"kept")
    assert main(args) == 0
    assert target.read_bytes() == b"kept"
    assert "0 images written, 4 already present" in capsys.readouterr().out
    assert main(args + ["--overwrite"]) == 0
    assert target.read_bytes() != b"kept"


@pytest.mark.parametrize("extra, message", [
    (["--conditions", "hail"], "unknown condition 'hail'"),
    (["--conditions", "fog", "--severities", "6"], "severity 6 is out of range"),
])
def test_bad_condition_or_severity_is_one_error_line(image_folder, tmp_path, capsys, extra, message):
    assert main(["corrupt-images", str(image_folder), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_missing_input_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["corrupt-images", str(tmp_path / "nope"), str(tmp_path / "out"), "--conditions", "fog"]) == 2
    assert "nope: expected an existing folder of images" in capsys.readouterr().err


def test_unreadable_image_is_reported_and_other_outputs_are_kept(image_folder, tmp_path, capsys):
    (image_folder / "cat" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["corrupt-images", str(image_folder), str(out), "--conditions", "fog", "--severities", "1",
                 "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 1 of 5 images") and "broken.png" in err and "\n" not in err
    assert (out / "fog" / "1" / "cat" / "chelsea.png").is_file()


def test_command_line_entry_point_runs_without_traceback(image_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "sw", "corrupt-images", str(image_folder), str(tmp_path / "o"),
                             "--conditions", "brightness", "--severities", "1", "4", "--workers", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "o").rglob("*.*"))) == 2 * 4


def test_output_tree_loads_as_an_imagenet_c_dataset_of_a_workload(tmp_path, write_workload):
    """corrupt-images writes what the `imagenet_c` dataset reads: <condition>/<severity>/<class>/<image>."""
    from sw.config.workload import load_workload
    from sw.data.datasets import build_dataset

    root = tmp_path / "clean"
    photos = {"cat": [data.chelsea(), data.coffee()], "rocket": [data.rocket()]}
    for label, images in photos.items():
        (root / label).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).resize((32, 32)).save(root / label / f"{i}.png")
    tree = tmp_path / "imagenet_c"
    assert main(["corrupt-images", str(root), str(tree), "--conditions", "frost", "--severities", "2",
                 "--workers", "1", "--no-progress"]) == 0
    only = deep_update(TINY, {"model": {"num_classes": len(photos)}})  # the model must have the tree's classes
    only["datasets"] = {"exploration": {"name": "imagenet_c", "path": str(tree), "split": "all", "batch_size": 4,
                                        "corruption": {"condition": "frost", "severity": 2}}}
    workload = load_workload(write_workload(raw=yaml.safe_dump(only)))
    dataset = build_dataset(workload.dataset("exploration"))
    assert len(dataset) == 3
    expected = [(np.asarray(Image.open(tree / "frost" / "2" / label / f"{i}.png")), label_index)
                for label_index, label in enumerate(sorted(photos)) for i in range(len(photos[label]))]
    for (image, label), (png, expected_label) in zip((dataset[i] for i in range(len(dataset))), expected, strict=True):
        assert label == expected_label
        np.testing.assert_allclose(image.numpy().transpose(1, 2, 0) * 255, png, atol=1e-3)
