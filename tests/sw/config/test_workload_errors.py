"""Bad workloads: one clear line naming the file and the key, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sw.cli import main
from sw.config.workload import load_workload

CASES = {
    "missing key": ({"name": None}, "name", "required key"),
    "wrong type": ({"search": {"pop_size": "ten"}}, "search.pop_size", "expected an integer"),
    "unknown key": ({"search": {"popsize": 4}}, "search.popsize", "no such key"),
    "lower above upper": ({"search": {"bits": {"lower": 6, "upper": 4}}}, "search.bits.lower", "lower bound <= upper"),
    "signed lower below 2": ({"search": {"bits": {"lower": 1}}}, "search.bits.lower", "signed integers need >= 2 bits"),
    "upper above 16": ({"search": {"bits": {"upper": 17}}}, "search.bits.upper", "[2, 16]"),
    "unknown model": ({"model": {"name": "resnet9000"}}, "model.name", "registered model"),
    "unknown dataset": ({"datasets": {"exploration": {"name": "mnist"}}}, "datasets.exploration.name", "digits"),
    "unknown phase": ({"datasets": {"testing": {"name": "digits"}}}, "datasets.testing", "no such key"),
    "unknown problem": ({"problem": "sparsity_problem"}, "problem", "quantization_problem"),
    "unknown metric": ({"accuracy": {"metrics": ["top3"]}}, "accuracy.metrics[0]", "top1"),
    "nonexistent path": ({"datasets": {"exploration": {"name": "imagefolder", "path": "/no/such/folder"}}},
                         "datasets.exploration.path", "existing path"),
    "path required": ({"datasets": {"exploration": {"name": "imagefolder"}}}, "datasets.exploration.path", "path"),
    "custom code not trusted": ({"model": {"name": "os:system"}}, "model.name", "trust_custom_code"),
    "bad weighting": ({"search": {"weighting": "magic"}}, "search.weighting", "params_weighted"),
    "accuracy out of range": ({"search": {"minimum_accuracy": 1.5}}, "search.minimum_accuracy", "[0.0, 1.0]"),
    "unknown corruption": ({"datasets": {"exploration": {"name": "digits", "corruption": {"condition": "hail", "severity": 2}}}},
                           "datasets.exploration.corruption.condition", "fog"),
    "severity out of range": ({"datasets": {"exploration": {"name": "digits", "corruption": {"condition": "fog", "severity": 6}}}},
                              "datasets.exploration.corruption.severity", "[1, 5]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_workload_gives_one_clear_line(case, write_workload, capsys):
    changes, key, expected = CASES[case]
    path = write_workload(changes)
    if changes.get("name", "") is None:  # None means: leave the key out
        path.write_text(path.read_text().replace("name: null\n", ""))
    code = main(["explore", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: {key}: "), err
    assert expected in err, err
    assert "Traceback" not in err


def test_invalid_yaml_names_the_line(write_workload, capsys):
    path = write_workload(raw="name: x\nmodel: [unclosed\n")
    assert main(["explore", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line" in err and "valid YAML" in err


def test_missing_workload_file(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_no_traceback_from_a_real_process(write_workload):
    path = write_workload({"search": {"bits": {"lower": 9, "upper": 4}}})
    proc = subprocess.run([sys.executable, "-m", "sw", "explore", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {path}: search.bits.lower: expected a lower bound <= upper bound (4), got 9"]


def test_defaults_are_filled_and_the_embedded_default_is_valid():
    workload = load_workload(None)
    assert workload.name == "digits_cnn"
    assert workload.search.bits.lower >= 2
    assert workload.quantization.explore in ("tied", "separate")
    assert workload.dataset("exploration").name == "digits"


SHIPPED = sorted((Path(__file__).resolve().parents[3] / "workloads").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_workload_is_valid(path):
    workload = load_workload(path)
    assert workload.name == path.stem
    assert workload.search.bits.lower <= workload.search.bits.upper


def test_the_shipped_workloads_were_found():
    assert {"digits_cnn.yaml", "digits_resnet18.yaml"} <= {p.name for p in SHIPPED}
