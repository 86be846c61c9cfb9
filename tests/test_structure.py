"""The package's shape: short files, no import circle inside any subpackage.

Read from the source with :mod:`ast` (nothing is imported), so a function-level or
``TYPE_CHECKING`` import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wsi_ncmi"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules that ``path`` imports (``from a import b`` counts ``a.b`` if
    ``b`` is a module, else ``a``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return (found & modules) - {name}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _graph(subpackage: str) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (PACKAGE / subpackage).rglob("*.py")}
    inside = set(files)
    return {name: _imports(path, inside) for name, path in files.items()}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


#: Every subpackage (a registry module imports none of its entries: the package does).
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def test_every_subpackage_is_checked() -> None:
    assert {"features", "bench", "losses", "mil", "predict"} <= set(SUBPACKAGES)


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_no_import_circle_inside(subpackage: str) -> None:
    graph = _graph(subpackage)
    assert f"wsi_ncmi.{subpackage}" in graph  # the walk found the package
    assert len(graph) > 2  # and its files
    assert _cycles(graph) == []


def test_the_features_package_docstring_names_every_module() -> None:
    """The walk of the extraction path in ``wsi_ncmi/features/__init__.py`` stays whole."""
    init = PACKAGE / "features" / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    modules = [p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"]
    modules += ["encoders"]
    assert len(modules) > 10
    assert [m for m in modules if f"wsi_ncmi.features.{m}`" not in doc] == []


def test_no_code_file_is_over_400_lines() -> None:
    lengths = {
        str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert len(lengths) > 100
    assert {p: n for p, n in lengths.items() if n > MAX_LINES} == {}


#: Every module that parses, merges or validates ``wsi-bench``'s configuration, its
#: command-line flags included (``wsi_ncmi/cli/bench.py`` only runs the command), and the
#: typer of plain data that validates it (``wsi_ncmi/plaindata.py``, which a run's saved
#: ``config.json`` and a model bundle's tiling record also go through).
BENCH_CONFIG_MODULES = ("bench/config.py", "bench/parser.py", "plaindata.py")
#: 1,192 lines before the config became plain data in layers (parser, typed, config, checks
#: and the command's flags); 459 now (381 without the shared typer): the quick benchmark
#: became its own config file (-17), the tuning metric a checked choice of scores (+2) and
#: the aggregators' arguments are checked on load (+5). Issue 25's goal is 400: this guard
#: only keeps the count from growing until it gets there.
BENCH_CONFIG_LINES = 459


def test_the_bench_configuration_code_does_not_grow_back() -> None:
    lengths = {m: len((PACKAGE / m).read_text().splitlines()) for m in BENCH_CONFIG_MODULES}
    assert sum(lengths.values()) <= BENCH_CONFIG_LINES, lengths


def test_no_function_returns_a_result_or_a_sentinel_string() -> None:
    mixed = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
                parts = {part.strip() for part in ast.unparse(node.returns).split("|")}
                if "str" in parts and any(p.startswith(("dict", "Mapping")) for p in parts):
                    mixed.append(f"{path.name}:{node.lineno} {node.name}")
    assert mixed == []


#: Return annotations that say nothing about what a function gives back.
UNTYPED_RETURNS = {"Any", "dict[str, Any]", "Mapping[str, Any]"}

#: The functions allowed to return one: plain data read from or written to a file (a JSON
#: document, a YAML config), whose nesting their readers index directly (the house rule).
JSON_READERS = 10


def _untyped_returns(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            if ast.unparse(node.returns) in UNTYPED_RETURNS:
                found.append(f"{where}:{node.lineno} {node.name}")
    return found


def test_the_untyped_return_finder_finds_them() -> None:
    source = (
        "def a() -> Any: ...\n"
        "def b() -> dict[str, Any]: ...\n"
        "def c() -> Mapping[str, Any]: ...\n"
        "def d() -> dict[str, float]: ...\n"
        "def e() -> JSONObject: ...\n"
    )
    assert _untyped_returns(source, "m") == ["m:1 a", "m:2 b", "m:3 c"]


def test_at_most_ten_functions_return_untyped_data() -> None:
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in _untyped_returns(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert len(found) <= JSON_READERS, "\n".join(found)
