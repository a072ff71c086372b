"""Run one Timeloop mapper search through timeloopfe; executed by the Python that has timeloopfe.

    python timeloop_driver.py REQUEST.json

REQUEST is a JSON object: `files` (the accelerator's YAML files and the problem, Jinja2 templates),
`data` (the Jinja2 data: bit widths and problem dimensions), `metrics` (Timeloop's
`optimization_metrics`) and `output_dir`. On success Timeloop's outputs are in `output_dir`
(`timeloop-mapper.stats.txt`, its console output in `timeloop.log`) and the exit status is 0;
otherwise one line goes to stderr and the exit status is 3.

Timeloop, Accelergy and timeloopfe are usually installed in their own environment, apart from this
project's, so `energy.engines.timeloop` runs this file as a script with that environment's Python.
It must therefore import nothing but the standard library and timeloopfe.
"""

from __future__ import annotations

import json
import os
import sys


def run(request: dict) -> None:
    import timeloopfe.v4 as tl  # optional: the Timeloop stack is not a dependency of this project

    out = request["output_dir"]
    os.makedirs(out, exist_ok=True)
    spec = tl.Specification.from_yaml_files(*request["files"], jinja_parse_data=request["data"])
    spec.mapper["optimization_metrics"] = list(request["metrics"])
    tl.call_mapper(spec, output_dir=out, log_to=os.path.join(out, "timeloop.log"))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: timeloop_driver.py REQUEST.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            run(json.load(f))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the engine
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and set(ln.strip()) != {"="}]
        print(f"{type(exc).__name__}: {lines[0] if lines else ''}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
