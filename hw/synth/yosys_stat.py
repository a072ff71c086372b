"""Cell counts from yosys `stat -json`, per module and summed over the design hierarchy.

yosys reports each module's own cells; an instance of a sub-module appears there as a cell
whose type is the sub-module's name. Summing through those instances gives the cells of
a whole subtree (one lane, one FIFO), which the flat `design` total cannot show.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


class StatError(ValueError):
    """A yosys statistics file that is missing, malformed or inconsistent."""


def _plain(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def display_name(module: str) -> str:
    """`mpconv_top` -> itself; `$paramod\\mpconv_fifo\\WIDTH=...` -> `mpconv_fifo`."""
    if module.startswith("$paramod"):
        parts = [part for part in module.split("\\") if part]
        # $paramod\name\P=V..., or $paramod$<hash>\name when the parameter list is long
        return parts[1] if len(parts) > 1 else module
    return _plain(module)


def short_label(module: str) -> str:
    """A readable module label: `mpconv_packer WORD_W=32`, `mpconv_fifo #73c92d5a`."""
    name = display_name(module)
    if module.startswith("$paramod$"):
        return f"{name} #{module[len('$paramod$'):][:8]}"
    if module.startswith("$paramod"):
        params = []
        for part in module.split("\\")[2:]:
            key, _, value = part.partition("=")
            bits = value.split("'")[-1]
            params.append(f"{key}={int(bits, 2)}" if bits and set(bits) <= {"0", "1"}
                          else part)
        return " ".join([name, *params])
    return name


@dataclass(frozen=True)
class DesignStat:
    """Per-module own cells of a synthesized design and its top module."""

    modules: dict[str, Counter]
    top: str

    def subtree(self, module: str) -> Counter:
        """Primitive cells of `module` including all the modules it instantiates."""
        return self._subtree(module, ())

    def _subtree(self, module: str, path: tuple[str, ...]) -> Counter:
        if module in path:
            raise StatError(f"module {module} instantiates itself")
        total: Counter = Counter()
        for cell_type, count in self.modules[module].items():
            if cell_type in self.modules:
                for primitive, n in self._subtree(cell_type, path + (module,)).items():
                    total[primitive] += n * count
            else:
                total[cell_type] += count
        return total

    def total(self) -> Counter:
        """Primitive cells of the whole design."""
        return self.subtree(self.top)

    def instances(self) -> Counter:
        """How many times each module occurs in the design (the top once)."""
        found: Counter = Counter({self.top: 1})
        pending = [(self.top, 1)]
        while pending:
            module, times = pending.pop()
            for cell_type, count in self.modules[module].items():
                if cell_type in self.modules:
                    found[cell_type] += times * count
                    pending.append((cell_type, times * count))
        return found

    def modules_named(self, name: str) -> list[str]:
        """The modules (any parameter set) whose source module is called `name`."""
        return sorted(m for m in self.modules if display_name(m) == name)


def parse_stat_json(text: str, top: str, source: str = "<stat>") -> DesignStat:
    """Parse the output of `stat -json [-top TOP]` of a synthesized design."""
    # yosys 0.23 prints its indented text hierarchy into the JSON of `stat -json -top` when
    # the design is more than one level deep; JSON lines of stat start with a brace or quote.
    text = "\n".join(line for line in text.splitlines()
                     if not line.strip() or line.strip()[0] in '{}[]"')
    try:
        data = json.loads(text)
        raw = data["modules"]
        # Module keys are RTLIL names (`\\name`) but cell types may omit the backslash.
        modules = {_plain(name): Counter({_plain(cell): int(n)
                                          for cell, n in body["num_cells_by_type"].items()})
                   for name, body in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StatError(f"{source}: not a yosys `stat -json` output ({exc})") from None
    if top not in modules:
        raise StatError(f"{source}: top module {top} not found (modules: "
                        f"{', '.join(sorted(display_name(m) for m in modules))})")
    stat = DesignStat(modules, top)
    # yosys sums the hierarchy itself when given -top; both sums must agree.
    design = data.get("design", {}).get("num_cells_by_type")
    if design is not None and Counter({k: int(v) for k, v in design.items()}) != stat.total():
        raise StatError(f"{source}: per-module cell counts do not add up to the design total")
    return stat


def read_stat_json(path: Path, top: str) -> DesignStat:
    """Read a file written by `tee -o PATH stat -json -top TOP`."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise StatError(f"{path}: cannot read yosys statistics ({exc.strerror})") from None
    return parse_stat_json(text, top, str(path))
