"""`python -m cosim [WORKLOAD] [--point int8|best|N]`: prove the RTL computes what the search simulated.

The command line itself; `cosim/__main__.py` sets the warning policy before this imports torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.cosimulation import point_configuration, run_cosim
from cosim.golden import format_rows, replay
from cosim.reference import FAULTS
from cosim.report import format_table, write_csv
from cosim.simulation import SIMULATORS, STALLS, WORD_WIDTHS
from sw.cli import run_cli
from sw.core.errors import UserError
from sw.deploy.packing import DEFAULT_WORD_BITS
from sw.model.checkpoint import load_checkpoint
from sw.study.study import Study


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cosim",
        description="Feed every quantized layer's real weights and input activations through the simulated "
                    "converter RTL (quantize -> pack -> unpack -> dequantize) and compare every element with "
                    "pytorch-quantization's codes and the search's fake-quant values, and the packed word "
                    "counts with the energy model's DRAM words. Exit status 1 on any mismatch.")
    p.add_argument("workload", nargs="?", help="workload YAML (default: the embedded workloads/digits_cnn.yaml)")
    p.add_argument("--point", default="int8",
                   help="bit configuration: int8 (all layers 8 bits, default), best (the lowest-cost Pareto point "
                        "meeting the accuracy constraint on held-out data) or N (row N of the Pareto CSV)")
    p.add_argument("--checkpoint", type=Path, metavar="STEM",
                   help="a quantized checkpoint (python -m sw retrain, or export --format state_dict) instead of --point")
    p.add_argument("--run-id", type=int, help="exploration run to take the Pareto point from (default: the latest)")
    p.add_argument("--images", type=int, default=8, help="real images whose activations are captured (default 8)")
    p.add_argument("--layers", help="comma-separated layer names (default: every quantized layer and model_input)")
    p.add_argument("--sim", choices=SIMULATORS, default="icarus", help="HDL simulator (verilator: the fast option)")
    p.add_argument("--word-bits", type=int, choices=WORD_WIDTHS,
                   help=f"packed memory word width (default {DEFAULT_WORD_BITS}; with --vectors the packed file's)")
    p.add_argument("--stalls", choices=STALLS, default="none",
                   help="random valid/ready bubbles on every stream (default none: fastest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stall patterns")
    p.add_argument("--inject", choices=FAULTS,
                   help="break the Python reference on purpose (wrong scale or truncating rounding): must fail")
    p.add_argument("--out", type=Path, help="CSV report path (default: <results>/cosim/<point>_<sim>_w<W>.csv)")
    p.add_argument("--vectors", type=Path, metavar="DIR",
                   help="replay the golden test vectors `python -m sw export` wrote (<label>_vectors/ or its "
                        "manifest.json) instead: layer arithmetic, the packed weights file and every quantized "
                        "tensor through the RTL, bit for bit (the word width is the packed file's)")
    p.add_argument("--progress", action="store_true", help="progress bars while training/loading data")
    p.add_argument("--verbose", "-v", action="store_true", help="more logging; tracebacks on errors")
    return p


def run_vectors(args: argparse.Namespace) -> int:
    """`--vectors`: replay golden test vectors; exit status 1 on any difference."""
    print(f"replaying golden vectors {args.vectors} on {args.sim}", flush=True)
    result = replay(args.vectors, sim=args.sim, word_bits=args.word_bits)
    print(format_rows(result))
    print(f"{len(result.rows)} checks, {sum(r.elements for r in result.rows):,} elements, "
          f"{result.word_bits}-bit words, {result.wall_s:.1f} s")
    if result.ok:
        print("PASS: the golden vectors replay bit-exact (arithmetic, packed weights file, RTL)")
        return 0
    print("FAIL: the golden vectors do not replay (see the rows marked MISMATCH)")
    return 1


def run(args: argparse.Namespace) -> int:
    if args.vectors is not None:
        return run_vectors(args)
    args.word_bits = args.word_bits or DEFAULT_WORD_BITS
    study = Study(args.workload, progress=args.progress)
    preset = study.workload.quantization.preset
    if preset == "snpe":
        raise UserError(f"{study.workload.path}: quantization.preset snpe is asymmetric (a zero point); the converter "
                        f"RTL implements symmetric quantization only (presets hw, tensorrt, pow2)")
    if args.checkpoint is not None:
        layer_bits = load_checkpoint(study.quantized_model, args.checkpoint, model_name=study.workload.model.name)
        args.point = args.checkpoint.with_suffix("").name
        clipping = None  # the checkpoint's quantizer state is what it simulates
    else:
        layer_bits, clipping = point_configuration(study, args.point, args.run_id)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    print(f"cosim {study.name} at point {args.point}: " + ", ".join(f"{n}={w}/{i}" for n, (w, i) in layer_bits.items()))
    print(f"simulating on {args.sim}, {args.word_bits}-bit words, stalls: {args.stalls}"
          + (f", injected fault: {args.inject}" if args.inject else ""), flush=True)
    if clipping:
        print("input clipping: " + ", ".join(f"{n}={m}" for n, m in clipping.items()))
    result = run_cosim(study, layer_bits, point=args.point, images=args.images, layers=layers, sim=args.sim,
                       word_bits=args.word_bits, stalls=args.stalls, seed=args.seed, fault=args.inject,
                       clipping=clipping)
    out = args.out or study.results_dir / "cosim" / f"{str(args.point).replace(':', '_')}_{args.sim}_w{args.word_bits}.csv"
    write_csv(result, out)
    print(format_table(result))
    cycles = sum(r.cycles for r in result.rows)
    print(f"{len(result.rows)} tensors, {result.elements:,} elements, {cycles:,.0f} simulated cycles; "
          f"simulator {result.simulator_s:.1f} s, total run time {result.total_s:.1f} s")
    print(f"report: {out}")
    if result.ok:
        print("PASS: the RTL is bit-exact with the search's numerics and writes the energy model's DRAM words")
        return 0
    print("FAIL: mismatches between the RTL and the Python numerics (see the rows marked MISMATCH)")
    return 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, argv, run)

