"""Workload checks a user expects: data that fits the model, every numeric key's range, an fp32
model at chance level, the weights file's contents in the configuration hash, the default
workload in a non-editable install. Bad input: one line naming file and key, exit 2, and
nothing already written is lost."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from workload_files import TINY, deep_update, write_tiny_workload

from sw.cli import main
from sw.config.workload import MAX_SEED, WORKLOAD, load_workload
from sw.core.schema import AnyOf, ListOf, MapOf, Scalar, Section
from sw.data.datasets import build_dataset
from sw.evaluation.metrics import at_chance, chance_accuracy
from sw.nets.models import build_architecture
from sw.study.study import Study

REPO = Path(__file__).resolve().parents[3]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- every numeric key has a range


def numeric_keys(spec, key: str = ""):
    """(dotted key, Scalar) of every int/float key of the schema (lists: their first item)."""
    if isinstance(spec, Section):
        for name, sub in spec.fields.items():
            yield from numeric_keys(sub, f"{key}.{name}" if key else name)
    elif isinstance(spec, MapOf):
        yield from numeric_keys(spec.value, f"{key}.exploration")
    elif isinstance(spec, ListOf):
        yield from numeric_keys(spec.item, f"{key}[0]")
    elif isinstance(spec, AnyOf):
        yield from numeric_keys(spec.options[0], key)
    elif isinstance(spec, Scalar) and spec.type in (int, float) and not spec.choices:
        yield key, spec


NUMERIC = dict(numeric_keys(WORKLOAD))


def test_every_numeric_key_has_a_range():
    assert len(NUMERIC) > 25 and "search.seed" in NUMERIC
    for key, spec in NUMERIC.items():
        assert spec.min is not None, f"{key} has no lower bound"
        if key.endswith("seed"):
            assert (spec.min, spec.max) == (0, MAX_SEED) == (0, 2**32 - 1), key


def bad_values(spec: Scalar) -> list:
    if spec.min is None:  # test_every_numeric_key_has_a_range says which
        return []
    low = spec.min if spec.exclusive_min else spec.min - (1 if spec.type is int else 0.5)
    values = [low] + ([spec.max + 1] if spec.max is not None else [])
    return values + ([math.nan, math.inf] if spec.type is float else [])


def with_value(data: dict, key: str, value) -> dict:
    """`data` with dotted `key` set (sections that are null by default get their required keys)."""
    parts = key.replace("[0]", "").split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {"condition": "fog", "severity": 1} if part == "corruption" else {})
    node[parts[-1]] = [value, 32, 32] if key.endswith("[0]") else value
    return data


CASES = [(key, value) for key, spec in NUMERIC.items() for value in bad_values(spec)]


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_out_of_range_numbers_are_one_line(key, value, tmp_path, capsys):
    path = write(tmp_path / "w.yaml", with_value(deep_update(TINY, {"results": {"dir": str(tmp_path)}}), key, value))
    assert main(["explore", str(path)]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: {path}: {key}: expected"), err
    assert not (tmp_path / "tiny").exists(), "nothing may be written for a bad workload"


def test_chance_and_margin():
    assert chance_accuracy("top1", 10) == 0.1 and chance_accuracy("top5", 10) == 0.5
    assert chance_accuracy("top5", 3) == 1.0 and chance_accuracy("loss", 10) is None
    # 100 samples at chance 0.1: the binomial standard error is 0.03, the margin 3 of them
    assert at_chance(0.19, 0.1, 100) and not at_chance(0.1901, 0.1, 100)
    assert not at_chance(0.2, 0.1, 0)


# ---------------------------------------------------------------- bad inputs of item 6


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """A finished tiny exploration; the bad workloads below share its name and results folder."""
    root = tmp_path_factory.mktemp("checks")
    for name in ("ant", "bee", "cat"):
        (root / "folder" / name).mkdir(parents=True)
    path = write_tiny_workload(root, {"name": "checks", "search": {"generations": 1}}, "good.yaml")
    assert main(["explore", str(path)]) == 0
    return root, path


def snapshot(results: Path) -> dict:
    files = {p.name: p.read_bytes() for p in results.glob("front.*")}
    with sqlite3.connect(results / "results.sqlite") as conn:
        files["results.sqlite"] = list(conn.iterdump())
    return files


BAD = {
    "image size": ({"datasets": {"exploration": {"image_size": 28}}}, "datasets.exploration.image_size",
                   "expected 32, the side of model.input_shape [3, 32, 32], got 28"),
    "grey input": ({"model": {"input_shape": [1, 32, 32]}}, "model.input_shape", "RGB images"),
    "classes": ({"model": {"num_classes": 12}}, "model.num_classes",
                "expected 10, the number of classes of datasets."),
    "folder classes": ({"datasets": {"reevaluation": {"name": "imagefolder", "path": "{root}/folder"}}},
                       "model.num_classes", "expected 3, the number of classes of datasets.reevaluation (imagefolder at"),
    "negative search seed": ({"search": {"seed": -1}}, "search.seed", "[0, 4294967295]"),
    "missing weights": ({"model": {"weights": "{root}/no_such_weights.pt"}}, "model.weights", "existing path"),
    "chance level setting": ({"accuracy": {"chance_level": "ignore"}}, "accuracy.chance_level", "warn, error"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_loses_nothing(case, explored, capsys):
    root, good = explored
    before = snapshot(root / "results" / "checks")
    changes, key, expected = BAD[case]
    data = deep_update(yaml.safe_load(good.read_text()), yaml.safe_load(yaml.safe_dump(changes).replace("{root}", str(root))))
    path = write(root / f"{case.replace(' ', '_')}.yaml", data)
    capsys.readouterr()
    assert main(["explore", str(path)]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: {path}: {key}: "), err
    assert expected in err, err
    assert snapshot(root / "results" / "checks") == before


def untrained_weights(path: Path, workload_path: Path) -> Path:
    torch.save(build_architecture(load_workload(workload_path)).state_dict(), path)
    return path


def test_an_fp32_model_at_chance_warns_or_stops(explored, capsys):
    root, good = explored
    data = yaml.safe_load(good.read_text())
    weights = untrained_weights(root / "untrained.pt", good)
    data["model"]["weights"] = str(weights)
    data["name"] = "chance"
    warn = write(root / "chance.yaml", data)
    study = Study(warn)
    dataset = build_dataset(study.workload.dataset("exploration"))
    model = study.fp32_model
    with torch.no_grad():
        hits = sum(int(model(image[None]).argmax()) == label for image, label in dataset)
    assert hits / len(dataset) <= 0.1 + 3 * math.sqrt(0.09 / len(dataset)), "premise: the untrained CNN guesses"

    capsys.readouterr()
    assert main(["explore", str(warn), "--skip-baseline"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(warn) in warnings[0] and "no better than chance" in warnings[0]
    trained = Study(good)
    assert trained.check_above_chance(trained.evaluate(trained.fp32_model, "baseline")) is None

    data["accuracy"]["chance_level"] = "error"
    stop = write(root / "chance_error.yaml", data)
    before = snapshot(root / "results" / "chance")
    assert main(["explore", str(stop), "--skip-baseline"]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: {stop}: accuracy.chance_level: expected an fp32 model above chance"), err
    assert snapshot(root / "results" / "chance") == before  # the first run's results are all still there


def test_config_hash_counts_the_weights_files_contents(tmp_path, write_workload):
    reference = write_workload({"name": "hashed"})
    first = untrained_weights(tmp_path / "a.pt", reference)
    shutil.copy(first, tmp_path / "b.pt")
    hashes = {}
    for name in ("a", "b"):
        hashes[name] = Study(write_workload({"name": "hashed", "model": {"weights": str(tmp_path / f"{name}.pt")}},
                                            name=f"{name}.yaml")).config_hash
    assert hashes["a"] == hashes["b"], "the same weights under another name are the same configuration"
    state = torch.load(first, weights_only=True)
    state["classifier.bias"] += 1.0
    torch.save(state, first)
    changed = Study(write_workload({"name": "hashed", "model": {"weights": str(first)}}, name="a.yaml")).config_hash
    assert changed != hashes["a"], "new weights under the same name are a new configuration"


def test_boundary_values_run(write_workload, capsys):
    """Every numeric key at an extreme the schema allows: the search runs to the end."""
    path = write_workload({"name": "extremes",
                           "model": {"train": {"epochs": 1, "seed": MAX_SEED, "momentum": 1.0, "weight_decay": 0.0}},
                           "datasets": {"calibration": {"sample_limit": 1, "batch_size": 1, "seed": MAX_SEED,
                                                        "randomize": True}},
                           "calibration": {"method": "percentile", "percentile": 50.0, "num_bins": 16},
                           "search": {"pop_size": 2, "offsprings": 1, "generations": 2, "seed": MAX_SEED,
                                      "crossover_prob": 1.0, "crossover_eta": 0.0, "mutation_prob": 1.0,
                                      "mutation_eta": 0.0, "bits": {"lower": 2, "upper": 2},
                                      "minimum_accuracy": 0.0}})
    assert main(["explore", str(path)]) == 0, capsys.readouterr().err
    assert "best (the cheapest point that meets the constraint on held-out data): point 0" in capsys.readouterr().out


def test_the_default_workload_ships_in_a_non_editable_install(tmp_path):
    """Build the wheel from a copy of the sources (never into the repository, never into the
    shared environment), install it into a folder, and load the default study from there."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sw", "energy", "cosim", "workloads"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    run = dict(capture_output=True, text=True, timeout=300)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], **run)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                                str(tmp_path / "site"), str(wheel)], **run)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = ("import sw, sw.config.workload as w; print(sw.__file__); p = w.default_workload_path(); print(p); "
             "print(w.load_workload(None).name)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, **run)
    assert proc.returncode == 0, proc.stderr
    module, default, name = proc.stdout.split()
    assert module.startswith(str(tmp_path / "site")) and default.startswith(str(tmp_path / "site"))
    assert name == "digits_cnn"
    assert Path(default).read_bytes() == (REPO / "workloads" / "digits_cnn.yaml").read_bytes()
