"""The resource summary counts what the benchmark records say, and no more: wall, GPU- and CPU-hours per model and rule.

Hand-made records in Snakemake's own format (its basic and extended headers, ``snakemake.benchmark``), and the
records the shared pipeline run left, summed again here with the standard library.
"""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.errors import InputError
from plmexit.pipeline.report_steps import summarize_resources
from plmexit.reporting import resources

BASIC = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]
EXTENDED = [*BASIC, "jobid", "rule_name", "wildcards", "params", "threads", "cpu_usage", "resources", "input_size_mb"]


def record(seconds, cpu_time, rss, threads=None, resources_=None) -> str:
    """A benchmark TSV as Snakemake writes it (``print_benchmark_tsv``): extended when ``threads`` is given."""
    row = [f"{seconds:.2f}", "0:00:00", rss, "1.0", "1.0", "1.0", "0.1", "0.2", "0.5", cpu_time]
    if threads is None:
        return "\t".join(BASIC) + "\n" + "\t".join(map(str, row)) + "\n"
    resources_ = {"mem_mb": 1000, "mem_mib": 954, "disk_mb": 1000, "disk_mib": 954, "tmpdir": "/tmp", "_cores": threads, "_nodes": 1, **(resources_ or {})}
    row += [7, "embed_shard", {"model": "m", "set": "s"}, {"dtype": "float16"}, threads, "1.2", resources_, {"results/models/m.json": 0.1}]
    return "\t".join(EXTENDED) + "\n" + "\t".join(map(str, row)) + "\n"


def read_summary(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"gpus": str, "threads": str})


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("request_", "gpus"), [
    ({}, 0), ({"gres": "gpu:a100:1"}, 1), ({"gres": "gpu:2"}, 2), ({"gres": "gpu:h100"}, 1), ({"gres": "gpu"}, 1),
    ({"gres": "lscratch:10,gpu:a100:4"}, 4), ({"gres": "lscratch:10"}, 0), ({"gpu": 2, "slurm_account": "lab"}, 2), ({"gpu": 2, "gres": "gpu:a100:2"}, 2),
    ({"gpu": 1}, 0),  # the local executor: a count Snakemake schedules by, no device
])
def test_the_gpus_a_job_held_are_its_request(request_, gpus):
    assert resources.gpu_count(request_) == gpus


def test_an_extended_record_gives_threads_and_gpus_and_a_basic_one_only_times(tmp_path):
    extended = resources.read_record(write(tmp_path, "a.tsv", record(7200.0, 3000.5, 812.25, threads=2, resources_={"gres": "gpu:a100:1"})))
    assert extended == {"seconds": 7200.0, "cpu_seconds": 3000.5, "unsampled": 0, "max_rss_mb": 812.25, "threads": 2.0, "gpus": 1}
    basic = resources.read_record(write(tmp_path, "b.tsv", record(1.5, "NA", "NA")))
    assert basic["seconds"] == 1.5 and basic["unsampled"] == 1
    assert all(math.isnan(basic[k]) for k in ("cpu_seconds", "max_rss_mb", "threads", "gpus"))


def test_the_summary_is_wall_times_gpus_and_wall_times_threads_per_model_and_rule(tmp_path):
    records = pd.DataFrame([
        {"model": "m", "rule": "embed_shard", **resources.read_record(write(tmp_path, "1.tsv", record(3600.0, 1800.0, 500.0, 2, {"gres": "gpu:a100:1"})))},
        {"model": "m", "rule": "embed_shard", **resources.read_record(write(tmp_path, "2.tsv", record(1800.0, 900.0, 700.0, 2, {"gres": "gpu:a100:2"})))},
        {"model": "m", "rule": "probe_layers", **resources.read_record(write(tmp_path, "3.tsv", record(360.0, 2000.0, 300.0, 8)))},
        {"model": "m", "rule": "probe_layers", **resources.read_record(write(tmp_path, "4.tsv", record(0.3, "NA", "NA", 8)))},
        {"model": "n", "rule": "probe_layers", **resources.read_record(write(tmp_path, "5.tsv", record(36.0, 30.0, 100.0)))},
    ])
    table = resources.summarize(records).set_index(["model", "rule"])
    assert list(table.reset_index().columns) == resources.COLUMNS
    embed = table.loc[("m", "embed_shard")]
    assert embed["jobs"] == 2 and embed["wall_hours"] == pytest.approx(1.5)
    assert embed["gpus"] == "1;2" and embed["gpu_hours"] == pytest.approx(1.0 * 1 + 0.5 * 2)
    assert embed["threads"] == "2" and embed["cpu_hours"] == pytest.approx(1.5 * 2)
    assert embed["cpu_time_hours"] == pytest.approx(0.75) and embed["unsampled_jobs"] == 0 and embed["max_rss_mb"] == 700.0
    probe = table.loc[("m", "probe_layers")]
    assert probe["gpus"] == "0" and probe["gpu_hours"] == 0.0  # a CPU job: no GPU request
    assert probe["cpu_hours"] == pytest.approx((360.0 + 0.3) * 8 / 3600)
    assert probe["cpu_time_hours"] == pytest.approx(2000.0 / 3600) and probe["unsampled_jobs"] == 1  # the 0.3 s job: never sampled
    basic = table.loc[("n", "probe_layers")]  # recorded without --benchmark-extended: no threads, no GPUs, no hours made up
    assert basic["gpus"] == "" and math.isnan(basic["gpu_hours"]) and basic["threads"] == "" and math.isnan(basic["cpu_hours"])
    assert basic["wall_hours"] == pytest.approx(0.01) and basic["cpu_time_hours"] == pytest.approx(30.0 / 3600)


