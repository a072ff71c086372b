"""Integer-only reference model: what an integer accelerator computes for a searched point.

Every tensor between the input and the output is an int64 torch tensor holding integers, with a
per-channel step and zero point known at build time (real value = (v - zp) * step):

- quantizer outputs are b-bit codes (`clamp(.., lo, hi)`);
- conv / linear multiply codes minus zero points (int64 products, int32-bounded sums) and
  add an integer bias; the accumulator carries F fraction bits (`acc << F` + `round(bias / step)`),
  F per layer as large as keeps every value up to the next requantization below 2^30 in the
  worst case (a static bound from the codes' ranges and the weights: `static_bound` < 2^31, so
  every accumulator fits int32; `max_abs` records what the data reached, `fits_int32`);
- batch norm left unfolded is a per-channel sign and integer offset (its scale moves into the
  step); ReLU is `max(v, zp)`, max pooling is exact, average pooling sums (the 1/N moves into
  the step), cat concatenates, flatten reshapes;
- a quantizer after any of these *requantizes*: `code = clamp(rne((v - zp_in) * m0 >> shift) + zp, lo, hi)`,
  with `m0 * 2^-shift` the 30-bit fixed-point value of `step_in * scale_out` per channel, and
  rne = round half to even in integer arithmetic (int64 intermediate). An add/sub feeding a
  quantizer is fused into one requantization, `rne(sum_i (v_i - zp_i) * m0_i >> shift)`, with
  one shift as large as keeps every product below 2^60, so an operand with a fine step (an
  accumulator) keeps its precision next to one with a coarse step (codes).

No float is touched between `quantize_input` (the boundary: the model-input quantizer's own
fp32 arithmetic on the image, as a camera interface would) and `dequantize_output`.

Where it can differ from the fake-quant model (fp32 throughout, `round(x * scale)`): the fake
model's conv sums are fp32 (relative error ~1e-7), its bias is not rounded to 2^-F of the
accumulator step, and its requantization multiplies in fp32 where this one uses a 30-bit
fixed-point multiplier. A code can differ by one where the fp32 value lies within about 1e-6
of a rounding boundary (x.5); `sw.deploy.verification` counts such codes per tensor. With the
pow2 preset and BN folded every multiplier is an exact power of two (a pure shift).

The program serialises to JSON (operations and integer attributes) + a tensors file
(`torch.load(weights_only=True)`), each tensor in the narrowest integer type that holds it:
`save` / `load`. `load(stem, packed=...)` takes the layers' weight codes from a packed weights
file (`sw.deploy.packed_file`) instead, `use_packed_weights` swaps them in a built model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sw.core.durable import atomic_write, write_text
from sw.core.errors import DataError, first_line
from sw.deploy.lowering import DeployGraph, Op, UnsupportedOp
from sw.deploy.packed_file import PackedWeights, read_packed
from sw.deploy.packing import narrowest_int
from sw.quant.presets import QuantParams

FORMAT = "mpq-integer-model/2"
READABLE = ("mpq-integer-model/1", FORMAT)  # /1 stored every tensor as int64
MULTIPLIER_BITS = 30  # m0 <= 2^30, so |v| < 2^31 times m0 stays below 2^61
SUM_BITS = 60  # fused add/sub: every |v - zp| * m0 < 2^60, so two or three operands sum below 2^62
INT32_MAX = 2 ** 31 - 1
MAX_FRACTION_BITS = 24  # fraction bits an accumulator may carry below the product's step


# -- fixed-point arithmetic ------------------------------------------------------------------------
def fixed_point(multiplier: np.ndarray, shift: np.ndarray | None = None, *,
                limit: int = MULTIPLIER_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(m0, shift) with m0 * 2^-shift ~= multiplier and 0 <= m0 <= 2^30.

    Without `shift`, each element gets the largest shift that keeps m0 below 2^30 (30
    significant bits); with a given (common) shift, only m0 is rounded.
    """
    m = np.asarray(multiplier, dtype=np.float64)
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise UnsupportedOp(f"requantization multiplier {m.reshape(-1)[0]:.3g} is negative or not finite")
    if shift is None:
        with np.errstate(divide="ignore"):
            e = np.floor(np.log2(np.where(m > 0, m, 1.0)))
        shift = MULTIPLIER_BITS - 1 - e
    shift = np.clip(np.asarray(shift), 1, 62).astype(np.int64)
    m0 = np.round(m * np.exp2(shift.astype(np.float64))).astype(np.int64)
    if np.any(m0 > 2 ** limit):
        raise UnsupportedOp(f"requantization multiplier {float(m.max()):.3g} is too large for the fixed-point range")
    return m0, np.broadcast_to(shift, m0.shape).copy()


