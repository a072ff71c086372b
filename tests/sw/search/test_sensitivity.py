"""Sensitivity proxies and the ILP allocation: Hutchinson against the exact Hessian trace of a
quadratic, the Fisher trace against summed squared gradients, Spearman against its definition,
the ILP against brute force, and the two commands on the tiny study."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sw.cli import main
from sw.search.ilp import allocate
from sw.search.sensitivity import fisher_traces, hutchinson_traces, spearman
from sw.study.study import Study


def _quadratic() -> tuple[nn.Module, list]:
    """A bias-free linear layer under squared error: the loss is quadratic in the weight."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3, bias=False))
    mixing = torch.ones(6, 6) + torch.diag(torch.tensor([0.3, 1.0, 2.0, 0.5, 1.5, 0.8]))  # correlated features:
    x = torch.randn(40, 6, generator=g) @ mixing  # a Hessian far from diagonal
    y = torch.randn(40, 3, generator=g)
    return model, [(x, y)]


def test_hutchinson_matches_the_exact_hessian_trace_of_a_quadratic():
    model, batches = _quadratic()
    weight = model[0].weight
    x, y = batches[0]

    def loss_of(w: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x @ w.reshape(3, 6).T, y)

    exact = float(torch.autograd.functional.hessian(loss_of, weight.detach().reshape(-1)).diagonal().sum())
    estimate = hutchinson_traces(model, ["0"], batches, F.mse_loss, samples=400)[0]
    assert estimate == pytest.approx(exact, rel=0.05)


def test_fisher_trace_is_the_summed_squared_gradient():
    model, batches = _quadratic()
    x, y = batches[0]
    grad = torch.autograd.grad(F.mse_loss(model(x), y), model[0].weight)[0]
    assert fisher_traces(model, ["0"], batches, F.mse_loss)[0] == pytest.approx(float((grad ** 2).sum()), rel=1e-6)


def test_spearman_is_the_correlation_of_ranks():
    a, b = [3.0, 1.0, 2.0, 5.0, 4.0], [30.0, 20.0, 10.0, 50.0, 40.0]
    ra, rb = np.array([2, 0, 1, 4, 3]), np.array([2, 1, 0, 4, 3])
    assert spearman(a, b) == pytest.approx(float(np.corrcoef(ra, rb)[0, 1]))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_the_ilp_is_optimal_and_honours_the_budget_on_small_instances():
    rng = np.random.default_rng(0)
    for trial in range(20):
        layers = [f"l{i}" for i in range(3)]
        bits = [2, 4, 8]
        sens = {l: {b: float(rng.random() * 10 / b) for b in bits} for l in layers}
        cost = {l: {b: float(b * rng.integers(1, 5)) for b in bits} for l in layers}
        budget = float(rng.uniform(6, 60))
        best = None
        for choice in itertools.product(bits, repeat=len(layers)):
            if sum(cost[l][b] for l, b in zip(layers, choice)) <= budget:
                value = sum(sens[l][b] for l, b in zip(layers, choice))
                best = value if best is None else min(best, value)
        got = allocate(sens, cost, budget)
        if best is None:
            assert got is None
            continue
        assert sum(cost[l][got[l]] for l in layers) <= budget + 1e-9
        assert sum(sens[l][got[l]] for l in layers) == pytest.approx(best)


def test_sensitivity_then_allocate_on_the_tiny_study(write_workload, capsys):
    path = write_workload({"name": "tiny_sensitivity", "search": {"bits": {"lower": 3, "upper": 5}}})
    assert main(["sensitivity", str(path), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "Spearman" in out
    study = Study(path)
    rows = list(csv.DictReader((study.results_dir / "sensitivity" / "sensitivity.csv").open()))
    assert len(rows) == 3 * len(study.quantized_model.layer_names)
    assert all(float(r["perturbation"]) > 0 for r in rows)
    for layer in study.quantized_model.layer_names:  # fewer bits, larger weight error
        errors = [float(r["perturbation"]) for r in rows if r["layer"] == layer]
        assert errors == sorted(errors, reverse=True)
    assert main(["allocate", str(path), "--budget", "4.0", "3.4"]) == 0
    written = list(csv.DictReader((study.results_dir / "sensitivity" / "allocate_fit_proxy.csv").open()))
    assert [float(r["budget"]) for r in written] == [4.0, 3.4]
    for row in written:
        assert float(row["cost"]) <= float(row["budget"]) + 1e-9
        bits = [int(b) for b in row["bits"].split()]
        assert all(3 <= b <= 5 for b in bits)
        assert float(row["cost"]) == pytest.approx(study.weighted_bits(
            {n: (b, b) for n, b in zip(study.quantized_model.layer_names, bits)}))
