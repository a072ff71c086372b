"""Tests reach the project (sw, energy, cosim) through its public names only.

A test that imports `_name` from a project module, or reads `module._name` off an imported
project module (also through `setattr`/`getattr`/`monkeypatch.setattr` and dotted-string
targets such as "sw.quant.fused_quant._library"), ties itself to that module's internals: a
rename there breaks the test, and the test no longer says what the module promises. Where a
test needs such a name, the module makes it public (with a docstring) or the test goes through
the public API. The scan is static (`ast`): private attributes of objects (`qmodel._x`) and
pytorch-quantization's own private names are not its business.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PACKAGES = ("sw", "energy", "cosim")
ATTRIBUTE_CALLS = {"setattr", "delattr", "getattr", "hasattr"}  # builtins and monkeypatch.setattr / delattr


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_module(dotted: str, root: Path = REPO) -> bool:
    """`dotted` names a project module or package (a file or folder under `root`)."""
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return False
    path = root.joinpath(*parts)
    return path.with_suffix(".py").is_file() or path.is_dir()


def private_in_dotted(dotted: str, root: Path = REPO) -> str | None:
    """The first private name right after a module in a dotted project path ("sw.x._y" -> "_y")."""
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        if is_private(parts[i]) and is_module(".".join(parts[:i]), root):
            return parts[i]
    return None


def module_aliases(tree: ast.AST, root: Path = REPO) -> dict[str, str]:
    """Local name -> dotted project path, for every name an import binds to a project module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # `import sw.quant.fused_quant` binds `sw`
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {name: dotted for name, dotted in aliases.items() if is_module(dotted, root)}


def dotted_name(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`a.b.c` with `a` an imported project module -> its dotted path; else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in aliases:
        return ".".join([aliases[node.id], *reversed(names)])
    return None


def private_uses(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, what) of every private project name the file at `path` reaches, by line."""
    return sorted(_scan(path, root))


def _scan(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = module_aliases(tree, root)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                if is_private(alias.name):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = dotted_name(node.value, aliases)
            if owner is not None and is_module(owner, root):
                yield node.lineno, f"{owner}.{node.attr}"
        elif isinstance(node, ast.Call) and node.args:
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if function not in ATTRIBUTE_CALLS:
                continue
            target, name = node.args[0], node.args[1] if len(node.args) > 1 else None
            owner = dotted_name(target, aliases)
            if (owner is not None and is_module(owner, root) and isinstance(name, ast.Constant)
                    and isinstance(name.value, str) and is_private(name.value)):
                yield node.lineno, f"{function}({owner}, {name.value!r})"
            elif (isinstance(target, ast.Constant) and isinstance(target.value, str)
                  and private_in_dotted(target.value, root) is not None):
                yield node.lineno, f"{function}({target.value!r})"


def test_no_test_reaches_a_private_project_name():
    offenders = [f"{path.relative_to(REPO)}:{line}: {what}"
                 for path in sorted(TESTS.rglob("*.py"))
                 for line, what in private_uses(path)]
    assert not offenders, "tests reaching private project names (make them public, or test the public API):\n" + \
        "\n".join(offenders)


def test_the_scan_finds_what_it_must(tmp_path):
    """Each form is found, with its line; public names, objects' attributes and other libraries'
    private names are not."""
    sample = tmp_path / "test_sample.py"
    sample.write_text("\n".join([
        "import sw.quant.fused_quant",                                   # 1
        "import energy.table as table",                                  # 2
        "from pytorch_quantization.calib.histogram import _compute",     # 3: not the project's
        "from sw.report import plots",                                   # 4
        "from sw.problems.quantization_problem import _worker_problem",  # 5
        "def test(monkeypatch, qmodel):",                                # 6
        "    sw.quant.fused_quant._library",                             # 7
        "    table._cache",                                              # 8
        "    plots._draw(None, None)",                                   # 9
        "    monkeypatch.setattr(plots, '_draw', None)",                 # 10
        "    monkeypatch.setattr('sw.quant.fused_quant._unavailable', None)",  # 11
        "    plots.draw, plots.__name__, qmodel._inference",             # 12: public, dunder, an object
        "    getattr(plots, 'draw')",                                    # 13
    ]) + "\n")
    assert [line for line, _ in private_uses(sample)] == [5, 7, 8, 9, 10, 11]
