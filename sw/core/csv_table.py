"""Result tables kept as CSV files that commands add rows to (retrain.csv, deploy.csv).

`upsert_rows` reads the table (if any), replaces rows with the same key, appends new ones
and rewrites the file atomically (`sw.core.durable`): a killed run leaves the previous complete
table, and re-running a configuration replaces its row instead of duplicating it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from sw.core.durable import write_text
from sw.core.errors import DataError


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV table (empty if the file does not exist); one clear error if unreadable."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: expected a CSV table ({exc}); move it away to start a new one") from None


def upsert_rows(path: Path, rows: Sequence[Mapping[str, Any]], key: Sequence[str]) -> Path:
    """Add `rows` to the table at `path`, replacing existing rows with equal `key` columns."""
    existing = read_rows(path)
    new = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    keys = {tuple(r.get(k, "") for k in key) for r in new}
    kept = [r for r in existing if tuple(r.get(k, "") for k in key) not in keys]
    fields: list[str] = []
    for r in (*kept, *new):
        fields.extend(f for f in r if f not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows([*kept, *new])
    return write_text(path, buffer.getvalue())
