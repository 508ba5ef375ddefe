"""The package's layers, read from its imports: data flows one way.

record (sources, tracing, models) -> store -> analyse (attribution) -> render,
with the library (api) above them, the study (many runs of the library) above it, and the commands (and the notebook magic) on top. Every import in the
package, at module level or inside a function, is checked against the layers
below; and only the commands' own tests drive the command line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "profiler"

FOUNDATIONS = {"energy", "errors", "clock", "carbon", "data"}  # import nothing of phprof but each other
# what each part of the package may import (besides itself, the foundations and the package's __version__)
ALLOWED = {
    "energy": set(), "errors": set(), "clock": set(), "carbon": set(),
    "sources": set(),
    "store": {"sources"},
    "models": set(),
    "tracing": {"sources", "store", "models"},
    "attribution": {"sources", "store"},
    "render": {"sources", "store"},
    "api": {"sources", "store", "tracing", "models", "attribution", "render"},
    "study": {"api", "store", "models", "render"},  # the grid of cells, each a `phprof trace` process
    "commands": {"api", "sources", "store", "models", "render", "study"},
    "notebook": {"api", "render"},
    "__main__": {"commands"},
    "__init__": {"api", "render", "notebook", "study"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, imported phprof part) of every import in a module (``text``: its source, else read)."""
    tree = ast.parse(path.read_text() if text is None else text, filename=str(path))
    module = ".".join(("phprof", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] if node.module else [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "phprof" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_the_layers_below_it(path):
    part = _part(path)
    allowed = ALLOWED[part] | FOUNDATIONS | {part, "__version__", "_sampler"}
    wrong = [f"line {line}: phprof.{target}" for line, target in _imports(path) if target not in allowed]
    assert not wrong, f"{path.relative_to(ROOT)} ({part}) imports a layer above it or beside it: {wrong}"


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(p) for p in MODULES}
    assert parts <= set(ALLOWED), f"modules with no layer in ALLOWED: {parts - set(ALLOWED)}"


def test_the_checker_sees_a_wrong_import():
    """The test above can fail: imports of tracing and render from attribution are found, relative or
    absolute, inside a function too."""
    probe = PACKAGE / "attribution" / "probe.py"
    source = "def f():\n    from ..tracing import run\n    import phprof.render.frames\n    from . import estimate\n"
    assert [target for _, target in _imports(probe, source)] == ["tracing", "render", "attribution"]


def _cli_users(folder: Path) -> list[str]:
    users = []
    for path in folder.rglob("*.py"):
        if path.name.startswith("test_commands"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.startswith(("phprof.commands", "phprof.cli", "click.testing")) for n in names):
                users.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return users


def test_only_the_commands_own_tests_drive_the_command_line():
    users = _cli_users(ROOT / "tests") + _cli_users(ROOT / "tools")
    assert not users, f"the CLI (or CliRunner) imported outside tests/test_commands*.py: {users}"
