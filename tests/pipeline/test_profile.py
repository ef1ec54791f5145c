"""`plmexit install-profile`: the shipped SLURM profile, site values filled in, where `snakemake --profile slurm` finds it."""

from __future__ import annotations

import pytest
import yaml
from snakemake.cli import get_profile_dir

from plmexit.cli import main

from workflow_runs import REPO

TEMPLATE = REPO / "profiles" / "slurm" / "config.yaml"


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # Snakemake looks in the working directory first: nothing named slurm there
    return tmp_path / "xdg" / "snakemake"


def install(*args: str) -> int:
    return main(["install-profile", "--template", str(TEMPLATE), *args])


def test_installed_where_snakemake_finds_the_profile_by_name(config_home):
    assert install("--account", "lab42", "--partition", "gpu", "--gpu-type", "a100", "--squeue-status") == 0
    installed = config_home / "slurm" / "config.yaml"
    assert get_profile_dir("slurm") == (installed.parent, installed)
    shipped, got = yaml.safe_load(TEMPLATE.read_text()), yaml.safe_load(installed.read_text())
    assert got["default-resources"] == {"slurm_account": "lab42", "slurm_partition": "gpu"}
    assert got["slurm-status-command"] == "squeue"
    # Exactly the placeholders change: every rule keeps its resources, GPU rules get the site's type.
    for rule, resources in shipped["set-resources"].items():
        expected = {k: (v.replace("YOUR_GPU_TYPE", "a100") if k == "gres" else v) for k, v in resources.items()}
        assert got["set-resources"][rule] == expected
    assert {k: v for k, v in got.items() if k not in ("default-resources", "set-resources", "slurm-status-command")} == {
        k: v for k, v in shipped.items() if k not in ("default-resources", "set-resources")
    }


def test_any_gpu_and_no_gpu(config_home):
    assert install("--account", "a", "--partition", "p", "--gpu-type", "any") == 0
    gres = {r["gres"] for r in yaml.safe_load((config_home / "slurm" / "config.yaml").read_text())["set-resources"].values() if "gres" in r}
    assert gres == {"gpu:1"}
    assert install("--account", "a", "--partition", "p", "--no-gpu", "--name", "cpu_only") == 0
    got = yaml.safe_load((config_home / "cpu_only" / "config.yaml").read_text())
    assert not any("gres" in r for r in got["set-resources"].values())
    assert "slurm-status-command" not in got  # sacct, the plugin's default, unless asked


def test_an_installed_profile_is_replaced_only_when_asked(config_home, capsys):
    assert install("--account", "a", "--partition", "p", "--no-gpu") == 0
    before = (config_home / "slurm" / "config.yaml").read_text()
    assert install("--account", "b", "--partition", "p", "--no-gpu") == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("a profile named 'slurm' is already installed; pass --force to replace it or --name to install beside it")
    assert (config_home / "slurm" / "config.yaml").read_text() == before
    assert install("--account", "b", "--partition", "p", "--no-gpu", "--force") == 0
    assert "slurm_account: b" in (config_home / "slurm" / "config.yaml").read_text()


def test_a_value_that_is_not_a_slurm_name_is_one_line_and_writes_nothing(config_home, capsys):
    assert install("--account", "my lab", "--partition", "p", "--no-gpu") == 1
    assert capsys.readouterr().err.strip() == (
        "plmexit install-profile: error: --account 'my lab' is not a SLURM name (letters, digits, '_', '.', '+', '-'); give it as `sinfo` prints it"
    )
    assert not (config_home / "slurm").exists()
