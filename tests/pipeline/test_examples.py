"""The "Your own data" example: its CSV is remade byte for byte, and the README's command runs it on a
fresh copy of the repository with no ../shared beside it and no network."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pandas as pd
import pytest

from plmexit.probing.choice import SUMMARY_COLUMNS

from workflow_runs import REPO, snakemake_env

EXAMPLE_COMMAND = "snakemake --cores 2 --configfile examples/config.yaml"


def test_the_example_csv_is_remade_exactly(tmp_path):
    spec = importlib.util.spec_from_file_location("make_example_task", REPO / "examples" / "make_example_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    module.write(str(tmp_path / "my_proteins.csv"))

    assert (tmp_path / "my_proteins.csv").read_bytes() == (REPO / "examples" / "my_proteins.csv").read_bytes()


def test_the_readme_names_the_example_command():
    assert EXAMPLE_COMMAND in (REPO / "README.md").read_text()


def fresh_clone(tmp_path):
    """The repository's tracked files, as a clone has them, in a directory with no ../shared beside it."""
    clone = tmp_path / "isolated" / "plmexit"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    assert not (clone.parent / "shared").exists()
    return clone


@pytest.mark.workflow
def test_the_example_runs_on_a_fresh_clone_without_shared_data(tmp_path):
    clone = fresh_clone(tmp_path)

    run = subprocess.run(EXAMPLE_COMMAND.split(), cwd=clone, capture_output=True, text=True, env=snakemake_env())

    assert run.returncode == 0, run.stderr[-3000:]
    summary = pd.read_csv(clone / "results" / "example" / "summary" / "best_layers.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["task"].tolist() == ["my_charge", "my_location"]
    assert summary["metric"].tolist() == ["spearman", "accuracy"]
    assert not (clone / "results" / "example" / "data").exists()  # nothing fetched
    # The run ends with the answer: where the summary is, and one line per task.
    closing = run.stdout.strip().splitlines()[-3:]
    assert closing[0] == "plmexit: 2 tasks summarised in results/example/summary/best_layers.tsv (figures in results/example/figures/); the deployed layer of each:"
    assert closing[1].startswith("  tiny_random / my_charge: layer ") and " of 4, spearman " in closing[1]
    assert closing[2].startswith("  tiny_random / my_location: layer ") and " of 4, accuracy " in closing[2]


def test_the_readme_puts_what_a_user_needs_first_and_the_benchmarks_in_their_own_readme():
    readme = (REPO / "README.md").read_text()
    sections = [line[3:] for line in readme.splitlines() if line.startswith("## ")]
    assert sections == ["What it answers", "Quick start", "Your own data", "Reading the results", "Documentation"]
    for topic in ("configuration", "models", "slurm", "results"):
        assert f"(docs/{topic}.md)" in readme, f"README.md does not link docs/{topic}.md"
    assert "## Probe speed" not in readme and "## Embedding speed" not in readme
    benchmarks = (REPO / "benchmarks" / "README.md").read_text()
    assert "## Probe speed" in benchmarks and "## Embedding speed" in benchmarks
