"""Backend presets: the quantization rules of a deployment target, applied to every quantizer.

`quantization.preset` in a workload names one of `PRESETS`. A preset is data: which
`QuantSettings` it fixes (per-channel weights, signed/unsigned activations, narrow range) and
which scale rule every quantizer follows:

| preset | weights | activations | scale | zero point | runs on hw/ converter |
| --- | --- | --- | --- | --- | --- |
| `hw` (default) | workload keys (per channel by default) | signed, or unsigned where calibration saw no negative value | fp32 `max_bound / amax` | 0 | yes: what the RTL implements |
| `tensorrt` | per channel, symmetric, narrow [-(2^(b-1)-1), 2^(b-1)-1] | signed narrow (no unsigned) | fp32 `max_bound / amax` | 0 | yes (signed, narrow_range mode) |
| `snpe` | per tensor, asymmetric | per tensor, asymmetric | fp32 `(2^b-1) / (hi - lo)` | `round(-lo * scale)` | no (the RTL has no zero point) |
| `pow2` | like `hw` | like `hw` | `hw`'s scale rounded to 2^k: weights up or down by their error, activations down | 0 | yes, unchanged |

Every rule is a fake quantization of the same shape, `code = clamp(round(x * scale) + zp, lo, hi)`,
`value = (code - zp) / scale` (round half to even, fp32), so the integer model and the ONNX
export (`sw.deploy`) read one description of every quantizer: `quant_params(q)`.

`pow2` and the converter: a power-of-two scale is an fp32 number with a zero mantissa, so the
existing RTL (fp32 multiply, correctly rounded division) already quantizes and dequantizes
with it exactly, without change; a dedicated shift mode would replace the two DSP48 multiplier
and the 13-stage divider by an 8-bit exponent adder (quantize: add k to the exponent, then the
existing round/saturate; dequantize: int-to-float and subtract k), i.e. cheaply, but it is not
implemented in hw/. With pow2 scales, requantization in the integer model is an exact shift.

`snpe`: the asymmetric range of a quantizer is the observed [min, max] (weights: of the
tensor; activations: of the calibration data), clipped to [-amax, amax] of the workload's
calibration method, widened to contain 0 so that 0 is exactly representable (zero point an
integer code).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor

from sw.quant.adapter import QuantizerBase, amax_buffer, calib_method, channel_axis, is_calibrating

_EPSILON = 1.0 / (1 << 24)  # pytorch-quantization: amax at or below this quantizes to 0


@dataclass(frozen=True)
class Preset:
    """What a backend fixes; None leaves the workload's own key."""

    name: str
    description: str
    per_channel_weights: bool | None = None
    unsigned_activations: str | None = None
    narrow_range: bool | None = None
    asymmetric: bool = False
    pow2_scale: bool = False
    converter: bool = True  # the hw/ converter RTL can run it (cosim)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("hw", "the hw/ converter: symmetric, fp32 scale register, signed or unsigned codes, per-tensor or "
                 "per-channel (one SCALE per channel)"),
    Preset("tensorrt", "TensorRT-like: symmetric signed narrow-range int, per-channel weights, fp32 scale",
           per_channel_weights=True, unsigned_activations="never", narrow_range=True),
    Preset("snpe", "SNPE-like: asymmetric per-tensor unsigned codes with a zero point, fp32 scale",
           per_channel_weights=False, unsigned_activations="never", narrow_range=False, asymmetric=True,
           converter=False),
    Preset("pow2", "power-of-two scales (2^k; weights rounded by their error, activations down), otherwise like hw", pow2_scale=True),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve(settings):
    """`QuantSettings` with the preset's fixed keys applied."""
    preset = get_preset(settings.preset)
    fixed = {k: getattr(preset, k) for k in ("per_channel_weights", "unsigned_activations", "narrow_range")
             if getattr(preset, k) is not None}
    return dataclasses.replace(settings, **fixed)


# -- quantizers ------------------------------------------------------------------------------------
def _descriptor(q: TensorQuantizer) -> QuantDescriptor:
    return QuantDescriptor(num_bits=q.num_bits, axis=q.axis, unsigned=q.unsigned, narrow_range=q.narrow_range,
                           calib_method=calib_method(q))


def pow2_amax(amax: torch.Tensor, num_bits: int, unsigned: bool, round_up: torch.Tensor | None = None) -> torch.Tensor:
    """The amax whose pytorch-quantization scale `max_bound / amax` is a power of two 2^k.

    `k = floor(log2(max_bound / amax))` by default: the power-of-two amax is the calibrated amax or
    up to 2x above it (at most one bit of resolution lost, nothing clipped beyond the calibration's
    choice). Where `round_up` is True (per channel, chosen by the error it gives, see
    `Pow2Quantizer.choose_rounding`), `k = ceil(...)`: twice the resolution, clipping to up to 2x below.
    `max_bound * 2^-k` is exact in fp32 and so is `max_bound / (max_bound * 2^-k) = 2^k`: the
    library's own formula (and the RTL's SCALE register) then carries the power of two.
    """
    max_bound = torch.tensor(2.0 ** (num_bits - 1 + int(unsigned)) - 1.0)
    amax = amax.float()
    exponent = torch.log2(max_bound.double() / amax.double().clamp_min(1e-38))
    k = torch.floor(exponent)
    if round_up is not None:
        k = torch.where(round_up.to(torch.bool), torch.ceil(exponent), k)
    out = (max_bound * torch.pow(2.0, -k)).float()
    return torch.where(amax <= _EPSILON, amax, out)


