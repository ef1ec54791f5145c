"""The benchmarks run and write the keys the README and the issue quote (tiny sizes)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from plmexit.data.tasks import sequences_sha256, write_task_table
from plmexit.embedding import store

from workflow_runs import REPO

# One BLAS and OpenMP thread for every benchmark (the torch ones take --threads 1 as well): at these tiny
# sizes a thread pool only spins (probe_speed: 56 s of CPU against 10 s on one thread on a loaded 2-core
# machine), and these tests check what the benchmark writes, not its timings.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_probe_speed_writes_its_ratios(tmp_path):
    out = tmp_path / "probe_speed.json"
    command = [sys.executable, str(REPO / "benchmarks" / "probe_speed.py"), "--n", "60", "--dim", "24", "--layers", "2",
               "--classification-n", "80", "--classification-layers", "1", "--multilabel-layers", "1", "--parallel-layers", "3", "--threads", "2",
               "--grouped-layers", "1", "--grouped-n", "120", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert {"ours_s", "reference_s", "ratio", "max_abs_diff"} <= set(result)
    assert result["max_abs_diff"] < 1e-6 and result["alpha_mismatches"] == 0
    logistic = result["classification"]
    assert {"ours_s", "reference_s", "ratio", "reference_one_blas_thread_s", "mean_prediction_agreement"} <= set(logistic)
    assert logistic["fits"] == 5 and logistic["min_prediction_agreement"] >= 0.5  # same objective: most predictions agree
    parallel = result["parallel"]
    assert parallel["identical_tables"] and parallel["threads"] == 2 and parallel["layers"] == 3
    multilabel = result["multilabel"]
    assert multilabel["fits"] == 5 and multilabel["max_abs_probability_diff"] < 0.5
    grouped = result["grouped"]
    assert {"ours_s", "reference_s", "ratio", "ours_loo_s", "grouped_over_loo"} <= set(grouped)
    assert grouped["fits_compared"] == 6 and grouped["alpha_mismatches"] == 0  # 5 outer folds and the deploy fit
    assert grouped["max_abs_diff"] < 1e-6 and grouped["max_inner_score_diff"] < 1e-6


def test_probe_agreement_compares_every_layer_and_fold_with_scikit_learn(tmp_path):
    n = 45
    table = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "sequence": "MKV", "label": np.array(["a", "b", "c"])[np.arange(n) % 3],
                          "fold": np.arange(n) % 3})
    write_task_table(table, tmp_path / "task.tsv")
    attrs = {"input_sha256": sequences_sha256(table["id"], table["sequence"])}
    layers = np.random.default_rng(0).normal(size=(3, n, 6)) + (np.arange(n) % 3)[None, :, None]  # a class signal on every feature
    with store.create_store(tmp_path / "e.h5", list(table["id"]), 2, 6, "float32", attrs, np.full(n, 3), np.zeros(n, dtype=bool)) as writer:
        writer.write(np.arange(n), layers)
    out = tmp_path / "agreement.json"
    command = [sys.executable, str(REPO / "benchmarks" / "probe_agreement.py"), "--embeddings", str(tmp_path / "e.h5"),
               "--task", str(tmp_path / "task.tsv"), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert (result["layers"], result["fits"], result["predictions"]) == (3, 9, 3 * n)  # 3 layers x 3 evaluation folds
    assert result["c_matches"] == 9 and result["identical_predictions"] == 3 * n and result["max_inner_score_diff"] < 1e-9
    assert result["ours_s"] > 0 and result["reference_s"] > 0


def test_bootstrap_metrics_times_both_paths_and_finds_the_same_intervals(tmp_path):
    out = tmp_path / "bootstrap_metrics.json"
    command = [sys.executable, str(REPO / "benchmarks" / "bootstrap_metrics.py"), "--items", "60", "--classes", "8", "--folds", "2",
               "--bootstrap", "20", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    for task_type in ("regression", "multilabel"):
        assert result[task_type]["same_interval"] and result[task_type]["ours_s"] > 0 and result[task_type]["library_s"] > 0
        low, high = result[task_type]["interval"]
        assert low <= high


def test_variant_precision_writes_what_the_readme_quotes(tmp_path):
    out = tmp_path / "variant_precision.json"
    command = [sys.executable, str(REPO / "benchmarks" / "variant_precision.py"), "--length", "60", "--variants", "30", "--layers", "1",
               "--dim", "16", "--heads", "2", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert set(result["stores"]) == {"float32", "float16", "float16_relative"}
    assert [result["stores"][s]["bytes_per_variant"] for s in ("float32", "float16")] == [2 * 16 * 4, 2 * 16 * 2]
    assert all(layer["max_abs_prediction_diff_from_float32"] == 0 for layer in result["stores"]["float32"]["layers"])


def test_embed_hub_writes_its_ratios(tmp_path):
    out = tmp_path / "embed_hub.json"
    command = [sys.executable, str(REPO / "benchmarks" / "embed_hub.py"), "--n", "4", "--chunk", "2", "--layers", "2", "--dim", "16",
               "--heads", "2", "--threads", "1", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert set(result["tokens_per_s"]) == {"hub", "fair_esm", "hooked", "hand_sdpa", "hand_eager"}
    assert {"hub_over_fair_esm", "hub_over_hand_sdpa", "hub_over_hand_eager"} <= set(result["ratios"])
    assert result["max_rel_diff_to_hub"]["fair_esm"] == 0.0  # one encoder over the same weights
    assert max(result["max_rel_diff_to_hub"].values()) < 1e-5
    assert result["versions"]["transformers"] and result["device_name"]


def test_fp32_levers_writes_its_ratios_and_the_roofline(tmp_path):
    out = tmp_path / "fp32_levers.json"
    command = [sys.executable, str(REPO / "benchmarks" / "fp32_levers.py"), "--sequences", "3", "--rounds", "2", "--layers", "2", "--dim", "16",
               "--heads", "2", "--threads", "1", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert {"before", "plmexit", "hf_sdpa", "weight_gemms", "weight_gemms_onednn"} <= set(result["speedup_over_before_paired_wall"])
    assert max(max(layers) for layers in result["max_rel_deviation_from_before_per_layer"].values()) < 1e-5
    assert {"needed_fraction_of_peak", "needed_fraction_of_weight_gemm_roofline"} <= set(result["target_1_3x_hf_sdpa"])
    assert result["plmexit_matmul"] in ("onednn", "addmm")


def test_cost_depth_compares_the_two_measurements(tmp_path):
    out = tmp_path / "cost_depth.json"
    command = [sys.executable, str(REPO / "benchmarks" / "cost_depth.py"), "--layers", "2", "--dim", "16", "--heads", "2", "--sample", "2",
               "--repeats", "1", "--rounds", "1", "--threads", "1", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())
    assert set(result["seconds_per_depth"]) == {"timestamps", "separate_forwards"}
    assert all(len(v) == 3 for v in result["seconds_per_depth"].values())
    assert len(result["relative_difference_per_depth"]) == 3 and result["separate_over_timestamps"] > 0
    assert result["machine"]["cpus"] and result["command"] and result["date"]


def test_interval_coverage_position_clusters_cover_a_zero_gain_and_variants_do_not(tmp_path):
    """The simulation of benchmarks/interval_coverage.py at a small size (fold_random_5, 20 seeded draws): with
    errors shared by a position's variants the per-variant interval covers the true gain 0 far less often than
    its 95%, the position one near it. Observed with these settings: 0.40 and 0.90."""
    out = tmp_path / "interval_coverage.json"
    command = [sys.executable, str(REPO / "benchmarks" / "interval_coverage.py"), "--schemes", "fold_random_5", "--draws", "20",
               "--resamples", "100", "--positions", "30", "--per-position", "10", "--position-error", "1.0", "--variant-error", "0.1",
               "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    result = json.loads(out.read_text())["schemes"]["fold_random_5"]
    assert result["positions"]["coverage_of_0"] >= 0.8
    assert result["variants"]["coverage_of_0"] <= 0.65
    assert result["positions"]["mean_width"] > 1.5 * result["variants"]["mean_width"]


def test_homology_folds_ec_writes_both_splits_and_their_moves(tmp_path, shared_data):
    from system_programs import require

    require(("mmseqs2",), ("mmseqs",), "the homology folds benchmark (MMseqs2)")
    out = tmp_path / "homology_folds_ec.json"
    command = [sys.executable, str(REPO / "benchmarks" / "homology_folds_ec.py"), "--data", str(shared_data / "deepfri_ec"), "--max-sequences", "60",
               "--layers", "2", "--dim", "16", "--heads", "2", "--cv-folds", "3", "--bootstrap", "20", "--fold-seeds", "0", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=ONE_THREAD)

    size = json.loads(out.read_text())["sizes"]["60"]
    random, homology = size["random"][0], size["homology"][0]
    assert random["split"] == "3-fold cross-validation (stratified), seed 0"
    assert homology["split"] == "3-fold cross-validation by MMseqs2 clusters at 0.3 identity (stratified), seed 0"
    assert homology["leak"]["test_chains_with_a_homolog_trained_on"] == 0  # whole clusters per fold
    assert homology["bootstrap_unit"].startswith("MMseqs2 sequence clusters") and random["bootstrap_unit"].startswith("test items")
    assert size["moves"]["gain"] == homology["gain"] - random["gain"]
    assert size["clustering"]["n_sequences"] == 60 == size["chains"] and sum(homology["fold_sizes"]) == 60
    assert size["homology_over_fold_seeds"]["deployed_layers"] == [homology["deployed_layer"]]


GPU_MEASUREMENTS = ["equality", "throughput", "memory", "cost_depth", "zero_shot", "exit"]
GPU_PATHS = {"plmexit_bfloat16", "plmexit_float32", "plmexit_bfloat16_max_tokens_4096", "fair_esm_extract", "hf_sdpa_bfloat16"}


def test_the_gpu_script_runs_every_measurement_on_the_cpu(tmp_path):
    """`bash benchmarks/gpu.sh --smoke`: every path of the GPU run at tiny shapes on the CPU, one JSON per measurement
    headed by the device, versions and measured matmul peaks, so the script a GPU session runs first cannot rot."""
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--smoke", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, env={**ONE_THREAD, "PLMEXIT_PYTHON": sys.executable}, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["measurements"]) == GPU_MEASUREMENTS
    results = {}
    for name in GPU_MEASUREMENTS:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["status"] == "ok", record["result"]
        assert record["device"] == "cpu" and record["device_name"] and record["versions"]["torch"] and record["versions"]["fair_esm"]
        assert "random" in record["weights"] and "synthetic" in record["sequences"]
        for dtype in ("bfloat16", "float32"):
            peak = record["peaks"][dtype]
            assert peak["measured"]["flops_per_s"] == max(peak["measured"]["rates"].values()) > 0 and "theoretical" in peak
        results[name] = record["result"]
    assert results["equality"]["precisions"]["float32"]["max_rel_deviation"] <= 1e-5
    assert set(results["equality"]["precisions"]) == {"float32", "bfloat16", "float16"}
    for workload in ("proteingym_like", "deeploc_like"):
        w = results["throughput"]["workloads"][workload]
        assert set(w["tokens_per_s"]) == GPU_PATHS and max(w["fraction_of_own_precision_peak"].values()) <= 1
        assert w["max_rel_deviation_from_fair_esm_extract"]["plmexit_float32"] <= 1e-5
    assert set(results["throughput"]["targets"]) == {f"{w}.{t}" for w in ("proteingym_like", "deeploc_like")
                                                     for t in ("bfloat16_over_extract", "bfloat16_over_hf_sdpa_bfloat16", "bfloat16_fraction_of_bfloat16_peak")}
    memory = results["memory"]
    assert 0 < memory["largest_fitting_tokens"] <= memory["simulated_device_tokens"] < memory["smallest_failing_tokens"]
    assert memory["confirmed_at_full_depth"] and memory["oom_split"]["recovered"] and memory["oom_split"]["splits"] >= 1
    assert all(len(v) == 3 for r in results["cost_depth"].values() for v in r["seconds_per_depth"].values())  # 2 layers: depths 0, 1, 2
    assert results["zero_shot"]["identical_scores_max_abs_diff"] < 1e-4 and "zero_shot_batched_over_loop" in results["zero_shot"]["targets"]
    assert {"full_depth", "static_layer", "adaptive"} <= set(results["exit"]["calibrated"]["seconds"])


def test_a_failing_gpu_measurement_is_recorded_and_the_run_goes_on(tmp_path):
    """A measurement that raises writes its JSON with status failed and the traceback; ``run_one`` returns normally."""
    code = (
        "import gpu, json, pathlib, sys\n"
        "def broken(ctx):\n    raise RuntimeError('CUDA error: simulated')\n"
        "gpu.MEASUREMENTS['equality'] = broken\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "record = gpu.run_one(gpu.Context('cpu', gpu.SMOKE, 0), 'equality', {'device': 'cpu'}, out)\n"
        "print(record['status'])\n"
    )
    env = {**ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["failed"]
    record = json.loads((tmp_path / "equality.json").read_text())
    assert record["status"] == "failed" and record["device"] == "cpu" and record["budget_s"] == 60
    assert record["result"]["error"] == "RuntimeError: CUDA error: simulated" and "in broken" in record["result"]["traceback"]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_measured_peak_above_the_nominal_clocks_names_the_clock_it_implies(monkeypatch):
    """A boosting CPU beats its theoretical peak at the nominal clock (an EPYC 9004 in a VM: 227 against 166
    GFLOP/s): the JSON says which clock the measurement implies instead of quoting a fraction above 100%."""
    roofline = load_benchmark("roofline")
    monkeypatch.setattr(roofline, "measured_peak", lambda device, dtype, sizes, repeats: {"flops_per_s": 227e9})
    monkeypatch.setattr(roofline, "cpu_theoretical", lambda dtype: {"flops_per_s": 166e9, "clock_hz": 2.6e9})
    result = roofline.roofline("cpu", __import__("torch").float32)
    assert result["implied_clock_hz"] == pytest.approx(2.6e9 * 227 / 166) and "boost" in result["theoretical_note"]
    monkeypatch.setattr(roofline, "measured_peak", lambda device, dtype, sizes, repeats: {"flops_per_s": 100e9})
    assert "implied_clock_hz" not in roofline.roofline("cpu", __import__("torch").float32)


def test_the_roofline_fails_above_the_measured_peak_and_knows_its_cpus():
    roofline = load_benchmark("roofline")
    roofline.check_fraction(0.99, "plmexit")
    with pytest.raises(roofline.RooflineError, match=r"plmexit ran at 150% of the measured matmul peak, above 100%"):
        roofline.check_fraction(1.5, "plmexit")
    spr = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "fma", "avx2"})
    assert roofline.cpu_flops_per_cycle("float32", "GenuineIntel", 6, spr)[0] == 64
    assert roofline.cpu_flops_per_cycle("bfloat16", "GenuineIntel", 6, spr)[0] == 1024  # AMX
    genoa = frozenset({"avx512f", "avx512_bf16", "fma", "avx2"})
    assert [roofline.cpu_flops_per_cycle(d, "AuthenticAMD", 0x19, genoa)[0] for d in ("float32", "bfloat16")] == [32, 64]
    assert roofline.cpu_flops_per_cycle("bfloat16", "AuthenticAMD", 0x19, frozenset({"fma", "avx2"}))[0] is None
    peak = roofline.measured_peak("cpu", __import__("torch").float32, sizes=(64, 128), repeats=1)
    assert peak["flops_per_s"] == max(peak["rates"].values()) and {"torch.mm 64", "torch.mm 128"} <= set(peak["rates"])
