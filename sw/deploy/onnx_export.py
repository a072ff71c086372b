"""QDQ ONNX export of a DeployGraph, and running it in onnxruntime.

Every quantizer becomes `QuantizeLinear -> [Clip] -> DequantizeLinear` (the QDQ format
TensorRT, onnxruntime and most compilers read); every quantized layer's weights are stored as
integer codes (an int8 initializer for b <= 8 bits) followed by `DequantizeLinear` (per
channel: `axis=0`), so the file carries the deployable integers, not fp32 weights.

Bit widths below 8 are carried in int8 / uint8 containers with clipped ranges: `QuantizeLinear`
saturates to the container, then `Clip` to the b-bit code range [lo, hi] (narrow range and
zero points included), then `DequantizeLinear`. Why not QONNX-style custom `Quant` ops: stock
onnxruntime cannot run them (a custom-op library would be needed) and neither can TensorRT or
other QDQ consumers, whereas Q -> Clip -> DQ is standard ONNX (opset 13), runs everywhere, and
a backend that supports b-bit types reads b from the Clip bounds. 9-16 bit codes use int16 /
uint16 containers (opset 21) with the clip applied in float before quantizing (onnxruntime has
no int16 Clip). Weight codes of layers at <= 4 bits are INT4 / UINT4 initializers (opset 21: two
codes a byte, the first in the low nibble, i.e. `sw.deploy.packing.pack_codes` at 4 bits into
8-bit words), 5-8 bits int8 / uint8, above 8 bits int32.

ONNX quantizes with `round(x / y_scale)` and dequantizes with `q * y_scale`, where
pytorch-quantization computes `round(x * scale)` and `q / scale`; `y_scale` is the fp32
`1 / scale`, so values can differ in the last bits of fp32 and, rarely, a code by one:
`sw.deploy.verification` measures it per tensor and in accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from sw.core.durable import atomic_write
from sw.deploy.lowering import DeployGraph, Op, UnsupportedOp
from sw.deploy.packing import pack_codes
from sw.quant.presets import QuantParams

INPUT, OUTPUT = "input", "logits"


def _container(lo: int, hi: int) -> tuple[int, int, int, int]:
    """(ONNX element type, its min, its max, opset needed) holding codes in [lo, hi]."""
    if lo >= 0 and hi <= 255:
        return TensorProto.UINT8, 0, 255, 13
    if lo >= -128 and hi <= 127:
        return TensorProto.INT8, -128, 127, 13
    if lo >= 0 and hi <= 65535:
        return TensorProto.UINT16, 0, 65535, 21
    if lo >= -32768 and hi <= 32767:
        return TensorProto.INT16, -32768, 32767, 21
    raise UnsupportedOp(f"codes in [{lo}, {hi}] need more than 16 bits")


_NP = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8, TensorProto.UINT16: np.uint16,
       TensorProto.INT16: np.int16, TensorProto.INT32: np.int32}


def _y_scale(p: QuantParams) -> np.ndarray:
    """ONNX's y_scale: fp32 1/scale (1 where the scale is 0: those codes are all 0)."""
    scale = p.scale.float().numpy()
    return np.where(scale > 0, np.float32(1.0) / np.where(scale > 0, scale, np.float32(1.0)),
                    np.float32(1.0)).astype(np.float32)