def squared_error(x: torch.Tensor, amax: torch.Tensor, num_bits: int, unsigned: bool, narrow: bool,
                  axis: int | None) -> torch.Tensor:
    """Sum of squared fake-quantization errors of `x` with `amax` (one per channel along `axis`,
    else a scalar): the library's symmetric formula, fp32, round half to even."""
    max_bound = 2.0 ** (num_bits - 1 + int(unsigned)) - 1.0
    lo = 0.0 if unsigned else -max_bound - (0.0 if narrow else 1.0)
    shape = [1] * x.dim()
    if axis is not None and amax.numel() > 1:
        shape[axis] = -1
    amax = amax.float().reshape(shape) if amax.numel() > 1 else amax.float().reshape(())
    scale = torch.where(amax <= _EPSILON, torch.zeros_like(amax), max_bound / amax.clamp_min(_EPSILON))
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(x.float() * scale), lo, max_bound) / safe
    error = (q - x.float()) ** 2
    if axis is None or amax.numel() == 1:
        return error.sum()
    return error.transpose(0, axis).reshape(error.shape[axis], -1).sum(dim=1)


class Pow2Quantizer(QuantizerBase):
    """pytorch-quantization's fake quantization with the scale rounded to a power of two.

    The calibrated (or clipped) amax stays in the amax buffer (`amax_buffer`); `amax` and every
    forward use the power-of-two amax for the current bit width, so changing bits keeps scales 2^k.
    Which way each scale is rounded (`round_up`, per bit width) is chosen at calibration by the
    quantization error it gives (`choose_rounding`; weights, on the weight itself); without a
    choice (activations) the scale rounds down: nothing clipped beyond the calibrated amax.
    """

    def __init__(self, quant_desc: QuantDescriptor = QuantDescriptor(), **kwargs):
        super().__init__(quant_desc, **kwargs)
        self.round_up: dict[int, torch.Tensor] = {}

    @property
    def amax(self):
        raw = amax_buffer(self)
        return None if raw is None else pow2_amax(raw, self.num_bits, self.unsigned, self.round_up.get(self.num_bits))

    @amax.setter
    def amax(self, value):
        TensorQuantizer.amax.fset(self, value)

    def forward_amax(self, inputs):
        raw = super().forward_amax(inputs)
        return pow2_amax(raw, self.num_bits, self.unsigned, self.round_up.get(self.num_bits))

    def choose_rounding(self, bit_widths: range, raw_amax: Callable[[int], torch.Tensor],
                        error: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        """For each bit width, round each scale up or down, whichever gives the smaller `error`.

        `raw_amax(bits)`: the calibrated amax at those bits; `error(amax, bits)`: the quantization
        error of the tensor (or its histogram) with that amax, one value per channel or a scalar.
        """
        self.round_up = {}
        for bits in bit_widths:
            raw = raw_amax(bits).float()
            down = pow2_amax(raw, bits, self.unsigned, torch.zeros_like(raw, dtype=torch.bool))
            up = pow2_amax(raw, bits, self.unsigned, torch.ones_like(raw, dtype=torch.bool))
            self.round_up[bits] = (error(up, bits) < error(down, bits)).reshape(raw.shape)

    # calibration file (sw.model.calibration): the raw amax, not its power of two at today's bits, so a
    # reloaded quantizer rounds to the same 2^k at every bit width; the rounding chosen per bit width
    def extra_calibration(self) -> dict[str, Any]:
        raw = amax_buffer(self)
        entry: dict[str, Any] = {} if raw is None else {"amax": raw.detach().float().tolist()}
        entry["pow2_round_up"] = {str(b): v.int().tolist() for b, v in self.round_up.items()}
        return entry

    def load_extra_calibration(self, entry: dict[str, Any]) -> None:
        raw = amax_buffer(self)
        shape = () if raw is None else raw.shape
        self.round_up = {int(b): torch.tensor(v, dtype=torch.bool).reshape(shape)
                         for b, v in entry.get("pow2_round_up", {}).items()}


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward (straight-through); forward equals torch.round."""
    return x + (torch.round(x) - x).detach()


class AffineQuantizer(QuantizerBase):
    """Asymmetric per-tensor fake quantization with a zero point (the SNPE-like preset).

    Codes are unsigned b-bit integers; `_range_lo`/`_range_hi` hold the observed minimum and
    maximum (collected while calibrating, saved in the calibration file), clipped to
    [-amax, amax] when the calibration method clips.
    """

    def __init__(self, quant_desc: QuantDescriptor = QuantDescriptor(), **kwargs):
        super().__init__(quant_desc, **kwargs)
        self.register_buffer("_range_lo", torch.tensor(float("inf")))
        self.register_buffer("_range_hi", torch.tensor(float("-inf")))

    def enable_calib(self):
        self._range_lo.fill_(float("inf"))  # a new calibration starts a new range
        self._range_hi.fill_(float("-inf"))
        super().enable_calib()

    def forward(self, inputs):
        if is_calibrating(self):
            with torch.no_grad():
                self._range_lo.fill_(min(float(self._range_lo), float(inputs.min())))
                self._range_hi.fill_(max(float(self._range_hi), float(inputs.max())))
        return super().forward(inputs)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) of the quantization grid: observed, clipped to amax, containing 0."""
        lo, hi = self._range_lo.float(), self._range_hi.float()
        stored = amax_buffer(self)
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            amax = stored.float().max() if stored is not None else torch.tensor(1.0)
            lo, hi = -amax, amax
        elif stored is not None:
            amax = stored.float().max()
            lo, hi = torch.maximum(lo, -amax), torch.minimum(hi, amax)
        return torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(fp32 scale, zero point as a float tensor, highest code)."""
        qmax = float(2 ** self.num_bits - 1)
        lo, hi = self.range()
        width = hi - lo
        scale = torch.where(width > _EPSILON, torch.tensor(qmax) / width.clamp_min(_EPSILON), torch.tensor(0.0))
        zero_point = torch.clamp(torch.round(-lo * scale), 0.0, qmax)
        return scale, zero_point, qmax

    def quant_forward(self, inputs):
        scale, zero_point, qmax = self.affine()
        if float(scale) == 0.0:
            return inputs * 0.0
        codes = torch.clamp(_round_ste(inputs * scale) + zero_point, 0.0, qmax)
        return (codes - zero_point) / scale

    # calibration file: the observed range travels with amax (sw.model.calibration)
    def extra_calibration(self) -> dict[str, Any]:
        return {"range": [float(self._range_lo), float(self._range_hi)]}

    def load_extra_calibration(self, entry: dict[str, Any]) -> None:
        if "range" in entry:
            self._range_lo.fill_(float(entry["range"][0]))
            self._range_hi.fill_(float(entry["range"][1]))


def apply_preset(qmodel, name: str) -> None:
    """Give every quantizer of a freshly built QuantizedModel the preset's scale rule."""
    preset = get_preset(name)
    cls = AffineQuantizer if preset.asymmetric else Pow2Quantizer if preset.pow2_scale else None
    if cls is None:
        return  # hw and tensorrt: the library's formula with the resolved settings
    for address, q in list(qmodel.quantizers().items()):
        qmodel.replace_quantizer(address, cls(_descriptor(q)))


@dataclass(frozen=True)
class QuantParams:
    """One quantizer as integers see it: `code = clamp(round(x * scale) + zero_point, lo, hi)`.

    `scale` is the fp32 scale (a scalar, or one per channel along `axis`); 0 means every code is
    0 (pytorch-quantization's rule for amax <= 2^-24).
    """

    bits: int
    scale: torch.Tensor  # float32, shape () or (channels,)
    zero_point: torch.Tensor  # int64, same shape as scale
    lo: int
    hi: int
    axis: int | None  # channel axis of a per-channel quantizer

    @property
    def signed(self) -> bool:
        return self.lo < 0

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of fp32 `x` (the fake quantizer's arithmetic, fp32), as int64."""
        scale, zp = self.broadcast(x)
        return torch.clamp(torch.round(x.float() * scale) + zp, self.lo, self.hi).to(torch.int64)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        scale, zp = self.broadcast(codes)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        return (codes.float() - zp) / scale

    def broadcast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.axis is None or self.scale.dim() == 0:
            return self.scale, self.zero_point.float()
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.float().reshape(shape)


def quant_params(q: TensorQuantizer) -> QuantParams:
    """The integer description of any quantizer of the project (library, Pow2, Affine)."""
    bits = int(q.num_bits)
    if isinstance(q, AffineQuantizer):
        scale, zero_point, qmax = q.affine()
        return QuantParams(bits, scale.float().reshape(()), zero_point.to(torch.int64).reshape(()), 0, int(qmax), None)
    if q.amax is None:
        raise ValueError("quantizer is not calibrated (no amax)")
    amax = q.amax.detach().float()
    unsigned, narrow = bool(q.unsigned), bool(q.narrow_range)
    max_bound = torch.tensor(2.0 ** (bits - 1 + int(unsigned)) - 1.0)
    scale = max_bound / amax
    scale = torch.where(amax <= _EPSILON, torch.zeros_like(scale), scale)
    axis = channel_axis(q) if amax.numel() > 1 else None
    scale = scale.reshape(-1) if axis is not None else scale.reshape(())
    hi = int(max_bound)
    lo = 0 if unsigned else (-hi if narrow else -hi - 1)
    return QuantParams(bits, scale, torch.zeros(scale.shape, dtype=torch.int64), lo, hi, axis)
