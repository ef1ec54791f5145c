"""The house: imports run one way (no cycles, no upward arrows), and one registry describes the task formats."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from plmexit.data.formats import COMMON_KEYS, FILE_FIELDS, FORMATS

from workflow_runs import REPO

PACKAGE = REPO / "src" / "plmexit"
# Lower layers never import higher ones. Within a layer, modules may import each other without a cycle.
LAYERS = [
    {"plmexit", "plmexit.errors", "plmexit.atomic", "plmexit.download"},
    {"plmexit.data"},
    {"plmexit.models"},
    {"plmexit.settings"},  # standard library, errors and the families registry (ESM2's window) only
    {"plmexit.embedding"},
    {"plmexit.probing"},
    {"plmexit.depth"},
    {"plmexit.exit"},
    {"plmexit.reporting"},
    {"plmexit.pipeline"},
    {"plmexit.cli"},
]
# The package's public function (``plmexit.read_layer``), the one upward arrow: imported by the package's
# module ``__getattr__`` on first use, so ``import plmexit`` (every module's, for ``__version__``) loads nothing above it.
PUBLIC_REEXPORTS = {"plmexit": {"plmexit.embedding.store"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def _nodes(tree: ast.AST, type_only: bool):
    """``ast.walk``, without what sits under ``if TYPE_CHECKING:`` unless ``type_only``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not type_only and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(type_only: bool = True) -> dict[str, set[str]]:
    """Every plmexit module and the plmexit modules it imports, at the top or inside a function;
    with ``type_only=False``, not those imported only for annotations (under ``if TYPE_CHECKING:``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in _nodes(ast.parse(path.read_text()), type_only):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plmexit"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("plmexit"))
        graph[name] = found - {name}
    return graph


def layer(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if module in members or any(module.startswith(m + ".") for m in members if m != "plmexit"):
            return index
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def test_no_module_imports_a_higher_layer():
    for module, imported in imports().items():
        for target in imported - PUBLIC_REEXPORTS.get(module, set()):
            assert layer(target) <= layer(module), f"{module} imports {target}, a higher layer"


def test_no_import_cycles():
    """No cycle among the imports that run: an annotation may name a type from a module that imports
    this one (``probing.classifiers`` takes a ``probes.ProbeSettings``) without a cycle at import time."""
    graph = imports(type_only=False)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*path, target])}"
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_config_schema_takes_exactly_the_registrys_formats_and_keys():
    task = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]["tasks"]["items"]
    assert task["properties"]["kind"]["enum"] == list(FORMATS)
    keys = set(COMMON_KEYS) | {key for f in FORMATS.values() for key in (*f.file_roles, *f.options)}
    assert set(task["properties"]) == keys
    assert set(FILE_FIELDS) == {role for f in FORMATS.values() for role in f.file_roles} - {"path"}


def test_every_reader_the_registry_names_exists():
    import importlib

    for f in FORMATS.values():
        module, function = f.reader.split(":")
        assert callable(getattr(importlib.import_module(module), function)), f.kind


# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def test_job_environments_are_pinned_within_the_package_ranges():
    """envs/*.yaml pin every package exactly (a rerun next year solves the same environment),
    hold no orchestrator (jobs do not import Snakemake), and each pin satisfies pyproject.toml's
    dependencies and its hub extra (jobs run every model family). plmexit's own entries:
    tests/test_dependencies.py."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = [*project["dependencies"], *project["optional-dependencies"]["hub"]]
    ranges = {Requirement(r).name.lower(): Requirement(r).specifier for r in needed}
    for path in sorted((REPO / "envs").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        conda = [d for d in env["dependencies"] if isinstance(d, str)]
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        for dependency in conda:
            name, _, version = dependency.partition("=")
            assert version and "*" not in version.split("=")[0] and not version.startswith((">", "<")), f"{path.name}: {dependency} is not pinned"
            pypi = CONDA_TO_PYPI.get(name, name).lower()
            if pypi in ranges:
                assert version.split("=")[0] in ranges[pypi], f"{path.name}: {dependency} is outside pyproject's {pypi}{ranges[pypi]}"
        assert all("==" in d for d in pip if not d.startswith("-e ")), f"{path.name}: pip entries not pinned: {pip}"
        names = {d.partition("=")[0] for d in conda} | {d.partition("==")[0] for d in pip}
        assert not names & {"snakemake", "snakemake-executor-plugin-slurm"}, f"{path.name} carries the orchestrator"
        held = {CONDA_TO_PYPI.get(n, n).lower() for n in names}
        assert set(ranges) <= held, f"{path.name} lacks {sorted(set(ranges) - held)}"


def test_no_step_module_imports_another():
    """A step module's helpers that another step needs live one floor down (a library module or
    ``pipeline.reading``), so reading a step never means following a chain of other steps."""
    steps = {name for name in imports() if name.startswith("plmexit.pipeline.") and name.endswith("_steps")}
    assert steps
    for module, imported in imports().items():
        if module in steps or module == "plmexit.pipeline.estimate":
            borrowed = (imported & steps) - {module}
            assert not borrowed, f"{module} imports {', '.join(sorted(borrowed))}; move what it needs one floor down"
