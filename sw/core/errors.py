"""User-facing errors: one clear line, no traceback.

Every problem a user can cause (a malformed workload, a missing path, an unknown name,
a corrupt file) is raised as a `UserError` subclass; the command-line entry points print
`error: <message>` and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


class WorkloadError(UserError):
    """A workload YAML that does not match the schema.

    The message names the file, the dotted key and what is expected.
    """

    def __init__(self, file: str | Path | None, key: str, expected: str, got: object = None,
                 *, show_got: bool = True):
        self.file = str(file) if file is not None else "<workload>"
        self.key = key or "<top level>"
        self.expected = expected
        text = f"{self.file}: {self.key}: expected {expected}"
        if show_got:
            text += f", got {got!r}"
        super().__init__(text)


class DataError(UserError):
    """A dataset, checkpoint, calibration or results file that is missing or unreadable."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if empty): for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
