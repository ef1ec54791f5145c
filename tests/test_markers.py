"""Every test that runs Snakemake, the SLURM cluster or a browser carries its marker, so that the unit set
(``python -m pytest -m "not workflow and not cluster and not browser"``) runs none of them.

Read from the test files' source, not by running them: a test needs a marker when its body, a module-level
helper it calls or a fixture it requests (conftest's included, followed to the end) calls ``snakemake()`` /
``snakemake_command()`` or selenium's ``webdriver``, imports selenium, or starts a process (``subprocess``)
with a ``snakemake ...``, ``python -m snakemake``, ``plmexit scan`` (it runs the workflow), tests/submissions.py, tests/slurm_polls.py
or ``sbatch ...`` command line,
its own or a module constant's.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path

from workflow_runs import REPO

TESTS = REPO / "tests"
MARKERS = ("workflow", "cluster", "browser")
RUNS = {"workflow": "Snakemake", "cluster": "the SLURM cluster", "browser": "a browser"}
# Calls by name (a function of tests/workflow_runs.py, a selenium object): what running them needs.
CALLS = {"snakemake": "workflow", "snakemake_command": "workflow", "webdriver": "browser"}
SPAWNS = {"run", "Popen", "call", "check_call", "check_output"}


def command_markers(node: ast.AST) -> set[str]:
    """Markers that the command lines spelled inside ``node`` call for once something runs them."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            words = child.value.split(" ")
            if words[0] == "snakemake" and len(words) > 1 or child.value in ("submissions.py", "slurm_polls.py"):
                found.add("workflow")
            if words[0] == "sbatch":
                found.add("cluster")
        elif isinstance(child, (ast.List, ast.Tuple)):
            words = [e.value if isinstance(e, ast.Constant) else None for e in child.elts]
            if any(a == "-m" and b == "snakemake" or a in ("plmexit", "plmexit.cli") and b == "scan" for a, b in zip(words, words[1:])):
                found.add("workflow")
    return found


def starts_processes(node: ast.AST) -> bool:
    """Whether ``node`` calls subprocess's run, Popen, call, check_call or check_output."""
    return any(
        isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in SPAWNS
        and isinstance(child.func.value, ast.Name) and child.func.value.id == "subprocess"
        for child in ast.walk(node)
    )


def imports_selenium(node: ast.AST) -> bool:
    return any(
        isinstance(child, ast.Import) and any(alias.name.split(".")[0] == "selenium" for alias in child.names)
        or isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] == "selenium"
        for child in ast.walk(node)
    )


def names_used(node: ast.AST) -> set[str]:
    """Every name read (``f``, ``x.f``'s ``f``) inside ``node`` and, for a function, its parameters (fixtures)."""
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        used |= {a.arg for a in node.args.args + node.args.kwonlyargs}
    return used


def decorator_marks(decorators: list[ast.expr]) -> set[str]:
    """``pytest.mark.NAME`` (called or not) in a decorator list or a ``pytestmark`` value."""
    marks = set()
    for expr in decorators:
        for node in ast.walk(expr):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
                marks.add(node.attr)
    return marks


class Module:
    """A test file's top-level definitions: what each needs by itself and which names it uses."""

    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.direct: dict[str, set[str]] = {}
        self.commands: dict[str, set[str]] = {}
        self.uses: dict[str, set[str]] = {}
        self.tests: dict[str, set[str]] = {}
        module_marks: set[str] = set()
        functions = []
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(node)
                if node.name.startswith("test"):
                    self.tests[node.name] = decorator_marks(node.decorator_list)
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if "pytestmark" in targets:
                    module_marks |= decorator_marks([node.value])
                self.commands.update({name: command_markers(node.value) for name in targets})
        for marks in self.tests.values():
            marks |= module_marks
        for function in functions:
            uses = self.uses[function.name] = names_used(function)
            direct = {CALLS[n] for n in uses if n in CALLS} | ({"browser"} if imports_selenium(function) else set())
            if starts_processes(function):  # a command line, its own or a module constant's, that it runs
                direct |= command_markers(function).union(*(self.commands[n] for n in uses if n in self.commands))
            self.direct[function.name] = direct


