"""The fused fake-quant kernel's build: compiled once into its cache, run on torch's OpenMP
runtime, and a machine without a working compiler still quantizes (the library's passes).
Its values are tested against the library in test_quantized_model.py and test_inference_graph.py."""

from __future__ import annotations

import logging
import os
import sys

import pytest
import torch
from fused_kernel import require_fused_kernel
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor

from sw.model.quantized_model import ActivationQuantizer
from sw.quant import fused_quant


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """The module as in a new process, with an empty kernel cache; afterwards it forgets this
    test's kernel again, so later tests load theirs from the real cache."""
    monkeypatch.setenv("SW_KERNEL_CACHE", str(tmp_path / "kernels"))
    fused_quant.forget()
    yield tmp_path / "kernels"
    fused_quant.forget()


def test_the_kernel_is_compiled_once_into_its_cache(fresh_kernel):
    require_fused_kernel()  # builds it into the empty cache
    assert fused_quant.available()
    built = sorted(fresh_kernel.glob("fused_quant-*.so"))
    assert len(built) == 1 and sorted(fresh_kernel.iterdir()) == built  # no partial build left
    stamp = built[0].stat().st_mtime_ns
    fused_quant.forget()  # a second process finds it
    assert fused_quant.available()
    assert sorted(fresh_kernel.glob("*")) == built and built[0].stat().st_mtime_ns == stamp


def library_and_ours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    desc = QuantDescriptor(num_bits=5, unsigned=False, amax=2.0)
    return TensorQuantizer(desc)(x), ActivationQuantizer(desc)(x)


@pytest.mark.parametrize("compiler", ["/nonexistent/c++", "false"])
def test_without_a_working_compiler_quantizers_run_the_library_passes(compiler, fresh_kernel, monkeypatch, caplog):
    """No compiler, or one that fails: one warning naming why, and the same values (torch passes)."""
    monkeypatch.setenv("CXX", compiler)
    x = torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 3
    with caplog.at_level(logging.WARNING, logger="sw.quant.fused_quant"):
        library, ours = library_and_ours(x)
        library_and_ours(x)
    assert not fused_quant.available()
    assert torch.equal(library.view(torch.int32), ours.view(torch.int32))
    with torch.no_grad():
        assert ActivationQuantizer(QuantDescriptor(num_bits=5, amax=2.0)).fused_forward(x, (0.0, 6.0)) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0], warnings
    assert ("could not compile" if compiler == "false" else "nonexistent") in warnings[0]
    assert not list(fresh_kernel.glob("*.so"))  # nothing half-built left behind


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
def test_the_kernel_runs_on_torchs_openmp_threads(two_threads):
    """The kernel's OpenMP threads are torch's own pool: running it split over 2 threads starts
    no thread (a second OpenMP runtime would start its own pool, competing with torch's)."""
    require_fused_kernel()
    if not fused_quant.uses_openmp():
        pytest.skip("the fused kernel was built without OpenMP here")
    x = torch.randn(1 << 20)
    torch.relu(x)  # torch's pool of 2 exists
    before = _threads()
    for _ in range(3):
        fused_quant.fake_quant(x, 7.0, 7.0, -8.0, 7.0, False, threads=2)
    assert _threads() == before


def test_an_unsigned_quantizer_asked_to_write_over_its_input_still_raises_on_negatives():
    """In place is only taken where nothing can raise: an unsigned quantizer with no ReLU in front
    checks its input as the library does, and leaves it untouched when it raises."""
    require_fused_kernel()
    desc = QuantDescriptor(num_bits=4, unsigned=True, amax=1.5)
    x = torch.rand(3000, generator=torch.Generator().manual_seed(2))
    x[1234] = -0.25
    before = x.clone()
    with torch.no_grad(), pytest.raises(TypeError, match="Negative"):
        ActivationQuantizer(desc).fused_forward(x, None, in_place=True)
    assert torch.equal(x, before)
    x[2345] = float("nan")  # the library's min() is then NaN: nothing raised
    with torch.no_grad():
        ours = ActivationQuantizer(desc).fused_forward(x.clone(), None, in_place=True)
    assert torch.equal(ours.view(torch.int32), TensorQuantizer(desc)(x).view(torch.int32))


def test_the_quiet_command_line_shows_our_warnings_and_not_the_librarys_chatter(tmp_path):
    """`python -m sw ...` without --verbose: pytorch-quantization's import puts absl's handler on the
    root logger and absl's verbosity would then drop every warning, this kernel's included."""
    import subprocess

    script = ("from sw.cli import configure_logging\nconfigure_logging(False)\nimport logging\n"
              "from absl import logging as absl_logging\nfrom pytorch_quantization import nn\n"
              "logging.getLogger('sw.quant.fused_quant').warning('ours')\nabsl_logging.warning('theirs')\n")
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    lines = [line for line in quiet.stderr.splitlines() if "ours" in line or "theirs" in line]
    assert lines == ["WARNING sw.quant.fused_quant: ours"], quiet.stderr


def test_a_non_contiguous_input_takes_the_library_path():
    """The kernel reads memory in order: a transposed or strided activation must not reach it."""
    require_fused_kernel()
    desc = QuantDescriptor(num_bits=4, unsigned=False, amax=2.0)
    x = torch.randn(64, 96, generator=torch.Generator().manual_seed(4)) * 2
    for view in (x.t(), x[:, ::2]):
        assert not view.is_contiguous()
        with torch.no_grad():
            assert ActivationQuantizer(desc).fused_forward(view, (0.0, 6.0)) is None
        ours, library = ActivationQuantizer(desc)(view), TensorQuantizer(desc)(view)
        assert torch.equal(ours.view(torch.int32), library.view(torch.int32))
