"""The energy-aware problem plugin: registered, and its cost is the energy table's lookup."""

import inspect
import types

import pytest
import tiny_net

from energy.build import build_table
from sw.search.plugin import PROBLEMS, check_plugin
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.config.workload import load_workload


def test_registered_with_all_plugin_functions():
    plugin = check_plugin(PROBLEMS.get("energy_aware_quant_problem"), "energy_aware_quant_problem")
    assert plugin.sampling_method is PROBLEMS.get("quantization_problem").sampling_method


def test_cost_is_the_table_lookup_in_microjoules(tmp_path, monkeypatch):
    (tmp_path / "tinyprob.py").write_text(inspect.getsource(tiny_net))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "w.yaml"
    path.write_text(f"""
name: tinyprob
problem: energy_aware_quant_problem
trust_custom_code: true
model: {{name: "tinyprob:Tiny", num_classes: 10, input_shape: [3, 8, 8]}}
datasets: {{exploration: {{name: digits, split: val, image_size: 8}}}}
quantization: {{explore: separate}}
search: {{bits: {{lower: 8, upper: 8}}}}
energy: {{objective: dram_energy, workers: 1, cache: {tmp_path / 'c.sqlite'}}}
results: {{dir: {tmp_path / 'results'}}}
""")
    workload = load_workload(path)
    from tinyprob import Tiny as TinyFromFile

    qmodel = QuantizedModel(TinyFromFile(10), [3, 8, 8], QuantSettings())
    study = types.SimpleNamespace(workload=workload, progress=False)
    plugin = PROBLEMS.get("energy_aware_quant_problem")
    cost, name = plugin.energy_cost(study, qmodel)
    assert name == "dram_energy_uj"
    table, stats = build_table(workload)
    assert stats.misses == 0                      # the plugin filled the cache
    bits = qmodel.layer_bits()
    assert set(bits) == set(table.layer_names)
    assert cost(bits) == pytest.approx(table.lookup(bits, "dram_energy_pj") / 1e6)
    assert cost(bits) > 0