def conftest_chain(path: Path) -> list[Path]:
    """The conftest.py files whose fixtures a test file sees: its directory's and every one above, up to tests/."""
    chain, directory = [], path.parent
    while True:
        if (directory / "conftest.py").is_file():
            chain.append(directory / "conftest.py")
        if directory == TESTS:
            return chain
        directory = directory.parent


@functools.cache
def conftest_module(path: Path) -> Module:
    return Module(path)


def needed_markers(module: Module, conftests: list[Module]) -> dict[str, set[str]]:
    """Each test's markers, as its body, the module's helpers and the visible fixtures call for them."""
    scopes = [module, *conftests]  # a name resolves in the module first, then the nearest conftest
    memo: dict[tuple[int, str], set[str]] = {}

    def resolve(name: str, start: int, seen: frozenset) -> set[str]:
        for index in range(start, len(scopes)):
            scope = scopes[index]
            if name in scope.direct:
                key = (index, name)
                if key in seen:
                    return set()
                if key not in memo:
                    found = set(scope.direct[name])
                    for used in scope.uses[name] - {name}:
                        # A name inside a conftest resolves in that conftest or further up, never in the test file.
                        found |= resolve(used, index, seen | {key})
                    memo[key] = found
                return memo[key]
        return set()

    return {test: resolve(test, 0, frozenset()) for test in module.tests}


def unmarked() -> list[str]:
    problems = []
    for path in sorted(TESTS.rglob("test_*.py")):
        module = Module(path)
        conftests = [conftest_module(p) for p in conftest_chain(path)]
        for test, needed in needed_markers(module, conftests).items():
            missing = sorted(needed - module.tests[test])
            if missing:
                marks = " ".join(f"@pytest.mark.{m}" for m in missing)
                runs = " and ".join(RUNS[m] for m in missing)
                problems.append(f"{path.relative_to(REPO)}::{test}: add {marks} (it runs {runs}, itself or through a helper or fixture; see pyproject's markers)")
    return problems


def test_every_test_that_runs_snakemake_a_cluster_or_a_browser_carries_its_marker():
    assert unmarked() == []


def test_the_check_finds_an_unmarked_runner_through_a_helper_and_a_fixture(tmp_path):
    """The check itself, on a made-up test file: a helper that runs Snakemake, a fixture that starts a browser."""
    source = '''
import subprocess

import pytest
from workflow_runs import snakemake

@pytest.fixture
def page():
    from selenium import webdriver
    return webdriver.Chrome()

def plan(workdir):
    return snakemake(workdir, "--dry-run")

def test_plans(tmp_path):
    plan(tmp_path)

@pytest.mark.workflow
def test_plans_marked(tmp_path):
    plan(tmp_path)

def test_browses(page):
    pass

def test_reads(finished_run):
    pass

def test_submits():
    subprocess.run(["sbatch", "job.sh"])

COMMAND = "snakemake --cores 1"

def test_names_a_command():
    assert COMMAND in "README"

def test_runs_a_command():
    subprocess.run(COMMAND.split())

def test_pure():
    assert "snakemake" in "pip install snakemake"  # a package name, not a command line
'''
    (tmp_path / "test_made_up.py").write_text(source)
    needed = needed_markers(Module(tmp_path / "test_made_up.py"), [Module(TESTS / "conftest.py")])
    assert needed == {
        "test_plans": {"workflow"}, "test_plans_marked": {"workflow"}, "test_browses": {"browser"},
        "test_reads": {"workflow"}, "test_submits": {"cluster"}, "test_pure": set(),
        "test_names_a_command": set(), "test_runs_a_command": {"workflow"},
    }


def test_the_markers_are_registered_and_strict():
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert [line.split(":")[0] for line in pytest_options["markers"]] == list(MARKERS)
    assert "--strict-markers" in pytest_options["addopts"].split()
