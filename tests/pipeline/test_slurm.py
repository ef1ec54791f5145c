"""SLURM for real: a one-node cluster on localhost runs the offline test config through the profiles.

The cluster is Debian's slurm-wlm and munge: munged, slurmctld and slurmd started by the fixture
below from a configuration written to a temporary directory (accounting off, so the plugin reads
job states with squeue), and stopped, with every job cancelled, when the module's tests are done. Under CI
(CI=true) the packages are installed with apt-get when missing and failing to do so fails the test;
elsewhere the test installs them when it can (root and apt-get) and otherwise skips, saying why.
Its one node is in two partitions, a CPU one and a GPU one, and declares two GPUs as generic
resources backed by placeholder files, not devices: SLURM schedules them, the jobs run on the CPU.

The run uses the shipped profiles as a user sets them up: `plmexit install-profile` with the test
cluster's account, CPU and GPU partitions and squeue for job states, into a temporary
XDG_CONFIG_HOME, then `snakemake --profile slurm` by name, the workflow's own profile
(profiles/default) loaded by Snakemake beside it (through tests/slurm_polls.py, which only polls the
jobs' states every few seconds: this cluster's jobs take seconds, not hours). It checks that the jobs went through sbatch, each
to its partition (the model rules to the GPU one with one GPU, every other job to the CPU one with
none, read back with scontrol), that a running job cancelled with
scancel is retried with the attempt-scaled memory and time, that a rerun after a failed run keeps
the finished work, and that the results equal those of the local run. An embedding set's gathering and
its task's probe, selection and figure go as one job group, the set's batch (config schedule); a second
test shows that when one job of a group fails, the rerun submits that job alone and keeps what the
others wrote. A third runs assays chosen by a filter, whose sizes are known while planning: their GPU
steps go as one GPU batch, one sbatch on the GPU partition with one GPU and the sum of their run
times, and run one after another inside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from plmexit.errors import InputError
from plmexit.pipeline.model_steps import resolve_device
from plmexit.pipeline.plan_batches import GPU_START_MINUTES, GPU_TABLE_MINUTES
from plmexit.pipeline.planning import Plan

from system_programs import require
from workflow_runs import FILTER_CHOSEN, REPO, file_stamps, snakemake_env, write_config, write_filter_config

CPU_PARTITION, GPU_PARTITION = "plmexit_cpu", "plmexit_gpu"
GPUS = 2  # on the node, placeholder files for devices
PROFILE = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())  # the workflow's own
# The rules that ask for a GPU: the workflow profile's, as the plugin reads them.
GPU_RULES = {rule for rule, entry in PROFILE["set-resources"].items() if entry.get("gpu")}
NODE_CPUS = min(os.cpu_count(), PROFILE["cores"])
GPU_BATCH_PREFIX = Plan.gpu_batch_group("", "").split(".")[0] + "."  # a GPU batch's job group: gpu.{model}.{k}
ACCOUNT = "plmexit"  # any name: with accounting off, SLURM does not check accounts
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "srun", "mungekey")
# The job the fault test cancels: a shard of the longest embedding of the test config (embed.shards
# is 2 there), so it is seen RUNNING.
CANCELLED_RULE, CANCELLED_TASK = "embed_shard", "deeploc_10class"
CANCELLED_WILDCARDS = f"tiny_random_{CANCELLED_TASK}_0_2"  # model, task, shard, shards
# Seconds to wait for the cluster to come up, and for a job to reach a state: generous, as on a loaded machine
# the jobs before it take minutes; only a cluster that stopped scheduling takes longer.
START_TIMEOUT, JOB_TIMEOUT = 300, 1200
# Seconds a whole Snakemake run through the cluster may take: a cluster that stops scheduling hangs it
# forever, and an hour is far past what the run takes on a loaded machine (minutes).
RUN_TIMEOUT = 3600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(directory: Path, host: str) -> str:
    """One node in two partitions, no accounting, no cgroups (process groups track the jobs)."""
    return f"""\