class _Emitter:
    def __init__(self, graph: DeployGraph, expose: bool):
        self.graph, self.expose = graph, expose
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.extra_outputs: list[tuple[str, tuple[int, ...]]] = []
        self.opset = 13
        self.names: dict[str, str] = {}  # DeployGraph value -> ONNX tensor name

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const4(self, name: str, codes: np.ndarray, etype: int) -> str:
        """An INT4 / UINT4 initializer: two codes a byte, the first in the low nibble (opset 21)."""
        codes = np.asarray(codes)
        self.inits.append(helper.make_tensor(name, etype, list(codes.shape), pack_codes(codes, 4, 8).tobytes(),
                                             raw=True))
        self.opset = max(self.opset, 21)
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))  # unnamed: the output names it
        return output

    def emit(self) -> onnx.ModelProto:
        outputs = []
        for op in self.graph.ops:
            if op.kind == "input":
                self.names[op.name] = INPUT
            elif op.kind == "output":
                self.node("Identity", [self.names[op.inputs[0]]], OUTPUT)
                last = next(o for o in self.graph.ops if o.name == op.inputs[0])
                outputs.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", *last.shape[1:]]))
            else:
                self.names[op.name] = getattr(self, f"_{op.kind}")(op, [self.names[i] for i in op.inputs])
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *shape[1:]])
                    for n, shape in self.extra_outputs]
        shape = ["batch", *self.graph.input_shape]
        inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)]
        graph = helper.make_graph(self.nodes, "mpq_qdq", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="mpq-codesign sw.deploy")
        model.ir_version = 10 if self.opset >= 21 else 8
        onnx.checker.check_model(model)
        return model

    # -- operations ---------------------------------------------------------------------------
    def _quant(self, op: Op, x: list[str]) -> str:
        p: QuantParams = op.attrs["params"]
        base = op.attrs["quantizer"]
        if float(p.scale.max()) == 0.0:  # pytorch-quantization: amax <= 2^-24 gives all-zero codes
            return self.node("Mul", [x[0], self.const(f"{base}.zero", np.float32(0.0))], f"{base}.dq")
        etype, cmin, cmax, opset = _container(p.lo, p.hi)
        self.opset = max(self.opset, opset)
        scale = self.const(f"{base}.y_scale", _y_scale(p).reshape(()))
        zp = self.const(f"{base}.y_zero_point", np.array(int(p.zero_point), dtype=_NP[etype]))
        src = x[0]
        narrow = (p.lo, p.hi) != (cmin, cmax)
        if narrow and etype in (TensorProto.INT16, TensorProto.UINT16):  # no int16 Clip in onnxruntime
            y = _y_scale(p).reshape(())
            lo = self.const(f"{base}.clip_lo", np.float32((p.lo - int(p.zero_point)) * y))
            hi = self.const(f"{base}.clip_hi", np.float32((p.hi - int(p.zero_point)) * y))
            src = self.node("Clip", [src, lo, hi], f"{base}.fclip")
            narrow = False
        q = self.node("QuantizeLinear", [src, scale, zp], f"{base}.q")
        if narrow:
            lo = self.const(f"{base}.lo", np.array(p.lo, dtype=_NP[etype]))
            hi = self.const(f"{base}.hi", np.array(p.hi, dtype=_NP[etype]))
            q = self.node("Clip", [q, lo, hi], f"{base}.clip")
        out = self.node("DequantizeLinear", [q, scale, zp], f"{base}.dq")
        if self.expose:
            self.extra_outputs.append((out, op.shape))
        return out

    def _weights(self, op: Op) -> str:
        p: QuantParams = op.attrs["weight_params"]
        codes = op.attrs["weight"].numpy()
        layer = op.attrs["layer"]
        try:
            etype = _container(int(codes.min(initial=p.lo)), int(codes.max(initial=p.hi)))[0]
        except UnsupportedOp:
            etype = TensorProto.INT32
        if etype in (TensorProto.INT16, TensorProto.UINT16):
            etype = TensorProto.INT32  # DequantizeLinear takes int32 at opset 13
        lo, hi = int(codes.min(initial=p.lo)), int(codes.max(initial=p.hi))
        four = TensorProto.INT4 if -8 <= lo and hi <= 7 else TensorProto.UINT4 if 0 <= lo and hi <= 15 else None
        y = _y_scale(p)
        zp = p.zero_point.numpy()
        shape = (-1,) if p.axis is not None else ()
        if p.bits <= 4 and four is not None:
            w = self.const4(f"{layer}.weight_codes", codes, four)
            z = self.const4(f"{layer}.weight_zero_point", zp.reshape(shape), four)
        else:
            w = self.const(f"{layer}.weight_codes", codes.astype(_NP[etype]))
            z = self.const(f"{layer}.weight_zero_point", zp.astype(_NP[etype]).reshape(shape))
        s = self.const(f"{layer}.weight_scale", y.reshape(shape))
        if p.axis is not None:
            return self.node("DequantizeLinear", [w, s, z], f"{layer}.weight", axis=int(p.axis))
        return self.node("DequantizeLinear", [w, s, z], f"{layer}.weight")

    def _conv(self, op: Op, x: list[str]) -> str:
        a = op.attrs
        inputs = [x[0], self._weights(op)]
        if a["bias"] is not None:
            inputs.append(self.const(f"{a['layer']}.bias", a["bias"].numpy().astype(np.float32)))
        kernel = list(a["weight"].shape[2:])
        (ph, pw) = a["padding"]
        return self.node("Conv", inputs, op.name, kernel_shape=kernel, strides=list(a["stride"]),
                         pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=int(a["groups"]))

    def _linear(self, op: Op, x: list[str]) -> str:
        a = op.attrs
        inputs = [x[0], self._weights(op)]
        if a["bias"] is not None:
            inputs.append(self.const(f"{a['layer']}.bias", a["bias"].numpy().astype(np.float32)))
        return self.node("Gemm", inputs, op.name, transB=1)

    def _bn(self, op: Op, x: list[str]) -> str:
        """Inference batch norm as PyTorch's CPU kernel computes it: x * alpha + beta with, in fp32,
        alpha = gamma / sqrt(var + eps) and beta = beta - mean * alpha (two per-channel constants, not four)."""
        a = {k: op.attrs[k].numpy().astype(np.float32) for k in ("gamma", "beta", "mean", "var")}
        invstd = np.float32(1) / np.sqrt(a["var"] + np.float32(op.attrs["eps"]))
        alpha = (invstd * a["gamma"]).astype(np.float32)
        beta = (a["beta"] - a["mean"] * alpha).astype(np.float32)
        shape = (-1, *([1] * (len(op.shape) - 2)))
        y = self.node("Mul", [x[0], self.const(f"{op.name}.alpha", alpha.reshape(shape))], f"{op.name}.scaled")
        return self.node("Add", [y, self.const(f"{op.name}.beta", beta.reshape(shape))], op.name)

    def _relu(self, op: Op, x: list[str]) -> str:
        return self.node("Relu", x, op.name)

    def _relu6(self, op: Op, x: list[str]) -> str:
        return self.node("Clip", [x[0], self.const(f"{op.name}.lo", np.float32(0)),
                                  self.const(f"{op.name}.hi", np.float32(6))], op.name)

    def _maxpool(self, op: Op, x: list[str]) -> str:
        a = op.attrs
        (ph, pw) = a["padding"]
        return self.node("MaxPool", x, op.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                         pads=[ph, pw, ph, pw], dilations=list(a["dilation"]))

    def _avgpool(self, op: Op, x: list[str]) -> str:
        a = op.attrs
        before = next(o for o in self.graph.ops if o.name == op.inputs[0]).shape
        if tuple(a["kernel"]) == tuple(before[2:]) and a["padding"] == (0, 0):
            return self.node("GlobalAveragePool", x, op.name)
        (ph, pw) = a["padding"]
        return self.node("AveragePool", x, op.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                         pads=[ph, pw, ph, pw], count_include_pad=1)

    def _flatten(self, op: Op, x: list[str]) -> str:
        return self.node("Flatten", x, op.name, axis=int(op.attrs["start_dim"]))

    def _add(self, op: Op, x: list[str]) -> str:
        return self.node("Add", x, op.name)

    def _sub(self, op: Op, x: list[str]) -> str:
        return self.node("Sub", x, op.name)

    def _mul(self, op: Op, x: list[str]) -> str:
        return self.node("Mul", x, op.name)

    def _cat(self, op: Op, x: list[str]) -> str:
        return self.node("Concat", x, op.name, axis=int(op.attrs["dim"]))

    def _identity(self, op: Op, x: list[str]) -> str:
        return self.node("Identity", x, op.name)