def rne_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """round(x / 2^shift), ties to even, for int64 x and shift >= 1 (integer arithmetic only)."""
    q = x >> shift
    r = x - (q << shift)
    half = torch.ones_like(shift) << (shift - 1)
    return q + ((r > half) | ((r == half) & ((q & 1) == 1))).to(x.dtype)


def _channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over dim 1 of `like`."""
    return t.reshape(1, -1, *([1] * (like.dim() - 2))) if like.dim() >= 2 else t


def _int(v) -> torch.Tensor:
    return torch.as_tensor(np.asarray(v, dtype=np.int64))


# -- the integer program --------------------------------------------------------------------------
@dataclass
class IntOp:
    """One integer operation: reads `inputs` from the environment, writes `output`."""

    kind: str
    output: str
    inputs: list[str]
    ints: dict[str, Any] = field(default_factory=dict)  # python ints / lists
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # int64 tensors

    def run(self, env: dict[str, torch.Tensor]) -> torch.Tensor:
        x = [env[i] for i in self.inputs]
        t, a = self.tensors, self.ints
        k = self.kind
        if k == "requantize":
            y = rne_shift((x[0] - _channel(t["zp_in"], x[0])) * _channel(t["m0"], x[0]), _channel(t["shift"], x[0]))
            return torch.clamp(y + a["zp"], a["lo"], a["hi"])
        if k == "add_requantize":
            acc = None
            for i, (v, sign) in enumerate(zip(x, a["signs"])):
                term = (v - _channel(t[f"zp_in{i}"], v)) * _channel(t[f"m0_{i}"], v) * sign
                acc = term if acc is None else acc + term
            return torch.clamp(rne_shift(acc, _channel(t["shift"], acc)) + a["zp"], a["lo"], a["hi"])
        if k == "conv":
            acc = _conv(x[0] - _channel(t["zp_in"], x[0]), t["weight"], a)
            return (acc << a["frac_bits"]) + _channel(t["bias"], acc)
        if k == "linear":
            acc = (x[0] - _channel(t["zp_in"], x[0])) @ t["weight"].T
            return (acc << a["frac_bits"]) + t["bias"]
        if k == "affine":
            return (x[0] - _channel(t["zp_in"], x[0])) * _channel(t["sign"], x[0]) + _channel(t["offset"], x[0])
        if k == "relu":
            return torch.maximum(x[0], _channel(t["low"], x[0]))
        if k == "clip":
            return torch.minimum(torch.maximum(x[0], _channel(t["low"], x[0])), _channel(t["high"], x[0]))
        if k == "maxpool":
            return _pool(x[0], a, torch.iinfo(torch.int64).min, "max")
        if k == "sumpool":
            return _pool(x[0], a, t["pad"], "sum")
        if k == "flatten":
            return torch.flatten(x[0], a["start_dim"])
        if k == "add":
            out = None
            for v, sign, i in zip(x, a["signs"], range(len(x))):
                term = (v - _channel(t[f"zp_in{i}"], v)) * sign
                out = term if out is None else out + term
            return out
        if k == "mul":
            return (x[0] - _channel(t["zp_in0"], x[0])) * (x[1] - _channel(t["zp_in1"], x[1]))
        if k == "cat":
            return torch.cat(x, dim=a["dim"])
        if k == "identity":
            return x[0]
        raise ValueError(f"unknown integer operation {k!r}")


def _conv(x: torch.Tensor, w: torch.Tensor, a: dict) -> torch.Tensor:
    """Integer 2-D convolution: zero padding, unfolded patches, int64 matrix products per group."""
    (sh, sw), (ph, pw), (dh, dw), groups = a["stride"], a["padding"], a["dilation"], a["groups"]
    n = x.shape[0]
    oc, cg, kh, kw = w.shape
    x = F.pad(x, (pw, pw, ph, ph))
    patches = x.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)[..., ::dh, ::dw]
    oh, ow = patches.shape[2], patches.shape[3]
    patches = patches.reshape(n, groups, cg, oh, ow, kh, kw).permute(1, 0, 3, 4, 2, 5, 6)
    patches = patches.reshape(groups, n * oh * ow, cg * kh * kw)
    weights = w.reshape(groups, oc // groups, cg * kh * kw).transpose(1, 2)
    out = torch.bmm(patches, weights)  # groups, n*oh*ow, oc/groups
    return out.reshape(groups, n, oh, ow, oc // groups).permute(1, 0, 4, 2, 3).reshape(n, oc, oh, ow)


def _pool(x: torch.Tensor, a: dict, pad, mode: str) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    dh, dw = a.get("dilation", (1, 1))
    if ph or pw:
        if isinstance(pad, torch.Tensor):  # the zero point of each channel: real value 0
            full = _channel(pad, x).expand(x.shape[0], -1, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw).clone()
            full[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
            x = full
        else:
            x = F.pad(x, (pw, pw, ph, ph), value=pad)
    windows = x.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)[..., ::dh, ::dw]
    windows = windows.reshape(*windows.shape[:4], -1)
    return windows.amax(-1) if mode == "max" else windows.sum(-1)


@dataclass
class _Meta:
    """What build time knows about a value: real = (v - zp) * step, per channel (dim 1)."""

    step: np.ndarray  # float64 [C]
    zp: np.ndarray  # int64 [C]
    codes: tuple[int, int] | None = None  # (lo, hi) when the value is a quantizer's codes


class IntegerModel:
    """An integer program built from a DeployGraph (`from_graph`) or a saved file (`load`)."""

    def __init__(self, ops: list[IntOp], input_params: QuantParams, output: str, out_step: np.ndarray,
                 out_zp: np.ndarray, quant_outputs: dict[str, tuple[str, QuantParams]]):
        self.ops, self.input_params, self.output = ops, input_params, output
        self.out_step, self.out_zp = np.asarray(out_step, np.float64), np.asarray(out_zp, np.int64)
        self.quant_outputs = quant_outputs  # quantizer address -> (value name, params)
        self.max_abs: dict[str, int] = {}
        self.static_bound: float | None = None  # largest |value| the program can produce (set when built)

    # -- running ------------------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The boundary: the model-input quantizer's codes of fp32 images (its own fp32 arithmetic)."""
        return self.input_params.codes(x)

    def run(self, codes: torch.Tensor, *, record: bool = False) -> dict[str, torch.Tensor]:
        """The hot path: integers in, every value of the program out (integers only)."""
        env = {"model_input": codes.to(torch.int64)}
        for op in self.ops:
            env[op.output] = op.run(env)
            if record:
                self.max_abs[op.output] = max(self.max_abs.get(op.output, 0), int(env[op.output].abs().max()))
        return env

    def dequantize_output(self, v: torch.Tensor) -> torch.Tensor:
        step = _channel(torch.from_numpy(self.out_step), v)
        zp = _channel(torch.from_numpy(self.out_zp), v)
        return ((v - zp).double() * step).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize_output(self.run(self.quantize_input(x), record=True)[self.output])

    def eval(self) -> "IntegerModel":  # so sw.evaluation.evaluate.evaluate accepts it
        return self

    def train(self, mode: bool = True) -> "IntegerModel":
        return self

    training = False

    @property
    def fits_int32(self) -> bool:
        return all(v <= INT32_MAX for v in self.max_abs.values())

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: DeployGraph) -> "IntegerModel":
        """Build twice: once to bound every value, then with each accumulator's fraction bits."""
        first = _Builder(graph)
        first.build()
        second = _Builder(graph, first.fraction_bits())
        model = second.build()
        model.static_bound = max(second.bound.values())
        return model

    # -- files -------------------------------------------------------------------------------------
    def save(self, stem: Path) -> tuple[Path, Path]:
        stem = Path(stem)
        tensors: dict[str, torch.Tensor] = {}
        ops = []
        for i, op in enumerate(self.ops):
            for k, v in op.tensors.items():
                tensors[f"{i}.{k}"] = _narrowest(v)
            ops.append({"kind": op.kind, "output": op.output, "inputs": op.inputs, "ints": op.ints,
                        "tensors": sorted(op.tensors)})
        quant = {a: {"value": v, **_params_json(p)} for a, (v, p) in self.quant_outputs.items()}
        payload = {"format": FORMAT, "input": _params_json(self.input_params), "output": self.output,
                   "out_step": self.out_step.tolist(), "out_zp": self.out_zp.tolist(), "ops": ops,
                   "quantizers": quant}
        pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
        with atomic_write(pt, "wb") as fh:
            torch.save(tensors, fh)
        write_text(js, json.dumps(payload))
        return pt, js

    @classmethod
    def load(cls, stem: Path, packed: Path | None = None) -> "IntegerModel":
        """The model saved under `stem`; with `packed`, its layers' weights from that packed weights file."""
        stem = Path(stem)
        pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
        try:
            payload = json.loads(js.read_text())
            tensors = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{stem}: expected an integer model ({js.name} + {pt.name}) ({first_line(exc)})") from None
        if payload.get("format") not in READABLE:
            raise DataError(f"{js}: expected an integer model of format {FORMAT}, got {payload.get('format')!r}")
        ops = [IntOp(o["kind"], o["output"], o["inputs"], {k: _tuples(v) for k, v in o["ints"].items()},
                     {k: tensors[f"{i}.{k}"].to(torch.int64) for k in o["tensors"]})  # stored narrow
               for i, o in enumerate(payload["ops"])]
        quant = {a: (e["value"], _params_from_json(e)) for a, e in payload["quantizers"].items()}
        model = cls(ops, _params_from_json(payload["input"]), payload["output"], np.array(payload["out_step"]),
                    np.array(payload["out_zp"]), quant)
        if packed is not None:
            model.use_packed_weights(read_packed(packed))
        return model

    def layer_ops(self) -> dict[str, IntOp]:
        """The conv / linear operations by layer name."""
        return {op.ints["layer"]: op for op in self.ops if op.kind in ("conv", "linear") and "layer" in op.ints}

    def use_packed_weights(self, packed: PackedWeights) -> None:
        """Take every layer's weight codes (minus their zero points) from a packed weights file."""
        layers = self.layer_ops()
        if not layers:
            raise DataError(f"{packed.path}: this integer model names no layers (saved as mpq-integer-model/1?); "
                            f"export it again")
        if set(layers) != set(packed.tensors):
            raise DataError(f"{packed.path}: holds weights of {', '.join(sorted(packed.tensors)) or 'no layers'}; "
                            f"the integer model has {', '.join(sorted(layers))}")
        for name, op in layers.items():
            t = packed.tensors[name]
            if tuple(op.tensors["weight"].shape) != t.shape:
                raise DataError(f"{packed.path}: layer {name} weights are {t.shape}, the integer model's "
                                f"{tuple(op.tensors['weight'].shape)}")
            codes = t.codes().astype(np.int64)
            zp = np.broadcast_to(t.zero_point.reshape(-1), (t.shape[0],)).reshape(-1, *([1] * (codes.ndim - 1)))
            op.tensors["weight"] = torch.from_numpy(codes - zp)  # as `_Builder._layer` stores them


