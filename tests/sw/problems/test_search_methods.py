"""`calibration.search_methods`: the search picks each layer's input clipping method as well as its bits."""

from __future__ import annotations

import csv

import pytest

from sw.cli import main
from sw.quant.adapter import input_quantizer
from sw.study.study import Study

METHODS = ["max", "entropy", "aciq"]


@pytest.fixture
def methods_workload(write_workload):
    return write_workload({"name": "tiny_methods", "calibration": {"method": "max", "search_methods": METHODS}})


def _input_amax(study: Study) -> dict[str, float]:
    return {n: float(input_quantizer(l).amax) for n, l in study.quantized_model.layers().items()}


def test_each_layer_gets_the_chosen_methods_clipping_at_its_bits(methods_workload, tmp_path):
    study = Study(methods_workload)
    layers = study.quantized_model.layer_names
    assert study.variable_names == [f"{n}.bits" for n in layers] + [f"{n}.clipping" for n in layers]
    problem = study.plugin.prepare_exploration_function(study.quantized_model, study, [0.5])
    assert list(problem.xu[len(layers):]) == [len(METHODS) - 1] * len(layers)
    choice = [(i + 1) % len(METHODS) for i in range(len(layers))]
    study.apply([3] * len(layers) + choice)
    chosen = _input_amax(study)
    # each layer's amax is what a plain calibration with that one method gives at 3 bits
    for m, method in enumerate(METHODS):
        single = study.variant({"calibration": {"method": method, "search_methods": None,
                                                "file": str(tmp_path / f"{method}.json")}})
        single.quantized_model.set_layer_bits({n: (3, 3) for n in layers})
        expected = _input_amax(single)
        for name, c in zip(layers, choice):
            if c == m:
                assert chosen[name] == expected[name], (name, method)
        if method == "max":  # plain bits (a baseline) use the calibrated default method
            study.quantized_model.set_layer_bits({n: (3, 3) for n in layers})
            assert _input_amax(study) == expected
    # a fresh study loads every method's clipping from the calibration file (JSON)
    again = Study(methods_workload)
    again.apply([3] * len(layers) + choice)
    assert _input_amax(again) == chosen


def test_a_search_over_bits_and_methods_writes_a_front(methods_workload, capsys):
    assert main(["explore", str(methods_workload)]) == 0
    study = Study(methods_workload)
    rows = list(csv.DictReader((study.results_dir / "front.csv").open()))
    assert rows
    for row in rows:
        for name in study.quantized_model.layer_names:
            assert 0 <= int(row[f"{name}.clipping"]) < len(METHODS)
    # cosim simulates each point with the clipping methods it chose
    from cosim.cosimulation import point_configuration

    layers = study.quantized_model.layer_names
    for index, row in enumerate(rows):
        assert point_configuration(study, str(index))[1] == {n: METHODS[int(row[f"{n}.clipping"])] for n in layers}
    assert point_configuration(study, "int8")[1] == {}


def test_cosim_captures_tensors_with_the_chosen_clipping(methods_workload):
    """cosim captures a point's tensors with the point's own input clipping, not the default."""
    from cosim.capture import capture
    from cosim.cosimulation import real_images

    study = Study(methods_workload)
    layers = study.quantized_model.layer_names
    choice = {n: METHODS[(i + 1) % len(METHODS)] for i, n in enumerate(layers)}  # never all the default
    bits = {n: (3, 3) for n in layers}
    study.apply([3] * len(layers) + [METHODS.index(choice[n]) for n in layers])
    expected = _input_amax(study)
    images = real_images(study, 2)
    captured = {t.quantizer: t for t in capture(study.quantized_model, bits, images, clipping=choice)}
    default = {t.quantizer: t for t in capture(study.quantized_model, bits, images)}
    for name in layers:
        assert float(captured[f"{name}.input"].amax.max()) == pytest.approx(expected[name])
    assert any(float(default[f"{n}.input"].amax.max()) != pytest.approx(expected[n])
               for n in layers if choice[n] != "max")
