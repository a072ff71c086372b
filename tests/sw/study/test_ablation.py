"""`python -m sw ablate`: every recipe calibrated and measured on held-out data, CSV + Markdown."""

from __future__ import annotations

import csv

import pytest

from sw.cli import main
from sw.study.ablation import RECIPES, run_ablation
from sw.study.study import Study


def test_ablation_writes_one_held_out_row_per_recipe(write_workload, capsys):
    path = write_workload({"name": "tiny_ablation"})
    assert main(["ablate", str(path), "--bits", "W3A4"]) == 0
    out = capsys.readouterr().out
    study = Study(path)
    folder = study.results_dir / "ablation"
    rows = list(csv.DictReader((folder / "ablation.csv").open()))
    assert [r["recipe"] for r in rows] == ["fp32", *[r.name for r in RECIPES]]
    for row, recipe in zip(rows[1:], RECIPES):
        assert 0.0 <= float(row["heldout_top1"]) <= 1.0
        assert (row["method"], row["bit_allocation"]) == (recipe.calibration["method"],
                                                          str(recipe.calibration["bit_allocation"]))
        assert (row["weight_bits"], row["input_bits"]) == ("3", "4")
        assert float(row["mean_weight_bits"]) <= 3.0
        assert recipe.name in out
    # the naive row is the plain max-calibrated model at W3A4 on the held-out split, measured independently
    naive = study.variant({"calibration": {"method": "max", "file": str(folder / "check.json")}})
    expected = naive.evaluate_bits({n: (3, 4) for n in naive.quantized_model.layer_names}, "reevaluation")
    assert float(rows[1]["heldout_top1"]) == pytest.approx(expected["top1"])
    assert float(rows[0]["heldout_top1"]) == pytest.approx(study.evaluate(study.fp32_model, "reevaluation")["top1"])
    table = (folder / "ablation.md").read_text()
    assert table.count("\n|") == len(rows) + 2 and "W3A4" in table  # header, rule, rows
    # the workload's own calibration file is left alone
    assert not study.workload.calibration_file.exists()


@pytest.mark.parametrize("bits", ["4", "W1A4", "W4A17", "A4W4"])
def test_bad_bits_are_one_line(bits, write_workload, capsys):
    path = write_workload({"name": "tiny_ablation_bad"})
    assert main(["ablate", str(path), "--bits", bits]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --bits: expected") and "\n" not in err


def test_ends_keeps_the_first_and_last_layer_at_their_bits(write_workload, capsys):
    """MQBench's academic setting: first and last layer at 8 bits, the others at the ablated bits."""
    path = write_workload({"name": "tiny_ablation_ends"})
    study = Study(path)
    rows = run_ablation(study, 2, 4, RECIPES[:1], out_dir=study.results_dir / "ends", end_bits=8)
    names = study.quantized_model.layer_names
    check = study.variant({"calibration": {"method": "max", "file": str(study.results_dir / "ends" / "c.json")}})
    bits = {n: (8, 8) if n in (names[0], names[-1]) else (2, 4) for n in names}
    assert float(rows[1]["heldout_top1"]) == pytest.approx(check.evaluate_bits(bits, "reevaluation")["top1"])
    assert "first and last layer W8A8" in (study.results_dir / "ends" / "ablation.md").read_text()
    assert main(["ablate", str(path), "--bits", "W2A4", "--ends", "1"]) == 2
    assert "--ends" in capsys.readouterr().err