def _narrowest(t: torch.Tensor) -> torch.Tensor:
    """An integer tensor in the narrowest signed torch type (uint8 for 0..255) that holds its values."""
    if t.numel() == 0:
        return t.to(torch.int8)
    dtype = narrowest_int(int(t.min()), int(t.max()))
    if dtype.kind == "u" and dtype.itemsize > 1:
        dtype = narrowest_int(-1, int(t.max()))  # torch has no uint16 / uint32 arithmetic: the signed type
    return t.to(getattr(torch, dtype.name))


def _tuples(v):
    return tuple(v) if isinstance(v, list) and all(isinstance(e, int) for e in v) else v


def _params_json(p: QuantParams) -> dict[str, Any]:
    return {"bits": p.bits, "scale": p.scale.reshape(-1).tolist(), "scale_shape": list(p.scale.shape),
            "zero_point": p.zero_point.reshape(-1).tolist(), "lo": p.lo, "hi": p.hi, "axis": p.axis}


def _params_from_json(e: dict[str, Any]) -> QuantParams:
    shape = e["scale_shape"]
    return QuantParams(e["bits"], torch.tensor(e["scale"], dtype=torch.float32).reshape(shape),
                       torch.tensor(e["zero_point"], dtype=torch.int64).reshape(shape), e["lo"], e["hi"], e["axis"])


