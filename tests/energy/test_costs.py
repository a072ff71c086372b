"""`dram_energy`, energy's cost provider for sw: found by entry point, prices only built tables."""

import inspect
import subprocess
import sys
import types

import tiny_net

from energy.build import build_table
from energy.costs import DRAM_ENERGY
from energy.outputs import write_outputs
from sw.config.workload import load_workload
from sw.search.costs import COSTS


def test_registered_with_sw_by_entry_point():
    provider = COSTS.get("dram_energy")
    assert provider is DRAM_ENERGY
    assert (provider.name, provider.label, provider.unit) == ("dram_energy", "DRAM energy", "uJ")


def tiny_study(tmp_path, energy: str):
    (tmp_path / "tinycost.py").write_text(inspect.getsource(tiny_net))
    path = tmp_path / "w.yaml"
    path.write_text(f"""
name: tinycost
trust_custom_code: true
model: {{name: "tinycost:Tiny", num_classes: 10, input_shape: [3, 8, 8]}}
datasets: {{exploration: {{name: digits, split: val, image_size: 8}}}}
search: {{bits: {{lower: 8, upper: 8}}}}
results: {{dir: {tmp_path / 'results'}}}
{energy}
""")
    workload = load_workload(path)
    return types.SimpleNamespace(workload=workload, name=workload.name)


def test_prices_a_workload_only_once_its_table_is_built(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert DRAM_ENERGY(tiny_study(tmp_path, "")) is None  # no energy section
    cache = tmp_path / "c.sqlite"
    study = tiny_study(tmp_path, f"energy: {{workers: 1, cache: {cache}}}")
    assert DRAM_ENERGY(study) is None and not cache.exists()  # no table built: nothing is computed
    table, _ = build_table(study.workload)
    write_outputs(study.workload, table)
    cost = DRAM_ENERGY(study)
    assert cost(table.uniform(8)) == table.lookup(table.uniform(8), "dram_energy") > 0


def test_engine_worker_processes_do_not_import_torch():
    """A table build's workers import what a task needs (energy.pool, the engines, the geometry):
    torch (seconds per worker, and import-time warnings) must not be part of it."""
    code = ("import sys, energy.pool, energy.engines.zigzag, energy.engines.timeloop, energy.layers; "
            "print([m for m in ('torch', 'matplotlib') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr
