"""The shared pipeline run's failure report (tests/workflow_runs.py): the run's own error, in full once."""

from __future__ import annotations

import subprocess

import pytest

from workflow_runs import PipelineRun

FAILED_LOG = """\
Error in rule prepare_task:
    message: None
    jobid: 3
    output: results/tasks/bad.tsv
    log: results/logs/prepare_task/bad.log (check log file(s) for error details)
    shell:
        plmexit prepare ...
Exiting because a job execution failed. Look below for error messages
"""


def test_a_failed_run_is_reported_in_full_to_the_first_test_and_in_one_line_to_the_others(tmp_path):
    (tmp_path / "results/logs/prepare_task").mkdir(parents=True)
    (tmp_path / "results/logs/prepare_task/bad.log").write_text("reading bad.csv\nplmexit prepare: error: bad.csv: row 3 (row3): sequence has characters '*'\n")
    run = subprocess.CompletedProcess(["snakemake"], 1, stdout="Building DAG of jobs...\n", stderr=FAILED_LOG)
    outcome = PipelineRun.of(run, tmp_path, tmp_path / "config.yaml", 12.3)

    with pytest.raises(pytest.fail.Exception) as first:
        outcome.result("tests/x.py::test_first")
    message = str(first.value)
    assert message.startswith(f"the shared pipeline run (snakemake --configfile {tmp_path / 'config.yaml'}) failed: snakemake exited 1 after 12 s.")
    assert "Exiting because a job execution failed" in message  # Snakemake's own log
    assert "--- results/logs/prepare_task/bad.log (last 20 lines) ---\nreading bad.csv\nplmexit prepare: error: bad.csv: row 3" in message  # the job's
    with pytest.raises(pytest.fail.Exception, match=r"^the shared pipeline run \(conftest.py's pipeline_run\) failed; Snakemake's log is in the error of tests/x.py::test_first$"):
        outcome.result("tests/x.py::test_second")


def test_a_finished_run_is_its_directory_and_config(tmp_path):
    run = subprocess.CompletedProcess(["snakemake"], 0, stdout="", stderr="")
    assert PipelineRun.of(run, tmp_path, tmp_path / "config.yaml", 1.0).result("tests/x.py::test_first") == (tmp_path, tmp_path / "config.yaml")
