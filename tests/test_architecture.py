"""The architecture holds: import contracts (import-linter, pyproject.toml) are kept, a planted
upward import or circle breaks them, and no project import hides inside a function.

The contracts are checked by running the real `lint-imports` on the real tree; the planted
cases run it on a copy of the tree with one import added, so they prove the check can fail.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sw", "energy", "cosim")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_import_contracts_are_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the three packages and pyproject.toml with `line` appended to `module`'s file."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.cpp"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / (module.replace(".", "/") + ".py")
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    # an upward import inside sw: the quantizers reaching the study above them
    ("sw.quant.presets", "from sw.study import study", "sw.quant.presets -> sw.study.study"),
    # a circle between two layers: the bottom layer importing the config layer that imports it
    ("sw.core.errors", "import sw.config.workload", "sw.core.errors -> sw.config.workload"),
    # siblings must not depend on each other
    ("sw.model.calibration", "import sw.data.datasets", "sw.model.calibration -> sw.data.datasets"),
    # sw knows nothing of the packages above it
    ("sw.search.pareto", "import energy.table", "sw.search.pareto -> energy.table"),
    ("energy.packing", "import cosim.reference", "energy.packing -> cosim.reference"),
    # inside energy: the table's data below its figures (the old table <-> plot circle)
    ("energy.table", "import energy.plot", "energy.table -> energy.plot"),
])
def test_a_planted_import_breaks_a_contract(tmp_path, module, line, broken):
    result = lint_imports(planted_copy(tmp_path, module, line))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert broken in result.stdout, result.stdout[-3000:]


def imports_inside_functions(path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, source line) of every import statement inside a function body."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name, lines[inner.lineno - 1]) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    module = "." * inner.level + (inner.module or "")
                    found.append((inner.lineno, module, lines[inner.lineno - 1]))
    return sorted(set(found))


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def test_no_project_import_hides_inside_a_function():
    """A project import inside a function is how an import circle hides: the layering must make
    every such import a top-level one."""
    offenders = [f"{path.relative_to(REPO)}:{line}: {text.strip()}"
                 for path in source_files()
                 for line, module, text in imports_inside_functions(path)
                 if module.split(".")[0] in PACKAGES or module.startswith(".")]
    assert not offenders, "project imports inside functions:\n" + "\n".join(offenders)


def test_every_lazy_library_import_says_why():
    """A library imported inside a function keeps an optional dependency optional or a heavy import
    off the paths that do not need it; the line says which (`# optional: ...` or `# lazy: ...`)."""
    offenders = [f"{path.relative_to(REPO)}:{line}: {text.strip()}"
                 for path in source_files()
                 for line, module, text in imports_inside_functions(path)
                 if "# optional" not in text and "# lazy" not in text]
    assert not offenders, "imports inside functions without a reason:\n" + "\n".join(offenders)


def test_the_function_import_scan_finds_what_it_must(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from sw.core import errors\n    import json  # lazy: test\n"
                      "    return errors, json\n\nclass C:\n    def m(self):\n        from . import x\n")
    assert [(line, module) for line, module, _ in imports_inside_functions(sample)] == [
        (4, "sw.core"), (5, "json"), (10, ".")]
