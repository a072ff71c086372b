"""Subcommands of `python -m sw`; each module is one command (see sw/cli.py)."""
