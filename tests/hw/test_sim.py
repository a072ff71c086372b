"""Reduced RTL verification in the default test suite (Icarus): every build, every bit
width and word width, fewer values than `make sim`. One run serves all tests here."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TB_DIR = Path(__file__).resolve().parents[2] / "hw" / "tb"
sys.path.insert(0, str(TB_DIR))

import regression as hwrun  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")

BUILDS = [b.name for b in hwrun.all_builds()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    work = tmp_path_factory.mktemp("sim_build")
    results = hwrun.run_suite("icarus", "reduced", seed=1, jobs=2, work=work, quiet=True)
    return work, {r.build.name: r for r in results}


@pytest.mark.parametrize("build", BUILDS)
def test_build_passes(suite, build: str) -> None:
    _, results = suite
    r = results[build]
    assert r.ok, f"{build}: {r.failed}/{r.tests} tests failed {r.note}\n{hwrun.tail(r.log, 60)}"


def test_coverage_goals_hit(suite, capsys) -> None:
    """Observed on the DUT's ports: every bit width x word width under stalls, every value
    class at every width (product midpoints and subnormal results included), every tensor
    layout and boundary, every stall pattern."""
    work, results = suite
    from functional_coverage import Coverage

    cov = Coverage.merged(work / "icarus" / name / "coverage.json" for name in results)
    missing = cov.missing()
    assert {"top.quant", "top.dequant", "packer", "unpacker", "quantizer", "dequantizer"} <= set(cov.units())
    assert not missing, f"{len(missing)} coverage bins missed, e.g. {missing[:5]}"


def test_unknown_build_is_one_clear_error(capsys) -> None:
    assert hwrun.main(["sim", "--only", "no_such_build"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("error: --only 'no_such_build' matches no build")
