"""The workload's `device`: resolution, one-line errors, and every path that places models or data.

Without CUDA (this project's CI) a path that honours the device is shown by asking for `cuda`:
each entry point (the fp32 model, a phase's batches, training, a dask worker's problem, the
command line) must stop with the one-line error instead of silently running on the CPU. Placement
itself is checked on the `meta` device (real tensors without storage: a batch or model left on
the CPU shows). The CUDA tests at the end run a tiny study on the GPU and compare it with the CPU;
they skip where torch sees no CUDA device.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from sw.config.workload import load_workload
from sw.core.device import module_device, resolve_device
from sw.core.errors import UserError, WorkloadError
from sw.evaluation.evaluate import Batches
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.nets.models import DigitsCNN
from sw.nets.training import cached_checkpoint, train_and_cache
from sw.problems.quantization_problem import worker_problem
from sw.robustness.run import to_batches
from sw.study.study import Study

NO_CUDA = not torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="checks the errors of a machine without CUDA")
needs_cuda = pytest.mark.skipif(NO_CUDA, reason="no CUDA device: torch.cuda.is_available() is False here")
ABSENT = "device: cuda requested but no CUDA device is available"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A (random, seeded) digits CNN state_dict: the studies here need no training."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.save(DigitsCNN(10).state_dict(), path)
    return str(path)


def test_resolve_names_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", torch.cuda.current_device()) if not NO_CUDA else torch.device("cpu")
    assert resolve_device("auto") == expected
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(UserError, match=r"w\.yaml: device: expected one of auto, cpu, cuda, cuda:N"):
            resolve_device(bad, where="w.yaml")


@needs_no_cuda
def test_cuda_without_a_device_is_one_clear_line():
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(UserError) as info:
            resolve_device(name, where="w.yaml")
        message = str(info.value)
        assert message.startswith(f"w.yaml: device: {name} requested but no CUDA device is available")
        assert "\n" not in message


def test_workload_key_defaults_to_auto_and_refuses_other_names(write_workload, weights):
    assert load_workload(write_workload({"model": {"weights": weights}})).device == "auto"
    assert load_workload(write_workload({"device": "cuda:1"})).device == "cuda:1"  # availability: on use
    with pytest.raises(WorkloadError, match=r"device: expected one of auto, cpu, cuda, cuda:N, got 'gpu'"):
        load_workload(write_workload({"device": "gpu"}))


def test_device_is_not_part_of_the_configuration_hash(write_workload, weights):
    base = {"model": {"weights": weights}}
    hashes = {Study(write_workload({**base, "device": name}, name=f"{i}.yaml")).config_hash
              for i, name in enumerate(("auto", "cpu", "cuda"))}
    assert len(hashes) == 1


@needs_no_cuda
def test_every_entry_point_honours_the_device(write_workload, weights):
    """Asking for CUDA stops each path that places a model or data, so none of them ignores the key."""
    path = write_workload({"model": {"weights": weights}, "device": "cuda"})
    for reach in (lambda s: s.fp32_model, lambda s: s.batches("exploration"), lambda s: s.quantized_model):
        with pytest.raises(UserError, match=ABSENT):
            reach(Study(path))
    with pytest.raises(UserError, match=ABSENT):  # a dask worker builds its study from the workload path
        worker_problem(str(path), (0.5,))
    untrained = write_workload({"device": "cuda"}, name="untrained.yaml")
    with pytest.raises(UserError, match=ABSENT):  # before a single training step
        train_and_cache(load_workload(untrained), DigitsCNN(10))


@needs_no_cuda
def test_command_line_prints_the_error_without_a_traceback(write_workload, weights):
    path = write_workload({"model": {"weights": weights}, "device": "cuda"})
    done = subprocess.run([sys.executable, "-m", "sw", "evaluate", str(path), "--fp32"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {path}: {ABSENT} (torch {torch.__version__} sees none); use device: cpu or auto"]


def test_batches_land_on_the_requested_device():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8).float() / 255.0
    dataset = TensorDataset(images, torch.arange(10))
    for batches in (Batches.from_loader(torch.utils.data.DataLoader(dataset, batch_size=4), device="meta"),
                    to_batches(dataset, 4, torch.device("meta"))):  # the weather sweep's sets
        assert batches.device == torch.device("meta")
        assert {t.device.type for x, y in batches for t in (x, y)} == {"meta"}


def test_quantized_model_is_built_where_the_fp32_model_is():
    """Quantized layers, quantizers and the shape probe follow the fp32 model (here to `meta`; the fx
    graph's probe runs live quantizers, which `meta` cannot: the CUDA test covers it)."""
    qmodel = QuantizedModel(DigitsCNN(10).to("meta"), (3, 32, 32), QuantSettings(graph="modules"))
    assert qmodel.device == torch.device("meta")
    assert {t.device.type for t in qmodel.state_dict().values()} == {"meta"}
    assert [s.name for s in qmodel.layer_sizes] == qmodel.layer_names and len(qmodel.layer_names) == 4


# ---------------------------------------------------------------- on a CUDA device


@needs_cuda
def test_cuda_study_matches_the_cpu(write_workload, weights):
    """A tiny study on CUDA: everything on the GPU, numerics as on the CPU (differences measured)."""
    studies = {name: Study(write_workload({"name": f"tiny_{name}", "model": {"weights": weights}, "device": name},
                                          name=f"{name}.yaml"))  # own names: each calibrates on its device
               for name in ("cpu", "cuda")}
    gpu = studies["cuda"]
    assert gpu.device.type == "cuda"
    assert {t.device.type for t in gpu.quantized_model.state_dict().values()} == {"cuda"}
    assert {t.device.type for x, y in gpu.batches("exploration") for t in (x, y)} == {"cuda"}
    for name, study in studies.items():
        study.quantized_model.set_uniform_bits(4)
    cpu_amax = {a: q.amax.cpu() for a, q in studies["cpu"].quantized_model.iter_quantizers() if q.amax is not None}
    gpu_amax = {a: q.amax.cpu() for a, q in gpu.quantized_model.iter_quantizers() if q.amax is not None}
    assert cpu_amax.keys() == gpu_amax.keys()
    for address in cpu_amax:
        torch.testing.assert_close(gpu_amax[address], cpu_amax[address], rtol=1e-5, atol=1e-6)
    x = next(iter(studies["cpu"].batches("exploration")))[0]
    with torch.no_grad():
        fp32 = (gpu.fp32_model(x.cuda()).cpu() - studies["cpu"].fp32_model(x)).abs().max().item()
    print(f"\nmax |fp32 logits cuda - cpu| = {fp32:.3g}")
    assert fp32 < 1e-3
    for bits in (8, 4):
        metrics = {n: s.evaluate_bits(s.uniform_bits(bits)) for n, s in studies.items()}
        print(f"top1 at {bits} bits: cpu {metrics['cpu']['top1']:.4f}, cuda {metrics['cuda']['top1']:.4f}")
        assert abs(metrics["cuda"]["top1"] - metrics["cpu"]["top1"]) <= 2 / gpu.batches("exploration").num_samples


@needs_cuda
def test_training_runs_on_cuda(write_workload):
    workload = load_workload(write_workload({"device": "cuda", "model": {"train": {"epochs": 1}}}, name="t.yaml"))
    model = DigitsCNN(10)
    train_and_cache(workload, model)
    assert module_device(model).type == "cuda"
    state = torch.load(cached_checkpoint(workload), weights_only=True)
    assert {t.device.type for t in state.values()} == {"cpu"}  # the checkpoint loads anywhere