def to_onnx(graph: DeployGraph, *, expose_quantizers: bool = False) -> onnx.ModelProto:
    """The QDQ model (checked); `expose_quantizers` adds every quantizer's output as a graph output."""
    return _Emitter(graph, expose_quantizers).emit()


def save(model: onnx.ModelProto, path: Path) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return Path(path)


class OnnxRunner:
    """An onnxruntime CPU session of a QDQ model (default graph optimisations, as a user gets them)."""

    def __init__(self, model: onnx.ModelProto, *, threads: int = 1, optimize: bool = True):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.session.run(None, {INPUT: x.float().contiguous().numpy()})
        return {n: torch.from_numpy(np.asarray(v)) for n, v in zip(self.outputs, values)}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[OUTPUT]

    def eval(self) -> "OnnxRunner":  # so sw.evaluation.evaluate.evaluate accepts it
        return self

    def train(self, mode: bool = True) -> "OnnxRunner":
        return self

    training = False


def onnx_run(runner: OnnxRunner, quantizers: Mapping[str, str]):
    """`deployed` for verification.compare: logits and each quantizer's DQ output (address -> tensor name)."""

    def run(x: torch.Tensor):
        out = runner.run(x)
        return out[OUTPUT], {a: out[n] for a, n in quantizers.items() if n in out}

    return run


def exposed_names(graph: DeployGraph) -> dict[str, str]:
    """Quantizer address -> the ONNX tensor name of its dequantized output."""
    return {op.attrs["quantizer"]: f"{op.attrs['quantizer']}.dq" for op in graph.quant_ops()}
