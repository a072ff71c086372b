"""Co-simulation: real layer tensors of a real model through the simulated converter RTL.

Proves, element by element, that the hardware computes the integer codes and dequantized
values the search's Python model used, and writes the DRAM words the energy model counts.
Entry point: `python -m cosim [WORKLOAD] [--point int8|best|N]` (also `make cosim`,
`nox -s cosim`).
"""
