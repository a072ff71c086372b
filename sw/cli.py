"""`python -m sw COMMAND ...`: one subcommand per module in `sw.commands`.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
User errors print one line and exit 2; nothing prints a traceback unless `--verbose`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from types import ModuleType
from typing import Callable

import absl.logging
import pytorch_quantization  # noqa: F401  (puts absl's handler on the root logger: see configure_logging)

import sw.commands as package
from sw.core.errors import UserError
from sw.core.quiet import silence_library_warnings


def _command_modules() -> dict[str, ModuleType]:
    modules = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        modules[info.name.replace("_", "-")] = importlib.import_module(f"sw.commands.{info.name}")
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sw",
        description="Mixed-precision quantization exploration: calibrate, search, evaluate, sweep weather.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--verbose", "-v", action="store_true", help="more log output, tracebacks on errors")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: bool) -> None:
    """Quiet by default: warnings only, and silence absl's chatter from pytorch-quantization.

    pytorch-quantization's import puts absl's handler on the root logger, and absl's verbosity
    then sets the root's level too (to ERROR when quiet), which would drop every warning of ours:
    so it is imported with this module, its handler taken off the root here, and absl's level set
    on absl's own logger only."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logging.root.removeHandler(absl.logging.get_absl_handler())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        force=True)
    absl.logging.set_verbosity(absl.logging.INFO if verbose else absl.logging.ERROR)


def run_guarded(func, args, verbose: bool) -> int:
    """Run a command; turn user errors and Ctrl-C into one line and a non-zero exit."""
    try:
        return int(func(args) or 0)
    except UserError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept", file=sys.stderr)
        return 130


def run_cli(build: Callable[[], argparse.ArgumentParser], argv: list[str] | None, func=None) -> int:
    """Build the parser (after silencing library warnings: imports warn), parse, set up quiet
    logging (or --verbose), run `func` (default: the subcommand's) guarded."""
    argv = sys.argv[1:] if argv is None else argv
    silence_library_warnings(argv)
    args = build().parse_args(argv)
    configure_logging(args.verbose)
    return run_guarded(func or args._run, args, args.verbose)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, argv)
