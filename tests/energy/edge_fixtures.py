"""Small accelerators and layers the energy tests build themselves (fast mapping searches).

`conv` builds a square convolution's geometry for any test.

`tiny_edge` is the shipped eyeriss_edge shrunk to a 4 x 4 PE array with `bank_bits`-bit weight
and activation banks: small enough that a 64-channel 1x1 convolution on an 8 x 8 map does not
fit at 8 bits but does at 2-4, and that one mapping search takes about a second.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from energy.engines.zigzag import PROJECT_ACCELERATORS
from energy.layers import LayerGeometry

MAPPING_4X4 = """- name: default
  spatial_mapping:
    D1:
      - K, 4
    D2:
      - C, 4
  memory_operand_links: {O: O, W: I2, I: I1}
"""


def tiny_edge(folder: Path, bank_bits: int = 16384, name: str = "tiny_edge") -> tuple[Path, Path]:
    """(hardware YAML, mapping YAML) of the shrunk eyeriss_edge, written into `folder`."""
    spec = yaml.safe_load((PROJECT_ACCELERATORS / "eyeriss_edge.yaml").read_text())
    spec["name"] = name
    spec["memories"]["gb_weights_8KB"]["size"] = bank_bits
    spec["memories"]["gb_activations_8KB"]["size"] = bank_bits
    spec["operational_array"]["sizes"] = [4, 4]
    hardware, mapping = folder / f"{name}.yaml", folder / f"{name}_mapping.yaml"
    hardware.write_text(yaml.safe_dump(spec, sort_keys=False))  # memory order is the hierarchy order
    mapping.write_text(MAPPING_4X4)
    return hardware, mapping


def conv(cin: int, cout: int, size: int, k: int = 3, stride: int = 1, groups: int = 1, batch: int = 1,
         pad: int | None = None, dilation: int = 1) -> LayerGeometry:
    """A square convolution; `pad` None: 'same' padding (k // 2)."""
    pad = k // 2 if pad is None else pad
    out = (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return LayerGeometry(kind="conv", in_channels=cin, out_channels=cout, groups=groups, in_h=size, in_w=size,
                         out_h=out, out_w=out, kernel_h=k, kernel_w=k, stride_h=stride, stride_w=stride,
                         dilation_h=dilation, dilation_w=dilation, pad_top=pad, pad_bottom=pad, pad_left=pad,
                         pad_right=pad, batch=batch)


# does not fit tiny_edge's 16 kbit banks at 6-8 bits (weights are re-read), fits at 2-4 bits
POINTWISE = conv(64, 64, 8, k=1)
