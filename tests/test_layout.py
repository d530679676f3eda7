"""The package's layout rules, read from its source: no import cycle between its modules (imports inside
functions included), no private name imported from another module, and every module importable."""

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "endokernel"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def absolute(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imported_modules(name: str, path: pathlib.Path) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source, with the packages a dotted import
    initializes on the way (those that are not ``name``'s own ancestors, which are loaded before it)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(name, path.name == "__init__.py", node.module, node.level)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in MODULES else base)
    found = set()
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in MODULES and prefix not in ancestors and prefix != name:
                found.add(prefix)
    return found


def test_the_import_graph_has_no_cycle():
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["endokernel.api"] >= {"endokernel.ops", "endokernel.distributed.api"}  # the walk sees them


def test_no_private_name_is_imported_from_another_module():
    private = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private += [f"{name}: {alias.name} from {node.module}" for alias in node.names
                            if alias.name.startswith("_") and alias.name != "__future__"]
    assert not private


@pytest.mark.parametrize("name", [n for n in MODULES if n != "endokernel.__main__"])
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:  # endokernel.vllm's engine modules import vLLM, an optional extra
        if error.name != "vllm" or not name.startswith("endokernel.vllm."):
            raise
        pytest.skip("needs vLLM: .ci/vllm imports these in its own environment")