class _Builder:
    """Walks a DeployGraph once, tracking each value's step and zero point, emitting IntOps."""

    def __init__(self, graph: DeployGraph, frac_bits: dict[str, int] | None = None):
        self.graph = graph
        self.frac_bits = frac_bits or {}
        self.bound: dict[str, float] = {}  # static bound of |v| of every value
        self.owner: dict[str, frozenset[str]] = {}  # layers whose accumulator flows into the value unrequantized
        self.meta: dict[str, _Meta] = {}
        self.ops: list[IntOp] = []
        self.pending: dict[str, Op] = {}  # add/sub ops fused into the quantizer that follows them
        self.quant_outputs: dict[str, tuple[str, QuantParams]] = {}
        self.by_name = {op.name: op for op in graph.ops}

    def build(self) -> IntegerModel:
        ops = self.graph.ops
        if ops[0].kind != "input" or ops[1].kind != "quant" or ops[1].inputs != ["input"]:
            raise UnsupportedOp("the deploy graph must start with the model-input quantizer")
        first = ops[1].attrs["params"]
        channels = ops[1].shape[1]
        self.meta["model_input"] = _Meta(*self._quant_meta(first, channels), codes=(first.lo, first.hi))
        self.bound["model_input"], self.owner["model_input"] = float(max(abs(first.lo), abs(first.hi))), frozenset()
        self.quant_outputs["model_input"] = ("model_input", first)
        output = None
        for op in ops[2:]:
            if op.kind == "output":
                output = op.inputs[0]
                continue
            self._emit(op)
        if output is None:
            raise UnsupportedOp("the deploy graph has no output")
        if output in self.pending:
            self._materialise(output)
        m = self.meta[output]
        return IntegerModel(self.ops, first, output, m.step, m.zp, self.quant_outputs)

    @staticmethod
    def _quant_meta(p: QuantParams, channels: int) -> tuple[np.ndarray, np.ndarray]:
        scale = p.scale.double().numpy().reshape(-1)
        step = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 1.0)
        return np.broadcast_to(step, (channels,)).copy(), np.broadcast_to(p.zero_point.numpy().reshape(-1),
                                                                           (channels,)).astype(np.int64).copy()

    def _input(self, name: str) -> _Meta:
        if name in self.pending:
            self._materialise(name)
        return self.meta[name]

    def _emit(self, op: Op) -> None:
        k = op.kind
        if k in ("add", "sub"):
            users = self.graph.users(op.name)
            if len(users) == 1 and users[0].kind == "quant":
                self.pending[op.name] = op
                return
            self.pending[op.name] = op
            self._materialise(op.name)
            return
        if k == "quant":
            self._quant(op)
            return
        m = [self._input(i) for i in op.inputs]
        if k in ("conv", "linear"):
            self._layer(op, m[0])
        elif k == "bn":
            a, b = op.attrs["scale"].numpy(), op.attrs["shift"].numpy()
            step = np.abs(a) * m[0].step
            sign = np.sign(a).astype(np.int64)
            step = np.where(step > 0, step, m[0].step)
            offset = np.round(b / step).astype(np.int64)
            self._op("affine", op, {}, {"zp_in": _int(m[0].zp), "sign": _int(sign), "offset": _int(offset)},
                     _Meta(step, np.zeros_like(m[0].zp)),
                     bound=self._zp_bound(op.inputs[0]) + float(np.abs(offset).max(initial=0)))
        elif k == "relu":
            self._op("relu", op, {}, {"low": _int(m[0].zp)}, _Meta(m[0].step, m[0].zp, m[0].codes))
        elif k == "relu6":
            high = m[0].zp + np.round(6.0 / m[0].step).astype(np.int64)
            self._op("clip", op, {}, {"low": _int(m[0].zp), "high": _int(high)}, _Meta(m[0].step, m[0].zp, m[0].codes))
        elif k == "maxpool":
            self._op("maxpool", op, {key: op.attrs[key] for key in ("kernel", "stride", "padding", "dilation")}, {},
                     _Meta(m[0].step, m[0].zp, m[0].codes))
        elif k == "avgpool":
            n = op.attrs["kernel"][0] * op.attrs["kernel"][1]
            self._op("sumpool", op, {key: op.attrs[key] for key in ("kernel", "stride", "padding")},
                     {"pad": _int(m[0].zp)}, _Meta(m[0].step / n, m[0].zp * n),
                     bound=n * max(self.bound[op.inputs[0]], float(np.abs(m[0].zp).max(initial=0))))
        elif k == "flatten":
            shape_in = self.by_name[op.inputs[0]].shape
            if op.attrs["start_dim"] != 1:
                raise UnsupportedOp(f"node {op.name}: flatten from dim {op.attrs['start_dim']} (only 1)")
            spatial = int(np.prod(shape_in[2:])) if len(shape_in) > 2 else 1
            self._op("flatten", op, {"start_dim": 1}, {},
                     _Meta(np.repeat(m[0].step, spatial), np.repeat(m[0].zp, spatial), m[0].codes))
        elif k == "mul":
            self._op("mul", op, {}, {"zp_in0": _int(m[0].zp), "zp_in1": _int(m[1].zp)},
                     _Meta(_broadcast_mul(m[0].step, m[1].step), np.zeros(max(len(m[0].zp), len(m[1].zp)), np.int64)),
                     bound=self._zp_bound(op.inputs[0]) * self._zp_bound(op.inputs[1]))
        elif k == "cat":
            if op.attrs["dim"] != 1:
                raise UnsupportedOp(f"node {op.name}: concatenation along dim {op.attrs['dim']} (only channels)")
            self._op("cat", op, {"dim": 1}, {}, _Meta(np.concatenate([e.step for e in m]),
                                                      np.concatenate([e.zp for e in m])))
        elif k == "identity":
            self._op("identity", op, {}, {}, m[0])
        else:
            raise UnsupportedOp(f"node {op.name}: operation {k!r} has no integer form")

    def _op(self, kind: str, op: Op, ints: dict, tensors: dict, meta: _Meta, inputs: list[str] | None = None,
            bound: float | None = None) -> None:
        inputs = inputs or list(op.inputs)
        self.ops.append(IntOp(kind, op.name, inputs, ints, tensors))
        self.meta[op.name] = meta
        if bound is None:  # value-preserving operations (relu, max pooling, flatten, cat, identity)
            bound = max(max(self.bound[i], float(np.abs(self.meta[i].zp).max(initial=0))) for i in inputs)
        self.bound[op.name] = float(bound)
        self.owner[op.name] = frozenset().union(*(self.owner[i] for i in inputs))

    def _layer(self, op: Op, m: _Meta) -> None:
        if m.codes is None:
            raise UnsupportedOp(f"layer {op.attrs['layer']}: its input is not quantized (input quantizer disabled)")
        wp: QuantParams = op.attrs["weight_params"]
        weight = op.attrs["weight"].to(torch.int64)
        oc = weight.shape[0]
        wscale = np.broadcast_to(wp.scale.double().numpy().reshape(-1), (oc,))
        wstep = np.where(wscale > 0, 1.0 / np.where(wscale > 0, wscale, 1.0), 1.0)
        wzp = np.broadcast_to(wp.zero_point.numpy().reshape(-1), (oc,)).astype(np.int64)
        weight = weight - _int(wzp).reshape(-1, *([1] * (weight.dim() - 1)))
        if len(np.unique(m.step)) != 1:
            raise UnsupportedOp(f"layer {op.attrs['layer']}: per-channel input steps")
        frac = self.frac_bits.get(op.attrs["layer"], 0)
        step = m.step[0] * wstep / 2.0 ** frac
        bias = op.attrs["bias"]
        bias_int = np.round(bias.double().numpy() / step).astype(np.int64) if bias is not None else np.zeros(oc, np.int64)
        ints = {k: op.attrs[k] for k in ("stride", "padding", "dilation", "groups")} if op.kind == "conv" else {}
        ints["frac_bits"] = frac
        ints["layer"] = op.attrs["layer"]
        x_max = float(max(abs(m.codes[0] - m.zp.min()), abs(m.codes[1] - m.zp.min()),
                          abs(m.codes[0] - m.zp.max()), abs(m.codes[1] - m.zp.max())))
        w_sum = weight.abs().reshape(oc, -1).sum(1).double().numpy()
        bound = float((w_sum * x_max * 2.0 ** frac + np.abs(bias_int)).max())
        self._op(op.kind, op, ints, {"zp_in": _int(m.zp), "weight": weight, "bias": _int(bias_int)},
                 _Meta(step, np.zeros(oc, np.int64)), bound=bound)
        self.owner[op.name] = frozenset([op.attrs["layer"]])

    def _quant(self, op: Op) -> None:
        p: QuantParams = op.attrs["params"]
        if p.axis is not None:
            raise UnsupportedOp(f"quantizer {op.attrs['quantizer']}: per-channel activation quantization")
        scale = float(p.scale)
        zp = int(p.zero_point)
        channels = op.shape[1] if len(op.shape) > 1 else 1
        ints = {"zp": zp, "lo": p.lo, "hi": p.hi}
        src = op.inputs[0]
        if src in self.pending:  # fused add/sub + requantize
            add = self.pending.pop(src)
            metas = [self._input(i) for i in add.inputs]
            multipliers = [np.broadcast_to(e.step * scale, (channels,)) for e in metas]
            # one shift for all operands, as large as every |v - zp| * m0 < 2^60 allows: the operand
            # with the smallest step (an accumulator) keeps its precision next to one with a coarse step
            reach = np.maximum.reduce([self._zp_bound(i) * mm for i, mm in zip(add.inputs, multipliers)])
            with np.errstate(divide="ignore"):
                shift = np.floor(SUM_BITS - np.log2(np.where(reach > 0, reach, 1.0))).astype(np.int64)
            tensors = {}
            for i, (e, mm) in enumerate(zip(metas, multipliers)):
                m0, common = fixed_point(mm, shift, limit=SUM_BITS)
                tensors[f"m0_{i}"], tensors[f"zp_in{i}"] = _int(m0), _int(e.zp)
            tensors["shift"] = _int(common)
            signs = [1] + [(-1 if add.kind == "sub" else 1)] * (len(metas) - 1)
            self.ops.append(IntOp("add_requantize", op.name, list(add.inputs), {**ints, "signs": signs}, tensors))
        else:
            m = self._input(src)
            m0, shift = fixed_point(m.step * scale)
            self.ops.append(IntOp("requantize", op.name, [src], ints,
                                  {"zp_in": _int(m.zp), "m0": _int(m0), "shift": _int(shift)}))
        step, zps = self._quant_meta(p, channels)
        self.meta[op.name] = _Meta(step, zps, codes=(p.lo, p.hi))
        self.bound[op.name], self.owner[op.name] = float(max(abs(p.lo), abs(p.hi))), frozenset()
        self.quant_outputs[op.attrs["quantizer"]] = (op.name, p)

    def _materialise(self, name: str) -> None:
        """An add/sub whose result no quantizer takes: exact only when every operand has the same step."""
        op = self.pending.pop(name)
        metas = [self._input(i) for i in op.inputs]
        if not all(np.array_equal(metas[0].step, e.step) for e in metas[1:]):
            raise UnsupportedOp(f"node {op.name}: {op.kind} of tensors with different scales and no quantizer "
                                f"after it; use quantization.graph: fx (quantizers after every add)")
        signs = [1] + [(-1 if op.kind == "sub" else 1)] * (len(metas) - 1)
        self._op("add", op, {"signs": signs}, {f"zp_in{i}": _int(e.zp) for i, e in enumerate(metas)},
                 _Meta(metas[0].step, np.zeros_like(metas[0].zp)), bound=sum(self._zp_bound(i) for i in op.inputs))

    def _zp_bound(self, name: str) -> float:
        """Bound of |v - zp| of a value."""
        return self.bound[name] + float(np.abs(self.meta[name].zp).max(initial=0))

    def fraction_bits(self, headroom: int = 1) -> dict[str, int]:
        """Per layer: how many fraction bits its accumulator can carry while every value it flows into
        before the next requantization stays below 2^(31 - headroom) (from this build's bounds at 0 bits)."""
        worst: dict[str, float] = {}
        for name, owners in self.owner.items():
            for layer in owners:
                worst[layer] = max(worst.get(layer, 0.0), self.bound[name])
        limit = 2.0 ** (31 - headroom)
        return {layer: int(min(MAX_FRACTION_BITS, max(0, math.floor(math.log2(limit / max(b, 1.0))))))
                for layer, b in worst.items()}


def _broadcast_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b) if len(a) == len(b) else np.broadcast_to(a, (max(len(a), len(b)),)) * b


def ops_are_integer(model: IntegerModel) -> bool:
    """Every constant of the program is an integer tensor (the hot path holds no float)."""
    return all(not t.is_floating_point() for op in model.ops for t in op.tensors.values())

