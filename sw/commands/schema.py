"""`python -m sw schema`: every workload key with its type and default."""

from __future__ import annotations

import argparse

from sw.config.workload import WORKLOAD
from sw.core.schema import Doc

HELP = "print every workload key, what it expects and its default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    for line in Doc.of(WORKLOAD):
        print(line)
    return 0
