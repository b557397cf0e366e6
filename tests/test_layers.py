"""The import graph of ``tesaiot_cli``: no cycles, and imports only point down the layers.

Every import counts, also one inside a function (a lazy import is still a dependency) or
under ``TYPE_CHECKING``. ``from package import name`` depends on ``package.name`` when that
is a module, else on ``package``; importing a submodule does not count as depending on
its package's ``__init__``. A new module must be placed in :data:`LAYERS` (or
:data:`RECORDING_LAYERS`): the test fails on a module it cannot place.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tesaiot_cli"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Top to bottom: a module may import from its own layer and the layers below it.
# docs/architecture.md ("Layers and imports") draws the same lists (a test below compares them).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("tesaiot_cli.__main__", "tesaiot_cli.cli", "tesaiot_cli.cliutil", "tesaiot_cli.commands")),
    ("services", ("tesaiot_cli.services",)),
    ("engines", ("tesaiot_cli.sim", "tesaiot_cli.analysis", "tesaiot_cli.watch")),
    ("recording", ("tesaiot_cli.recording",)),
    ("mqtt", ("tesaiot_cli.mqtt",)),
    ("base", ("tesaiot_cli.config", "tesaiot_cli.message", "tesaiot_cli.errors", "tesaiot_cli.textfmt",
              "tesaiot_cli.playback", "tesaiot_cli.output", "tesaiot_cli.process")),
    ("root", ("tesaiot_cli",)),
]

# Inside tesaiot_cli.recording, top to bottom (docs/architecture.md shows the same).
RECORDING_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("facade", ("tesaiot_cli.recording", "tesaiot_cli.recording.api")),
    ("remote", ("tesaiot_cli.recording.remote", "tesaiot_cli.recording.remote_dataset")),
    ("dataset", ("tesaiot_cli.recording.dataset",)),
    ("formats", ("tesaiot_cli.recording.formats", "tesaiot_cli.recording.foreign", "tesaiot_cli.recording.nab",
                 "tesaiot_cli.recording.alertfile")),
    ("buffered", ("tesaiot_cli.recording.buffered", "tesaiot_cli.recording.schema")),
    ("files", ("tesaiot_cli.recording.files", "tesaiot_cli.recording.storage")),
    ("model", ("tesaiot_cli.recording.model", "tesaiot_cli.recording.meta", "tesaiot_cli.recording.truth")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The tesaiot_cli modules ``name`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "tesaiot_cli" or t.startswith("tesaiot_cli."))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def place(name: str, layers: list[tuple[str, tuple[str, ...]]]) -> int | None:
    """The index of the layer whose longest prefix matches ``name`` (0 is the top)."""
    best: tuple[int, int] | None = None
    for index, (_layer, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            for layers in (LAYERS, RECORDING_LAYERS):
                a, b = place(source, layers), place(target, layers)
                if layers is RECORDING_LAYERS and (a is None or b is None):
                    continue  # only between two recording modules
                if a is not None and b is not None and b < a:
                    problems.append(f"{source} ({layers[a][0]}) imports {target} ({layers[b][0]}), a layer above")
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in all_modules() if place(name, LAYERS) is None]
    unplaced += [name for name in all_modules()
                 if name.startswith("tesaiot_cli.recording") and place(name, RECORDING_LAYERS) is None]
    assert unplaced == [], f"place these modules in tests/test_layers.py (and docs/architecture.md): {unplaced}"


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    assert layer_violations(graph()) == []


@pytest.mark.parametrize(("edges", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_the_layer_check_catches_an_upward_import() -> None:
    edges = {"tesaiot_cli.recording.model": {"tesaiot_cli.recording.formats.jsonl"},
             "tesaiot_cli.message": {"tesaiot_cli.mqtt.session"}}
    assert len(layer_violations(edges)) == 2


def test_relative_and_submodule_imports_resolve(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from tesaiot_cli.recording import schema\nfrom tesaiot_cli.recording import open_reader\n"
                      "def f():\n    import tesaiot_cli.mqtt.session\n")
    known = {"tesaiot_cli.recording", "tesaiot_cli.recording.schema", "tesaiot_cli.mqtt.session"}
    assert imports_of("tesaiot_cli.x", source, known) == known


def drawn_layers(after: str, package: str) -> list[tuple[str, tuple[str, ...]]]:
    """The layers of the first code block after the line ``after`` in docs/architecture.md:
    each layer a line starting with its name, then its modules (``x.py``, ``pkg/``, relative
    to ``package``; a line starting with spaces goes on listing them), then, in a column of
    its own, what it holds."""
    text = ARCHITECTURE.read_text()
    start = text.index("```\n", text.index(after)) + 4
    layers: list[tuple[str, list[str]]] = []
    what_column = 0  # where the description column starts (the first line says)
    for line in text[start:text.index("```", start)].splitlines():
        name = "" if line[:1].isspace() else line.split()[0]
        at = len(line) - len(line[len(name):].lstrip())
        modules = re.match(r"(?:[\w.]+(?:\.py|/),?\s?)*", line[at:])
        assert modules is not None
        if not what_column:
            what_column = at + len(modules.group(0)) + 1
        found = [] if at >= what_column else [
            word.strip().removesuffix(".py").rstrip("/") for word in modules.group(0).split(",") if word.strip()]
        if name:
            layers.append((name, []))
        assert layers, f"docs/architecture.md: {line!r} continues no layer"
        layers[-1][1].extend(package if m == "__init__" else f"{package}.{m}" for m in found)
    return [(name, tuple(modules)) for name, modules in layers]


def test_the_layers_are_the_ones_docs_architecture_md_draws() -> None:
    def as_sets(layers: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, set[str]]]:
        return [(name, set(modules)) for name, modules in layers]

    assert as_sets(drawn_layers("## Layers and imports", "tesaiot_cli")) == as_sets(LAYERS)
    assert as_sets(drawn_layers("Inside `recording/`", "tesaiot_cli.recording")) == as_sets(RECORDING_LAYERS)


def test_no_test_module_imports_another() -> None:
    """Helpers shared by tests live in tests/support; a test module (or conftest.py) is
    never imported by another."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in names
                          if name.startswith(("tests.test_", "tests.conftest"))]
    assert offenders == []


COMMAND_MAX_LINES = 300  # docs/architecture.md: a command is options, help, one call, printing
MODULE_MAX_LINES = 600


def oversized(paths: list[Path], limit: int, base: Path = ROOT) -> list[str]:
    """The files among ``paths`` with more than ``limit`` lines, as 'path: N lines' (relative to ``base``)."""
    counts = {path: len(path.read_text().splitlines()) for path in paths}
    return [f"{path.relative_to(base)}: {n} lines" for path, n in counts.items() if n > limit]


def test_commands_and_modules_stay_small() -> None:
    commands = sorted((PACKAGE / "commands").glob("*.py"))
    assert commands, "no command modules found"
    assert oversized(commands, COMMAND_MAX_LINES) == [], f"a command over {COMMAND_MAX_LINES} lines"
    assert oversized(sorted(PACKAGE.rglob("*.py")), MODULE_MAX_LINES) == [], f"a module over {MODULE_MAX_LINES} lines"


def test_the_size_check_catches_a_long_file(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("x = 1\n" * 301)
    assert oversized([long], COMMAND_MAX_LINES, base=tmp_path) == ["long.py: 301 lines"]
    assert oversized([long], MODULE_MAX_LINES, base=tmp_path) == []
