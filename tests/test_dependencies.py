"""What plmexit needs installed: every third-party module the package imports is declared in
pyproject.toml (the base dependencies, or the extra of the one module that needs it), and the job
environments (envs/*.yaml) hold this release of plmexit, editable from the checkout, so that a
release is a new environment for Snakemake and jobs run the checkout's code."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from packaging.requirements import Requirement

import plmexit

from workflow_runs import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
# The modules that may import an extra's packages, each guarding the import with a MissingExtraError.
EXTRA_MODULES = {
    "hub": {"plmexit.models.hub", "plmexit.models.hf_truncate"},
    "workflow": {"plmexit.pipeline.planning", "plmexit.pipeline.scan_steps", "plmexit.pipeline.snakemake_speed"},  # the Snakefile's planning (also behind `plmexit estimate`), `plmexit scan`, and the speed-ups the Snakefile applies
}
EDITABLE = "-e ${PLMEXIT_CHECKOUT}[hub]"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    return {normalise(Requirement(r).name) for r in requirements if Requirement(r).name != "plmexit"}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (at the top or inside a function), less the standard library and plmexit."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"plmexit"}


def test_every_module_the_package_imports_is_a_declared_dependency():
    """A command's imports are installed by what its user installs: `pip install plmexit` for the
    base, `plmexit[hub]` for transformers models, `plmexit[workflow]` for planning."""
    extras = {extra: declared(PYPROJECT["optional-dependencies"][extra]) for extra in EXTRA_MODULES}
    base = declared(PYPROJECT["dependencies"])
    distributions = packages_distributions()
    package = REPO / "src" / "plmexit"
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        allowed = base.union(*(names for extra, names in extras.items() if module in EXTRA_MODULES[extra]))
        for name in sorted(third_party_imports(path)):
            provided = {normalise(d) for d in distributions.get(name, [])}
            assert provided, f"{module} imports {name}, which no installed distribution provides"
            if not provided & allowed:
                problems.append(f"{module} imports {name} ({', '.join(sorted(provided))}), not declared where {module} runs")
    assert not problems, "; ".join(problems)


def test_planning_without_the_workflow_extra_is_one_line_naming_it(monkeypatch, capsys):
    from plmexit.cli import main

    for name in ("snakemake", "snakemake.utils"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ModuleNotFoundError
    assert main(["estimate", "--configfile", str(REPO / "config" / "test.yaml"), "--schema", str(REPO / "workflow" / "schemas" / "config.schema.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need plmexit's workflow extra, and snakemake is not installed: pip install 'plmexit[workflow]'" in err


def pip_entries(path: Path) -> list[str]:
    return next(d["pip"] for d in yaml.safe_load(path.read_text())["dependencies"] if isinstance(d, dict))


def test_one_version_of_plmexit_and_each_job_environment_pins_it():
    """plmexit.__version__ is the one version (pyproject reads it); every env installs plmexit with
    its hub extra editable from the checkout the Snakefile names, then pins exactly that version."""
    assert "version" not in PYPROJECT and "version" in PYPROJECT["dynamic"]
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "plmexit.__version__"}
    assert ENVS
    for path in ENVS:
        entries = pip_entries(path)
        pins = [e for e in entries if not e.startswith("-e ") and Requirement(e).name == "plmexit"]
        assert pins == [f"plmexit=={plmexit.__version__}"], f"{path.name}: plmexit's pin {pins} is not plmexit=={plmexit.__version__}; bump it with plmexit.__version__"
        assert EDITABLE in entries, f"{path.name}: plmexit is not installed editable from the checkout ({EDITABLE})"
        assert entries.index(EDITABLE) < entries.index(pins[0]), f"{path.name}: name the checkout before the pin (pip 25 looks a pin named first up in the index)"
    assert "os.environ.update(PLMEXIT_CHECKOUT=os.path.abspath(workflow.basedir))" in (REPO / "Snakefile").read_text()


def snakemake_env_hash(env_file: Path, conda_prefix: Path) -> str:
    """The hash Snakemake's own ``conda.Env`` gives ``env_file``: the name of the environment it
    builds under ``conda_prefix`` (without conda: the platform only names an optional pin file)."""
    from snakemake.deployment.conda import Env

    class Sources:  # the part of Snakemake's source cache Env reads local files through
        def open(self, source, mode="r"):
            return io.BytesIO(Path(source.get_path_or_uri(secret_free=True)).read_bytes())

        def exists(self, source):
            return Path(source.get_path_or_uri(secret_free=True)).exists()

    workflow = SimpleNamespace(
        persistence=SimpleNamespace(conda_env_path=str(conda_prefix)),
        deployment_settings=SimpleNamespace(apptainer_args=""),
        runtime_paths=[],
        sourcecache=Sources(),
    )
    env = Env(workflow, env_file=str(env_file))
    env._conda = SimpleNamespace(platform="linux-64")  # Env.conda would look for a conda executable
    return env.hash


@pytest.mark.parametrize("env", [p.name for p in ENVS])
def test_a_new_plmexit_version_is_a_new_environment_for_snakemake(tmp_path, env):
    text = (REPO / "envs" / env).read_text()
    pin = f"plmexit=={plmexit.__version__}"
    assert text.count(pin) == 1
    for name, content in {"same": text, "bumped": text.replace(pin, "plmexit==999.0.0")}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / env).write_text(content)
    prefix = tmp_path / ".snakemake" / "conda"
    shipped, same, bumped = (snakemake_env_hash(p, prefix) for p in (REPO / "envs" / env, tmp_path / "same" / env, tmp_path / "bumped" / env))
    assert shipped == same  # the file's text names the environment, not where the file lies
    assert bumped != shipped


def test_pip_installs_the_checkout_only_as_the_release_the_environment_pins(tmp_path):
    """The env's plmexit entries, as conda hands them to pip (a requirements file, PLMEXIT_CHECKOUT
    expanded by pip), resolve to the checkout, editable, offline; a checkout of another release is
    refused. (pip 25.3, the envs' pip, was checked by hand to do the same.)"""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(e for e in pip_entries(ENVS[0]) if "plmexit" in e or e == EDITABLE) + "\n")

    def pip_dry_run():
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index", "--report", "-", "--quiet", "-r", str(requirements)]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PLMEXIT_CHECKOUT": str(checkout)})

    done = pip_dry_run()
    assert done.returncode == 0, done.stderr
    [installed] = json.loads(done.stdout)["install"]
    assert installed["metadata"]["name"] == "plmexit" and installed["metadata"]["version"] == plmexit.__version__
    assert installed["download_info"]["dir_info"] == {"editable": True}
    assert installed["download_info"]["url"] == checkout.as_uri() and installed["requested_extras"] == ["hub"]
    init = checkout / "src" / "plmexit" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{plmexit.__version__}"', '"999.0.0"'))
    refused = pip_dry_run()
    assert refused.returncode != 0 and "999.0.0" in refused.stderr
