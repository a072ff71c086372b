"""Co-simulation: real tensors of a trained tiny CNN through the simulated RTL (Icarus).

CI runs the reduced cosim (one layer, a few thousand elements, and a small layer under heavy
back-pressure); the full default-workload run is `make cosim` / `nox -s cosim`.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from cosim.comparison import unpack_codes
from cosim.cosimulation import run_cosim
from sw.study.study import Study

FIRST_CONV = "features.0.0"


def bigint_pack(codes, bits: int, word_bits: int) -> list[int]:
    """Independent packer: one arbitrary-precision integer, value i at bits [i*b, i*b+b)."""
    stream = 0
    for i, c in enumerate(codes):
        stream |= (int(c) & ((1 << bits) - 1)) << (i * bits)
    n_words = -(-len(codes) * bits // word_bits)
    return [(stream >> (k * word_bits)) & ((1 << word_bits) - 1) for k in range(n_words)]


@pytest.mark.parametrize("word_bits", [16, 32, 64])
def test_unpack_codes_reads_the_documented_layout(word_bits):
    rng = np.random.default_rng(word_bits)
    for bits in (1, 2, 3, 5, 8, 11, 16):
        for signed in ((False, True) if bits > 1 else (False,)):
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            codes = rng.integers(lo, hi + 1, size=rng.integers(1, 200))
            words = np.array(bigint_pack(codes, bits, word_bits), dtype=np.uint64)
            assert np.array_equal(unpack_codes(words, codes.size, bits, word_bits, signed), codes)


@pytest.fixture(scope="module")
def tiny_study(tiny_workload):
    """A Study of the tiny workload (trained digits CNN, max calibration), built once."""
    return Study(tiny_workload)


def test_reduced_cosim_is_bit_exact_on_a_real_layer(tiny_study):
    result = run_cosim(tiny_study, tiny_study.uniform_bits(6), layers=[FIRST_CONV], images=1,
                       work_dir=tiny_study.results_dir / "sim")
    layer = tiny_study.quantized_model.layers()[FIRST_CONV]
    rows = {r.tensor: r for r in result.rows}
    assert set(rows) == {"input", "weight"}
    assert rows["weight"].elements == layer.weight.numel()
    assert rows["weight"].segments == layer.out_channels  # per-channel scales, one stream per channel
    assert rows["input"].elements == int(np.prod(tiny_study.workload.model.input_shape))
    assert result.elements > 3000
    for r in result.rows:
        assert r.bits == 6
        assert (r.code_mismatches, r.value_mismatches) == (0, 0), r
        assert r.words_rtl == r.words_model > 0
        assert r.cycles >= r.elements  # one value per cycle at best
    assert result.ok


@pytest.mark.parametrize("fault", ["scale", "rounding"])
def test_a_wrong_reference_makes_cosim_fail(tiny_study, fault):
    result = run_cosim(tiny_study, tiny_study.uniform_bits(6), layers=[FIRST_CONV], images=1, fault=fault,
                       work_dir=tiny_study.results_dir / "sim")
    assert not result.ok
    assert sum(r.code_mismatches for r in result.rows) > 0
    assert all(r.words_rtl == r.words_model for r in result.rows)  # the RTL itself did not change


def test_mixed_bits_under_heavy_back_pressure(tiny_study):
    bits = tiny_study.uniform_bits(8)
    bits["classifier"] = (3, 5)  # separate weight / input bits, odd widths straddle words
    result = run_cosim(tiny_study, bits, layers=["classifier"], images=4, stalls="heavy", word_bits=16, seed=3,
                       work_dir=tiny_study.results_dir / "sim")
    rows = {r.tensor: r for r in result.rows}
    assert (rows["weight"].bits, rows["input"].bits) == (3, 5)
    assert result.ok, [r.as_dict() for r in result.rows]


def test_cli_writes_the_report_and_exits_non_zero_on_mismatch(tiny_study, tmp_path):
    path = tiny_study.workload.path
    out = tmp_path / "report.csv"
    base = [sys.executable, "-m", "cosim", str(path), "--layers", "classifier", "--images", "2", "--out", str(out)]
    ok = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "total run time" in ok.stdout
    rows = list(csv.DictReader(out.open()))
    assert [r["tensor"] for r in rows] == ["input", "weight"]
    assert all(r["ok"] == "True" and r["code_mismatches"] == "0" for r in rows)
    bad = subprocess.run([*base, "--inject", "rounding"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "MISMATCH" in bad.stdout and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--point", "best"], "no results database"),
    (["--point", "fastest"], "--point: expected int8, best, a Pareto row index, ilp:best or ilp:N"),
    (["--layers", "no_such_layer"], "unknown layer(s) no_such_layer"),
    (["--images", "0"], "--images: expected a count >= 1"),
])
def test_bad_arguments_are_one_line(tiny_study, args, message):
    proc = subprocess.run([sys.executable, "-m", "cosim", str(tiny_study.workload.path), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("point", ["int8", "best"])
def test_full_default_workload_cosim(point):
    """The acceptance run (on demand: `pytest -m slow tests/test_cosim.py`); `best` needs `make explore` first."""
    study = Study()
    if point == "best" and not study.db_path.exists():
        pytest.skip("run `make explore` first: no Pareto front of the default workload yet")
    from cosim.cosimulation import select_point

    result = run_cosim(study, select_point(study, point), point=point)
    assert result.elements >= 100_000
    assert result.ok, [r.as_dict() for r in result.rows if not r.ok]
