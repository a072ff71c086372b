"""`python -m energy table` end to end on a tiny workload, and its one-line errors."""

import csv
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_net

REPO = Path(__file__).resolve().parents[2]

TINY_MODEL = inspect.getsource(tiny_net)


def workload(tmp_path: Path, energy: str = "") -> Path:
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL)
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
trust_custom_code: true
model: {{name: "tinymodel:Tiny", num_classes: 10, input_shape: [3, 8, 8]}}
datasets:
  exploration: {{name: digits, split: val, image_size: 8}}
search:
  bits: {{lower: 2, upper: 2}}
results: {{dir: {tmp_path / 'results'}}}
{energy}
""")
    return path


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-m", "energy", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_table_then_cache_hits(tmp_path):
    path = workload(tmp_path, "energy: {workers: 2}")
    first = run("table", str(path), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "0 cache hits, 4 computed" in first.stdout     # 2 layers x bit widths {2, 8 (baseline)}
    csv_file = tmp_path / "results" / "tiny" / "energy_table.csv"
    assert csv_file.is_file() and (tmp_path / "results" / "energy_cache.sqlite").is_file()
    assert len(csv_file.read_text().splitlines()) == 1 + 2 * 2 * 2
    # the per-memory CSV partitions each row's energy; the uniform-bits CSV and plot exist
    rows = list(csv.DictReader(csv_file.open()))
    levels = list(csv.DictReader((csv_file.parent / "energy_levels.csv").open()))
    for row in rows:
        key = tuple(row[k] for k in ("layer", "weight_bits", "input_bits", "output_bits"))
        mine = [r for r in levels if tuple(r[k] for k in ("layer", "weight_bits", "input_bits", "output_bits")) == key]
        assert {r["level"] for r in mine} == {"dram", "gb", "rf"}
        for level in ("dram", "gb", "rf"):
            total = sum(float(r["energy_pj"]) for r in mine if r["level"] == level)
            assert total == pytest.approx(float(row[f"{level}_energy_pj"]), rel=1e-5)
    vs_bits = list(csv.DictReader((csv_file.parent / "energy_vs_bits.csv").open()))
    assert [(r["layer"], r["bits"]) for r in vs_bits] == [("conv", "2"), ("fc", "2"), ("conv", "8"), ("fc", "8")]
    assert (csv_file.parent / "energy_vs_bits.png").read_bytes()[:4] == b"\x89PNG"
    assert "DRAM energy per layer" in first.stdout
    second = run("table", str(path), "--no-progress", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "4 cache hits, 0 computed" in second.stdout


@pytest.mark.parametrize("energy, message", [
    ("energy: {accelerator: warp_drive}", "energy.accelerator: expected a shipped accelerator"),
    ("energy: {engine: timeloop, accelerator: some/dir}", "engine 'timeloop' needs Timeloop"),
])
def test_bad_engine_settings_are_one_line(tmp_path, energy, message):
    if "timeloop" in energy:
        from energy.engines.timeloop import missing_parts

        if not missing_parts():
            pytest.skip("Timeloop is installed here")
    result = run("table", str(workload(tmp_path, energy)), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_corrupt_cache_is_one_line_and_kept(tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"\x00garbage" * 64)
    result = run("table", str(workload(tmp_path, f"energy: {{cache: {cache}}}")), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {cache}:") and len(result.stderr.strip().splitlines()) == 1
    assert cache.read_bytes() == b"\x00garbage" * 64


def test_help():
    result = subprocess.run([sys.executable, "-m", "energy", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "table" in result.stdout and "bench" in result.stdout
    assert result.stderr == ""  # the libraries' import-time warnings are silenced before torch is imported


def test_residency_without_fused_pooling_is_a_workload_error(tmp_path):
    from sw.core.errors import WorkloadError
    from sw.config.workload import load_workload

    path = workload(tmp_path, "energy: {residency: true}")
    with pytest.raises(WorkloadError, match="energy.elementwise: expected fused when energy.residency is true") as info:
        load_workload(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
