"""The two profiles of a cluster run: the workflow's own (profiles/default, every rule's resources),
which Snakemake loads by itself, and the site's (`plmexit install-profile`: account and partitions),
where `snakemake --profile slurm` finds it. Read back through Snakemake's own command-line parser
and the SLURM plugin's own partition selection; tests/pipeline/test_slurm.py submits for real."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml
from snakemake.cli import get_profile_dir, parse_args
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

from plmexit.cli import main

from workflow_runs import REPO

TEMPLATE = REPO / "profiles" / "slurm" / "config.yaml"
WORKFLOW_PROFILE = REPO / "profiles" / "default" / "config.yaml"
# The site profile's keys: the executor and its settings, the account, the partitions; no rule's.
SITE_KEYS = {
    "executor",
    "jobs",
    "retries",
    "keep-going",
    "latency-wait",
    "rerun-incomplete",
    "keep-incomplete",
    "printshellcmds",
    "default-resources",
    "slurm-partition-config",
    "resources",
    "set-resource-scopes",
}


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # Snakemake looks in the working directory first: nothing named slurm there
    return tmp_path / "xdg" / "snakemake"


def install(*args: str) -> int:
    return main(["install-profile", "--template", str(TEMPLATE), *args])


def rules_of_the_workflow() -> dict[str, str]:
    """Every rule of workflow/rules/*.smk with its text."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    return dict(re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M))


def snakemake_arguments(*args: str):
    """Snakemake's own reading of a command line: the installed profile by name, and the workflow
    profile it finds next to the Snakefile."""
    _, args = parse_args(["--snakefile", str(REPO / "Snakefile"), *args])
    return args


def test_the_gpu_rules_are_the_rules_that_run_a_model():
    """One declaration of GPU-ness: a rule asks for a GPU in the workflow profile exactly when its
    command runs a model on `--device auto`; every rule run off the submitting node has its memory."""
    resources = yaml.safe_load(WORKFLOW_PROFILE.read_text())["set-resources"]
    rules = rules_of_the_workflow()
    assert set(resources) <= set(rules)
    on_device = {name for name, body in rules.items() if "--device auto" in body}
    assert on_device == {"embed_shard", "measure_cost", "logit_lens", "zero_shot", "time_exit", "exit_lens"}
    assert {name for name, entry in resources.items() if "gpu" in entry} == on_device
    assert all(entry["gpu"] == 1 for name, entry in resources.items() if name in on_device)
    local = {"all", "figures", "fetch_data", "fetch_archive", "stage_assay", "fetch_model", "prepare_task"}  # localrules, and targets that run nothing
    assert {name for name, entry in resources.items() if "mem_mb" in entry} == set(rules) - local


def test_installed_where_snakemake_finds_the_profile_by_name_with_only_the_site(config_home):
    assert install("--account", "lab42", "--cpu-partition", "cpu", "--gpu-partition", "gpu", "--gpus", "4", "--squeue-status") == 0
    installed = config_home / "slurm" / "config.yaml"
    assert get_profile_dir("slurm") == (installed.parent, installed)
    got = yaml.safe_load(installed.read_text())
    assert set(got) == SITE_KEYS | {"slurm-status-command"}
    assert got["default-resources"] == {"slurm_account": "lab42", "disk_mb": 1000}
    assert got["slurm-status-command"] == "squeue"
    assert yaml.safe_load((config_home / "slurm" / "partitions.yaml").read_text()) == {"partitions": {"cpu": {"max_gpu": 0}, "gpu": {"max_gpu": 4}}}
    # A job or group asks for at most the GPUs of a node, a pool per submission (not a limit on the run).
    assert (got["resources"], got["set-resource-scopes"]) == ({"gpu": 4}, {"gpu": "local"})
    # Exactly the placeholder and the asked-for line change.
    shipped = TEMPLATE.read_text().replace("YOUR_ACCOUNT", "lab42").replace("YOUR_GPUS", "4").replace("# slurm-status-command: squeue", "slurm-status-command: squeue")
    assert installed.read_text() == shipped


def test_snakemake_reads_the_workflow_profile_and_the_site_profile_together(config_home):
    """Each profile keeps its own keys: the workflow's per-rule resources and threads, the site's
    account, partitions and executor; a key in both would be the workflow profile's, whole."""
    assert install("--account", "lab42", "--cpu-partition", "cpu", "--gpu-partition", "gpu") == 0
    args = snakemake_arguments("--profile", "slurm")
    workflow = yaml.safe_load(WORKFLOW_PROFILE.read_text())
    assert {rule: {k: r.raw for k, r in entry.items()} for rule, entry in args.set_resources.items()} == workflow["set-resources"]
    assert {rule: r.raw for rule, r in args.set_threads.items()} == workflow["set-threads"]
    assert args.cores == workflow["cores"]
    assert args.default_resources["slurm_account"].raw == "lab42" and "slurm_partition" not in args.default_resources
    assert args.executor == "slurm"
    assert args.slurm_partition_config == config_home / "slurm" / "partitions.yaml"
    assert ({k: r.raw for k, r in args.resources.items()}, dict(args.set_resource_scopes)) == ({"gpu": 1}, {"gpu": "local"})
    # The command line replaces a key whole (docs/slurm.md says so): here the workflow's threads.
    assert {rule: r.raw for rule, r in snakemake_arguments("--profile", "slurm", "--set-threads", "probe_layers=2").set_threads.items()} == {"probe_layers": 2}


class Logger:
    def info(self, message):
        pass

    debug = warning = info


def partition_of(partition_file, rule: str, resources: dict) -> str:
    """The partition the SLURM plugin picks for a job of ``rule`` with ``resources``."""
    job = SimpleNamespace(name=rule, threads=resources.get("threads", 1), resources=resources)
    return get_best_partition(read_partition_file(partition_file), job, Logger())


def test_the_plugin_sends_gpu_jobs_to_the_gpu_partition_and_the_rest_to_the_cpu_one(config_home):
    assert install("--account", "a", "--cpu-partition", "cpu", "--gpu-partition", "gpu") == 0
    partitions = config_home / "slurm" / "partitions.yaml"
    workflow = yaml.safe_load(WORKFLOW_PROFILE.read_text())
    for rule, entry in workflow["set-resources"].items():
        # Memory and time of a third attempt, the probe's 8 threads: none of it sways the choice.
        resources = {"mem_mb": 96000, "runtime": 720, "threads": 8, **({"gpu": entry["gpu"]} if "gpu" in entry else {})}
        assert partition_of(partitions, rule, resources) == ("gpu" if "gpu" in entry else "cpu"), rule
    # A batch of CPU steps (a job group) asks for no GPU either.
    assert partition_of(partitions, "group batch", {"mem_mb": 16000, "runtime": 1800, "threads": 8}) == "cpu"


def test_one_partition_for_both_and_a_cluster_without_gpus(config_home):
    assert install("--account", "a", "--cpu-partition", "all", "--gpu-partition", "all", "--gpus", "2") == 0
    partitions = config_home / "slurm" / "partitions.yaml"
    assert yaml.safe_load(partitions.read_text()) == {"partitions": {"all": {"max_gpu": 2}}}
    assert partition_of(partitions, "embed_shard", {"gpu": 1}) == partition_of(partitions, "probe_layers", {"threads": 8}) == "all"

    assert install("--account", "a", "--cpu-partition", "cpu", "--name", "cpu_only") == 0
    got = yaml.safe_load((config_home / "cpu_only" / "config.yaml").read_text())
    assert got["resources"] == {"gpu": 0}  # every job's GPUs capped at 0
    assert "slurm-status-command" not in got  # sacct, the plugin's default, unless asked
    assert yaml.safe_load((config_home / "cpu_only" / "partitions.yaml").read_text()) == {"partitions": {"cpu": {"max_gpu": 0}}}
    assert snakemake_arguments("--profile", "cpu_only").resources["gpu"].raw == 0


def test_an_installed_profile_is_replaced_only_when_asked(config_home, capsys):
    assert install("--account", "a", "--cpu-partition", "p") == 0
    before = {name: (config_home / "slurm" / name).read_text() for name in ("config.yaml", "partitions.yaml")}
    assert install("--account", "b", "--cpu-partition", "q") == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("a profile named 'slurm' is already installed; pass --force to replace it or --name to install beside it")
    assert {name: (config_home / "slurm" / name).read_text() for name in before} == before
    assert install("--account", "b", "--cpu-partition", "q", "--force") == 0
    assert "slurm_account: b" in (config_home / "slurm" / "config.yaml").read_text()
    assert yaml.safe_load((config_home / "slurm" / "partitions.yaml").read_text()) == {"partitions": {"q": {"max_gpu": 0}}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--account", "my lab", "--cpu-partition", "p"), "--account 'my lab' is not a SLURM name (letters, digits, '_', '.', '+', '-'); give it as `sinfo` prints it"),
        (
            ("--account", "a", "--cpu-partition", "p", "--gpu-partition", "gpu nodes"),
            "--gpu-partition 'gpu nodes' is not a SLURM name (letters, digits, '_', '.', '+', '-'); give it as `sinfo` prints it",
        ),
        (("--account", "a", "--cpu-partition", "p", "--gpus", "2"), "--gpus 2 needs --gpu-partition: the partition whose nodes have the GPUs"),
        (("--account", "a", "--cpu-partition", "p", "--gpu-partition", "g", "--gpus", "0"), "--gpus 0: give the GPUs one job may use on a node of the GPU partition, 1 or more"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_option_and_writes_nothing(config_home, capsys, args, message):
    assert install(*args) == 1
    assert capsys.readouterr().err.strip() == f"plmexit install-profile: error: {message}"
    assert not (config_home / "slurm").exists()
