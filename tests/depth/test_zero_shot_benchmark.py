"""The zero-shot speed benchmark runs and writes what benchmarks/README.md quotes (tiny sizes)."""

import json
import subprocess
import sys

from workflow_runs import REPO


def test_zero_shot_speed_writes_its_ratios(tmp_path, shared_data):
    out = tmp_path / "zero_shot_speed.json"
    command = [sys.executable, str(REPO / "benchmarks" / "zero_shot_speed.py"), "--layers", "2", "--dim", "16", "--heads", "2",
               "--positions", "3", "--batch-sizes", "1,3", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert {"loop_s", "runs", "best_exact", "machine", "versions", "variants", "mutated_positions"} <= set(result)
    assert result["mutated_positions"] == 3 and [(r["engine"], r["batch_size"]) for r in result["runs"]] == [("exact", 1), ("exact", 3), ("fused", 3)]
    assert all(r["max_abs_score_diff_last_layer"] < 1e-5 for r in result["runs"] if r["engine"] == "exact")