ClusterName=plmexit
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={directory}/munge.socket
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
ReturnToService=2
# Finished jobs stay visible to squeue this long: the plugin reads their final state from it, and
# the test every job's partition and GPUs after a run.
MinJobAge=3600
# CPUs as the machine has them; memory declared large and not consumable, so the profile's
# real-cluster requests (tens of GB, doubled on a retry) schedule on a small CI machine.
SlurmdParameters=config_overrides
# GPUs as generic resources (gres.conf: placeholder files, no devices): the GPU partition's jobs
# are scheduled against them and run on the CPU.
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={host} MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory, self.env = directory, env

    def run(self, *command: str) -> str:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def placement(self, jobid: str) -> tuple[str, int]:
        """A job's partition and the GPUs it asked for, as slurmctld records them."""
        fields = dict(item.split("=", 1) for item in self.run("scontrol", "show", "job", "--oneliner", jobid).split() if "=" in item)
        gpus = re.search(r"gpu:(?:[^:,]+:)?(\d+)", fields.get("TresPerJob", "") + " " + fields.get("TresPerNode", ""))
        return fields["Partition"], int(gpus.group(1)) if gpus else 0

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows: id, state, comment (the plugin's rule_<rule>_wildcards_...),
        minimum memory and time limit."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%T|%k|%m|%l|%C")
        return [dict(zip(("id", "state", "comment", "memory", "time_limit", "cpus"), line.split("|"))) for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    require(("slurm-wlm", "munge"), DAEMONS + CLIENTS, "the SLURM test cluster")
    directory = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "bin"):
        (directory / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = directory / "slurm.conf"
    conf.write_text(_slurm_conf(directory, host))
    # SLURM's gpu GRES needs a File per GPU: slurmd 22.05 reports a file-less gpu GRES as 0 and the
    # node goes INVAL. Empty files stand in for the device nodes (slurmd logs that they are not
    # devices and counts them); without cgroups nothing is confined to them, no CUDA_VISIBLE_DEVICES.
    for k in range(GPUS):
        (directory / f"gpu{k}").touch()
    (directory / "gres.conf").write_text(f"Name=gpu File={directory}/gpu[0-{GPUS - 1}]\n")
    # The jobstep plugin strips SLURM_* (SLURM_CONF too) before the srun inside each job; a real
    # cluster's srun then reads /etc/slurm/slurm.conf. This one lives in a temporary directory, so
    # srun is found through a wrapper that sets SLURM_CONF and runs the real srun.
    srun = directory / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    env = {k: v for k, v in snakemake_env(str(directory / "bin")).items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    sbin = f"{env['PATH']}:/usr/sbin:/sbin"
    key = directory / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)

    daemons: list[subprocess.Popen] = []
    logs = []
    try:
        for command in (
            ["munged", "--foreground", "--force", f"--socket={directory}/munge.socket", f"--key-file={key}",
             f"--pid-file={directory}/munged.pid", f"--seed-file={directory}/munged.seed", f"--log-file={directory}/munged.log"],
            ["slurmctld", "-D", "-i"],
            ["slurmd", "-D"],
        ):
            log = open(directory / f"{command[0]}.out", "w")
            logs.append(log)
            daemons.append(subprocess.Popen([shutil.which(command[0], path=sbin), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(1)
        cluster = Cluster(directory, env)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            state = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True).stdout.strip()
            if state and set(state.split()) == {"idle"}:  # the node, in each partition
                break
            dead = [p.args[0] for p in daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                outputs = "\n".join((directory / f"{name}.out").read_text()[-1000:] for name in DAEMONS)
                pytest.fail(f"the one-node SLURM cluster did not come up (node state {state!r}, exited: {dead}):\n{outputs}")
            time.sleep(0.5)
        yield cluster
    finally:
        # Nothing may outlive the test: cancel every job, wait for them to leave, stop the daemons.
        if daemons and daemons[-1].poll() is None:
            subprocess.run(["scancel", "--full", "--user", str(os.geteuid())], env=env, capture_output=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and subprocess.run(
                ["squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING"], env=env, capture_output=True, text=True
            ).stdout.strip():
                time.sleep(0.5)
        for process in reversed(daemons):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


@pytest.fixture
def profile_env(slurm_cluster, tmp_path) -> dict[str, str]:
    """The cluster's environment with the profile installed by name, as docs/slurm.md tells users to."""
    env = {**slurm_cluster.env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    command = ["plmexit", "install-profile", "--account", ACCOUNT, "--cpu-partition", CPU_PARTITION, "--gpu-partition", GPU_PARTITION,
               "--gpus", str(GPUS), "--squeue-status"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "xdg" / "snakemake" / "slurm" / "config.yaml").is_file()
    return env


def cluster_command(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> list[str]:
    """Snakemake's command line for this cluster: polled every few seconds (tests/slurm_polls.py), else as typed."""
    return [sys.executable, str(REPO / "tests" / "slurm_polls.py"), "--snakefile", str(snakefile), "--directory", str(workdir), *args]


def slurm_args(config: Path, *extra: str) -> list[str]:
    """`--profile slurm` by name, as a user types it, plus what only this test cluster needs."""
    return [
        "--profile", "slurm", "--configfile", str(config),
        # A node of this cluster has the machine's CPUs, fewer than the profile's 8 a submission: the same
        # limit and every rule's threads capped at them (a command line's set-threads replaces the profile's whole).
        "--cores", str(NODE_CPUS), "--set-threads", *(f"{rule}={min(n, NODE_CPUS)}" for rule, n in PROFILE["set-threads"].items()),
        # Poll soon, this cluster is fast; keep every log for the checks below.
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", *extra,
    ]


def submitted(log: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (rule, wildcards) for every job the plugin reported submitted in ``log``; a
    group of jobs as ('group <group>_<its rules>', '')."""
    pattern = r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(rule|group)_([\w.]+)/(?:(\S+)/)?\1\.log\)"
    return {
        jobid: (name if kind == "rule" else f"group {name}", wildcards) for jobid, kind, name, wildcards in re.findall(pattern, log)
    }


def slurm_log(workdir: Path, jobid: str, name: str, wildcards: str) -> Path:
    kind, name = ("group", name.split()[1]) if name.startswith("group ") else ("rule", name)
    return workdir / ".snakemake" / "slurm_logs" / f"{kind}_{name}" / wildcards / f"{jobid}.log"


def assert_placed(cluster: Cluster, jobs: dict[str, tuple[str, str]]) -> None:
    """Every submitted job in its partition: a model rule's and a GPU batch's on the GPU partition with one
    GPU, every other job (a batch of CPU steps too) on the CPU partition with none."""
    placed = {jobid: cluster.placement(jobid) for jobid in jobs}
    on_gpu = {jobid for jobid, (name, _) in jobs.items() if name in GPU_RULES or name.startswith(f"group {GPU_BATCH_PREFIX}")}
    expected = {jobid: (GPU_PARTITION, 1) if jobid in on_gpu else (CPU_PARTITION, 0) for jobid in jobs}
    assert placed == expected


def megabytes(memory: str) -> int:
    """squeue's memory column (``32000M``, ``62.50G``) in MB."""
    return round(float(memory[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[memory[-1]])


def output_stamps(results: Path) -> dict[str, tuple[int, bytes]]:
    """Every output under results with its mtime and bytes; logs aside, and the working files a rerun
    consumes by design (temporary shard stores, hidden resumable parts and temporary names)."""
    return file_stamps(results, lambda parts: parts[0] != "logs" and not any(x.startswith(".") or x.endswith(".shards") for x in parts))


def cancel_when_running(cluster: Cluster, process: subprocess.Popen, times: int) -> list[dict[str, str]]:
    """scancel the embedding job of CANCELLED_TASK each time a new attempt of it is RUNNING."""
    cancelled: list[dict[str, str]] = []
    deadline = time.monotonic() + JOB_TIMEOUT
    while len(cancelled) < times:
        assert process.poll() is None, "snakemake ended before the embedding job could be cancelled"
        assert time.monotonic() < deadline, f"no running {CANCELLED_RULE} job for {CANCELLED_TASK} within {JOB_TIMEOUT} s"
        done = {job["id"] for job in cancelled}
        for job in cluster.jobs():
            if job["id"] not in done and job["state"] == "RUNNING" and job["comment"] == f"rule_{CANCELLED_RULE}_wildcards_{CANCELLED_WILDCARDS}":
                cluster.run("scancel", job["id"])
                cancelled.append(job)
        time.sleep(0.2)
    return cancelled


def two_tasks(config: dict) -> None:
    """The offline test config cut to its fair-esm model, one ProteinGym assay and scheme and the
    DeepLoc task: every kind of job (local rules, shards, gather, cost, probes, summaries) in about
    twenty submissions, so the test stays within CI's time; the local run has every task, and these
    two must equal it."""
    config["models"] = config["models"][:1]
    config.pop("depth", None)  # the head's diagnostics and early exit run in the local run; here they would only add submissions
    config.pop("exit", None)
    proteingym = {**config["tasks"][0], "fold_schemes": ["fold_random_5"]}
    config["tasks"] = [proteingym] + [task for task in config["tasks"] if task["id"] == CANCELLED_TASK]


@pytest.mark.workflow
@pytest.mark.cluster
def test_offline_config_through_the_slurm_profile(slurm_cluster, profile_env, finished_run, shared_data, tmp_path):
    workdir = tmp_path / "slurm_run"
    workdir.mkdir()
    config = write_config(workdir, shared_data, edit=two_tasks)
    results = workdir / "results"

    # 1. A failing run: the embedding job is cancelled while running, its one retry too.
    first_log = workdir / "first.log"
    with open(first_log, "w") as log:
        process = subprocess.Popen(
            cluster_command(workdir, *slurm_args(config, "--retries", "1")), cwd=workdir, env=profile_env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            cancelled = cancel_when_running(slurm_cluster, process, times=2)
            assert process.wait(timeout=RUN_TIMEOUT) != 0
        finally:
            if process.poll() is None:
                process.kill()
    first = first_log.read_text()
    jobs = submitted(first)
    assert [jobs[job["id"]] for job in cancelled] == [(CANCELLED_RULE, CANCELLED_WILDCARDS)] * 2
    for job in cancelled:
        assert f"SLURM-job '{job['id']}' failed, SLURM status is: 'CANCELLED'" in first
    # The retry asked SLURM for twice the memory and time (profile: 32000 MB, 240 min per attempt).
    assert [(megabytes(job["memory"]), job["time_limit"]) for job in cancelled] == [(32000, "4:00:00"), (64000, "8:00:00")]
    # The model manifest is written by a local rule (the login node), never through sbatch.
    assert "localrule fetch_model:" in first and "fetch_model" not in {rule for rule, _ in jobs.values()}
    for jobid, (rule, wildcards) in jobs.items():
        assert slurm_log(workdir, jobid, rule, wildcards).is_file()
    # The other task's gathering, probe, and selection with its figure went as one group, its batch: the probe's
    # CPUs and memory (the rest run before or after it), and the sum of the three run times: the gathering
    # 10 minutes (profile), the probe 5 and a minute per 15 MB of its embeddings (Plan.probe_minutes,
    # from the shards it is gathered from), the selection (figure included) 10.
    batch = "group batch.tiny_random.0_gather_embeddings_probe_layers_select_layer"
    assert [name for name, _ in jobs.values() if name.startswith("group ")] == [batch]
    group_job = next(job for job in slurm_cluster.jobs() if jobs.get(job["id"], ("",))[0] == batch)
    assert (group_job["cpus"], megabytes(group_job["memory"]), group_job["time_limit"]) == (str(NODE_CPUS), 16000, "26:00")
    # Each job in its partition: embedding shards and cost timings on the GPU one, with one GPU each.
    assert {"embed_shard", "measure_cost"} <= {name for name, _ in jobs.values()} and "embed_shard" in GPU_RULES
    assert_placed(slurm_cluster, jobs)
    # Reading the task's files is a local rule too: seconds, not a submission.
    assert "localrule prepare_task:" in first and "prepare_task" not in {rule for rule, _ in jobs.values()}
    # keep-going: the other task went all the way; the cancelled one left no embedding behind.
    assert (results / "selection" / "tiny_random" / "BLAT_ECOLX_Stiffler_2015.fold_random_5.json").is_file()
    assert not (results / "embeddings" / "tiny_random" / f"{CANCELLED_TASK}.h5").exists()
    finished = output_stamps(results)

    # 2. The rerun does what is left, nothing else, and keeps the finished work untouched.
    rerun = subprocess.run(
        cluster_command(workdir, *slurm_args(config)), cwd=workdir, env=profile_env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    second = submitted(rerun.stdout + rerun.stderr)
    assert sorted(second.values()) == sorted(
        [(CANCELLED_RULE, CANCELLED_WILDCARDS)]
        + [("group batch.tiny_random.1_gather_embeddings_probe_layers_select_layer", "")]
        + [("plot_study", ""), ("plot_summary", ""), ("summarize_layers", ""), ("summarize_resources", "")]
    )
    assert_placed(slurm_cluster, second)
    after = output_stamps(results)
    assert {path: after[path] for path in finished} == finished

    # 3. The same results as the local run of the whole test config: identical embeddings (the cancelled
    # task's float16 store to float32 rounding, below), equal probes, selections and summary rows for the two
    # tasks. On AVX-512 hosts oneDNN's float32 kernels inside a SLURM job have rounded a few pooled values
    # differently from the local run (66 of 69,120, at most 4.9e-4: one float16 step), which the probes,
    # selections and summary did not see.
    local = finished_run[0] / "results"
    stores = sorted((results / "embeddings").rglob("*.h5"))
    assert [p.stem for p in stores] == ["BLAT_ECOLX_Stiffler_2015", CANCELLED_TASK]
    for store in stores:
        with h5py.File(local / store.relative_to(results), "r") as expected, h5py.File(store, "r") as got:
            want, have = expected["embeddings"][()], got["embeddings"][()]
            if want.dtype == np.float16:
                np.testing.assert_allclose(have.astype(np.float32), want.astype(np.float32), rtol=2**-10, atol=1e-5, err_msg=store.name)
            else:
                assert np.array_equal(want, have), store.name
            assert list(expected["ids"].asstr()[()]) == list(got["ids"].asstr()[()])
    for probes in sorted((results / "probes").rglob("*.tsv")):
        pd.testing.assert_frame_equal(pd.read_csv(probes, sep="\t"), pd.read_csv(local / probes.relative_to(results), sep="\t"))
    measured = ["deployed_time_saved", "folds_time_saved"]  # wall-clock timings, never equal between two runs
    summary_slurm = pd.read_csv(results / "summary" / "best_layers.tsv", sep="\t").drop(columns=measured)
    summary_local = pd.read_csv(local / "summary" / "best_layers.tsv", sep="\t").drop(columns=measured)
    summary_local = summary_local[summary_local["task"].isin(summary_slurm["task"])].reset_index(drop=True)
    assert len(summary_slurm) == 2
    pd.testing.assert_frame_equal(summary_slurm, summary_local)
    for selection in sorted((results / "selection").rglob("*.json")):
        assert_same_selection(json.loads(selection.read_text()), json.loads((local / selection.relative_to(results)).read_text()))


def assert_same_selection(got: dict, expected: dict) -> None:
    """Equal selections: every number to 1e-12, timing-derived entries aside."""
    assert got.keys() == expected.keys()
    for key in expected:
        if "time" in key or "seconds" in key:
            continue
        a, b = got[key], expected[key]
        if isinstance(b, (int, float)) and not isinstance(b, bool):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12), key
        else:
            assert a == b, key


@pytest.mark.workflow
@pytest.mark.cluster
def test_a_gpu_batch_is_one_submission_on_the_gpu_partition(slurm_cluster, profile_env, shared_data, tmp_path):
    """The assays a filter chose are one GPU batch (config schedule): their three embedding shards, two cost
    timings and the batch's table go to the GPU partition as one sbatch with one GPU and the sum of their run
    times, and run there one after another; their CPU steps go to the CPU partition as one batch."""
    config = write_filter_config(tmp_path, shared_data)
    run = subprocess.run(
        cluster_command(tmp_path, *slurm_args(config)), cwd=tmp_path, env=profile_env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert run.returncode == 0, run.stderr[-5000:]
    jobs = submitted(run.stdout + run.stderr)
    gpu_batch = f"group {Plan.gpu_batch_group('tiny', 0)}_embed_shard_measure_cost_summarize_gpu_batch"
    groups = sorted(name for name, _ in jobs.values() if name.startswith("group "))
    assert groups == ["group batch.tiny.0_gather_embeddings_probe_layers_select_layer_summarize_batch", gpu_batch]
    # No GPU step outside the batch: every shard and cost timing of the chosen assays is in it.
    assert not GPU_RULES & {name for name, _ in jobs.values()}
    assert_placed(slurm_cluster, jobs)
    jobid = next(jobid for jobid, (name, _) in jobs.items() if name == gpu_batch)
    job = next(job for job in slurm_cluster.jobs() if job["id"] == jobid)
    # One GPU step's CPUs and memory (they run one at a time), and the sum of the run times: each GPU step
    # its start and a minute of forwards at schedule.gpu_tflops (Plan.gpu_minutes), the table a minute.
    minutes = 5 * (GPU_START_MINUTES + 1) + GPU_TABLE_MINUTES
    assert (job["cpus"], megabytes(job["memory"]), job["time_limit"]) == (str(NODE_CPUS), 32000, f"{minutes}:00")
    # One after another: in the submission's log (after the group's listing, indented) every step finishes before
    # the next one starts.
    events = re.findall(r"^(localrule \w+|Finished jobid)", slurm_log(tmp_path, jobid, gpu_batch, "").read_text(), re.M)
    started = [event.split()[1] for event in events if event.startswith("localrule")]
    assert sorted(started) == ["embed_shard"] * 3 + ["measure_cost"] * 2 + ["summarize_gpu_batch"]
    assert events[: 2 * len(started)] == [event for rule in started for event in (f"localrule {rule}", "Finished jobid")]
    table = pd.read_csv(tmp_path / "results/summary/gpu_batches/tiny/0.tsv", sep="\t")
    assert sorted(zip(table["step"], table["set"])) == sorted(
        [("embed", FILTER_CHOSEN[0]), ("embed", FILTER_CHOSEN[1]), ("embed", FILTER_CHOSEN[1]), ("cost", FILTER_CHOSEN[0]), ("cost", FILTER_CHOSEN[1])]
    )
    summary = pd.read_csv(tmp_path / "results/summary/best_layers.tsv", sep="\t")
    assert summary["task"].tolist() == [f"{dms_id}.fold_random_5" for dms_id in FILTER_CHOSEN]


def test_every_fetch_rule_is_a_local_rule():
    """Compute nodes are often offline: whatever downloads runs on the submitting node."""
    sources = "\n".join(path.read_text() for path in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    fetch_rules = set(re.findall(r"^rule ((?:fetch|download)_\w+):", sources, re.M))
    local = {name for block in re.findall(r"^localrules:\n((?:\s+\w+,?\n)+)", sources, re.M) for name in re.findall(r"\w+", block)}
    assert fetch_rules and fetch_rules <= local


def test_auto_device_takes_a_visible_gpu_else_the_cpu(monkeypatch):
    """`--device auto` embeds on a GPU whenever torch sees one, as it does the GPUs SLURM exposes to
    a job through CUDA_VISIBLE_DEVICES (torch's visibility is simulated here: no GPU on CI)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match=r"--device cuda: no CUDA device is visible; use --device cpu or auto"):
        resolve_device("cuda")


GROUP_SNAKEFILE = """\
rule all:
    input: "out/summary.txt"

rule part:
    output: "out/{i}.txt"
    resources: runtime=5
    shell: "echo {wildcards.i} > {output}"

rule summary:
    input: "out/0.txt", "out/1.txt"
    output: "out/summary.txt"
    resources: runtime=5
    shell: "test -e fixed && cat {input} > {output}"
"""


@pytest.mark.workflow
@pytest.mark.cluster
def test_a_failed_job_of_a_group_reruns_alone(slurm_cluster, profile_env, tmp_path):
    """One job of a group fails after the others finished: their outputs stay (the profile's
    keep-incomplete; Snakemake's default deletes them) and the rerun submits the failed job alone."""
    (tmp_path / "Snakefile").write_text(GROUP_SNAKEFILE)
    # No retries: Snakemake retries a failed group whole, in the same run.
    command = cluster_command(tmp_path, "--profile", "slurm", "--retries", "0", "--groups", "part=g", "summary=g",
                              "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5", snakefile=tmp_path / "Snakefile")
    first = subprocess.run(command, cwd=tmp_path, env=profile_env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert first.returncode != 0
    log = first.stdout + first.stderr
    assert list(submitted(log).values()) == [("group g_part_summary", "")]
    assert_placed(slurm_cluster, submitted(log))  # no GPU asked: the CPU partition
    assert "Removing output files" not in log
    parts = {name: (tmp_path / "out" / name).stat().st_mtime_ns for name in ("0.txt", "1.txt")}
    assert not (tmp_path / "out" / "summary.txt").exists()

    (tmp_path / "fixed").touch()
    second = subprocess.run(command, cwd=tmp_path, env=profile_env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert second.returncode == 0, second.stderr[-5000:]
    log = second.stdout + second.stderr
    assert list(submitted(log).values()) == [("group g_summary", "")]
    assert {name: (tmp_path / "out" / name).stat().st_mtime_ns for name in parts} == parts
    assert (tmp_path / "out" / "summary.txt").read_text() == "0\n1\n"