def test_the_step_reads_the_models_records_in_the_workflows_layout_and_the_cli_writes_the_table(tmp_path):
    root = tmp_path / "benchmarks"
    write(root, "embed_shard/m/s/0-of-2.tsv", record(100.0, 90.0, 10.0, 2, {"gres": "gpu:a100:1"}))
    write(root, "embed_shard/m/s/1-of-2.tsv", record(200.0, 190.0, 20.0, 2, {"gres": "gpu:a100:1"}))
    write(root, "probe_layers/m/task.a.tsv", record(50.0, 40.0, 5.0, 1))
    write(root, "probe_layers/other/task.tsv", record(9999.0, 1.0, 1.0, 1))  # another config's model: not counted
    out = tmp_path / "resources.tsv"

    assert main(["summarize-resources", "--benchmarks", str(root), "--models", "m", "--out", str(out)]) == 0
    table = read_summary(out)
    assert list(zip(table["model"], table["rule"], table["jobs"], table["gpus"])) == [("m", "embed_shard", 2, "1"), ("m", "probe_layers", 1, "0")]
    assert table["gpu_hours"].tolist() == pytest.approx([300.0 / 3600, 0.0], rel=1e-5)  # written to 6 significant digits
    assert table["cpu_hours"].tolist() == pytest.approx([600.0 / 3600, 50.0 / 3600], rel=1e-5)
    empty = summarize_resources(root, ["absent"], tmp_path / "none.tsv")  # no record yet: a table with no rows
    assert empty.empty and (tmp_path / "none.tsv").read_text().strip() == "\t".join(resources.COLUMNS)


@pytest.mark.parametrize(("text", "message"), [
    ("", r"not a Snakemake benchmark record"),
    ("s\th:m:s\n1.0\t0:00:01\n", r"no column 'max_rss', 'cpu_time'"),
    ("\t".join(BASIC) + "\n", r"no rows"),
    (record(1.0, "1.0", "1.0").replace("1.00", "soon"), r"column 's' holds 'soon', not a number"),
    (record(1.0, 1.0, 1.0, threads=2).replace("{'mem_mb'", "<Resources {'mem_mb'"), r"column 'resources' is not a Snakemake resources record"),
])
def test_a_record_that_is_not_snakemakes_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, "embed_shard/m/x.tsv", text)
    with pytest.raises(InputError, match=message) as error:
        resources.read_record(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def by_hand(benchmarks: Path, model: str) -> dict[str, dict]:
    """The summary of one model's records, summed with the standard library: wall x GPUs requested, wall x threads."""
    sums: dict[str, dict] = {}
    for path in sorted(benchmarks.glob(f"*/{model}/**/*.tsv")):
        with path.open() as f:
            (row,) = list(csv.DictReader(f, delimiter="\t"))
        request = ast.literal_eval(row["resources"])
        submitted = any(key.startswith("slurm_") for key in request)  # a local job's gpu holds no device
        gpus = (int(request.get("gpu") or 0) if submitted else 0) or sum(1 for item in str(request.get("gres") or "").split(",") if item.startswith("gpu"))
        rule = sums.setdefault(path.relative_to(benchmarks).parts[0], {"jobs": 0, "wall": 0.0, "gpu": 0.0, "cpu": 0.0, "threads": set()})
        rule["jobs"] += 1
        rule["wall"] += float(row["s"])
        rule["gpu"] += float(row["s"]) * gpus
        rule["cpu"] += float(row["s"]) * int(row["threads"])
        rule["threads"].add(int(row["threads"]))
    return sums


@pytest.mark.workflow
def test_the_runs_summary_adds_up_the_records_snakemake_wrote(finished_run):
    """Every model job of the offline run left an extended record beside its log; the run's table sums them."""
    workdir, _ = finished_run
    results = workdir / "results"
    benchmarks = results / "benchmarks"
    for path in benchmarks.rglob("*.tsv"):  # beside its job's log
        log = results / "logs" / path.relative_to(benchmarks).with_suffix(".log")
        assert log.is_file(), path
    table = read_summary(results / "summary" / "resources.tsv")
    assert list(table.columns) == resources.COLUMNS
    expected = by_hand(benchmarks, "tiny_random")
    assert {"embed_shard", "gather_embeddings", "measure_cost", "probe_layers", "logit_lens", "zero_shot", "exit_task", "time_exit", "exit_lens"} <= set(expected)
    mine = table[table["model"] == "tiny_random"].set_index("rule")
    assert sorted(mine.index) == sorted(expected)
    for rule, sums in expected.items():
        row = mine.loc[rule]
        assert row["jobs"] == sums["jobs"] and row["wall_hours"] == pytest.approx(sums["wall"] / 3600, rel=1e-5, abs=1e-9), rule
        assert row["gpu_hours"] == 0.0 and row["gpus"] == "0", rule  # a local run holds no GPU
        assert row["cpu_hours"] == pytest.approx(sums["cpu"] / 3600, rel=1e-5, abs=1e-9), rule
        assert row["threads"] == ";".join(map(str, sorted(sums["threads"]))), rule
    # The rules' threads, as the run set them (--set-threads probe_layers=1).
    assert (mine.loc["embed_shard", "threads"], mine.loc["probe_layers", "threads"], mine.loc["gather_embeddings", "threads"]) == ("2", "1", "1")
    assert mine.loc["embed_shard", "jobs"] == 2 * len({p.parent for p in (benchmarks / "embed_shard" / "tiny_random").rglob("*.tsv")})  # 2 shards per set
