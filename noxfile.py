"""nox sessions. All of them share the project's one environment (.venv, built by `make venv`):
installing torch per session would cost minutes and gigabytes.

    nox -s explore [-- WORKLOAD [--resume ...]]
    nox -s energy  [-- WORKLOAD]
    nox -s tests   [-- PYTEST ARGS]
    nox -s report  [-- WORKLOAD]
    nox -s sim | synth | cosim | weather | bench
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PY = str(ROOT / ".venv" / "bin" / "python")

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]


def _venv(session: nox.Session) -> None:
    session.run("make", "--no-print-directory", "-C", str(ROOT), "venv", external=True)


def _python(session: nox.Session, *args: str) -> None:
    _venv(session)
    session.run(PY, *args, external=True, env={"PYTHONUNBUFFERED": "1"})


@nox.session
def explore(session: nox.Session) -> None:
    """Run a mixed-precision search (default: the embedded digits study)."""
    _python(session, "-m", "sw", "explore", "--progress", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (what CI runs)."""
    session.run("make", "--no-print-directory", "-C", str(ROOT), "hdl-tools", external=True)
    _python(session, "-m", "pytest", *session.posargs)


@nox.session
def energy(session: nox.Session) -> None:
    """Per-layer DRAM access/energy table of a workload (cached in SQLite)."""
    _python(session, "-m", "energy", "table", *session.posargs)


@nox.session
def weather(session: nox.Session) -> None:
    """Weather sweep over the Pareto front of a workload's exploration."""
    _python(session, "-m", "sw", "weather-sweep", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """The study's HTML report (results/<name>/report/index.html) with PNG, SVG and TikZ figures."""
    _python(session, "-m", "sw", "report", *session.posargs)


@nox.session
def cosim(session: nox.Session) -> None:
    """Real layer tensors through the simulated RTL, compared bit for bit."""
    _python(session, "-m", "cosim", *session.posargs)


@nox.session
def sim(session: nox.Session) -> None:
    """RTL verification (cocotb + pyuvm)."""
    session.run("make", "-C", str(ROOT), "sim", *session.posargs, external=True)


@nox.session
def synth(session: nox.Session) -> None:
    """yosys synthesis matrix with a utilization table."""
    session.run("make", "-C", str(ROOT), "synth", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks: ratios measured side by side in one run."""
    _python(session, "-m", "sw.bench", *session.posargs)
