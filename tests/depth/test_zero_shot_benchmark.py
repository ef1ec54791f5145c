"""The zero-shot benchmarks run and write what benchmarks/README.md quotes (tiny sizes)."""

import json
import subprocess
import sys

import pytest

from workflow_runs import REPO


def test_zero_shot_speed_writes_its_ratios(tmp_path, shared_data):
    out = tmp_path / "zero_shot_speed.json"
    command = [sys.executable, str(REPO / "benchmarks" / "zero_shot_speed.py"), "--layers", "2", "--dim", "16", "--heads", "2",
               "--positions", "3", "--batch-sizes", "1,3", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert {"loop_s", "runs", "best_exact", "machine", "versions", "variants", "mutated_positions"} <= set(result)
    assert result["mutated_positions"] == 3 and [(r["engine"], r["batch_size"]) for r in result["runs"]] == [("exact", 1), ("exact", 3), ("fused", 3)]
    assert all(r["max_abs_score_diff_last_layer"] < 1e-5 for r in result["runs"] if r["engine"] == "exact")


def test_zero_shot_windows_writes_old_and_new_differences(tmp_path):
    out = tmp_path / "zero_shot_windows.json"
    command = [sys.executable, str(REPO / "benchmarks" / "zero_shot_windows.py"), "--lengths", "1300", "--layers", "1", "--dim", "16", "--heads", "2",
               "--positions", "6", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert [(c["target_residues"], c["placement"]) for c in result["cases"]] == [(1300, "whole"), (1300, "region")]
    for case in result["cases"]:
        for method in ("masked_marginal", "wt_marginal"):
            found = case["methods"][method]
            assert {"max_abs_diff_last_layer", "mean_abs_diff_last_layer", "max_abs_diff_any_layer", "spearman_old_vs_new_last_layer"} <= set(found)
            assert found["new_max_abs_diff_to_proteingym_loop_last_layer"] < 1e-5  # the new path is ProteinGym's
            assert found["old_max_abs_diff_to_proteingym_loop_last_layer"] == pytest.approx(found["max_abs_diff_last_layer"], abs=1e-5)
            assert found["max_abs_diff_last_layer"] > 1e-3  # the old crop did not read what ProteinGym reads
