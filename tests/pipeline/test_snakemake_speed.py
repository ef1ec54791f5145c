"""plmexit.pipeline.snakemake_speed: each speed-up answers as Snakemake's own method answers, with less repeated work.

Each test applies its speed-up in this process (as the Snakefile does in Snakemake's), twice, and checks that
the second call wraps nothing again; the answers are compared with Snakemake 9's method as it ships
(re-implemented here from its source where the method itself is replaced).
"""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import textwrap
import weakref

import pytest
import snakemake.cli  # noqa: F401  (snakemake.dag and snakemake.jobs import only once the package is loaded)
from snakemake.dag import DAG

from plmexit.pipeline import snakemake_speed

from workflow_runs import snakemake_env


class _Group(frozenset):
    """A job group as Snakemake 9 compares them: by their job sets (counted)."""

    groupid = "g"
    comparisons = 0

    def __eq__(self, other):
        _Group.comparisons += 1
        return isinstance(other, _Group) and frozenset.__eq__(self, other)

    __hash__ = frozenset.__hash__


class _Job:
    def __init__(self, name: str, grouped: bool = False):
        self.rule = type("Rule", (), {"name": name, "lineno": 1, "snakefile": "Snakefile"})()
        self.output, self.group = [f"{name}.txt"], "g" if grouped else None

    def has_unfinished_queue_input(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.rule.name


class _CountingDependencies(dict):
    reads = 0

    def __getitem__(self, job):
        self.reads += 1
        return super().__getitem__(job)


def _dag(groups: dict, dependencies: dict, waiting: dict):
    dag = type("Dag", (), {"finished": lambda self, job: False, "_ready": lambda self, job: DAG._ready(self, job)})()
    dag._group, dag._dependencies, dag._n_until_ready = groups, _CountingDependencies(dependencies), dict(waiting)
    dag._ready_jobs, dag._running = set(), set()
    return dag


def snakemake_ready(dag, job) -> bool:
    """Snakemake 9.27's ``DAG._ready``, as it ships."""
    group = dag._group.get(job, None)
    if group is None:
        return dag._n_until_ready[job] == 0
    return all(dag._n_until_ready[j] - sum(dag._group.get(dep) == group for dep in dag._dependencies[j]) == 0 for j in group)


def test_snakemake_checks_each_job_group_once_and_still_finds_a_group_that_depends_on_itself():
    """check_each_group_once: Snakemake's own group check, handed one entry per group instead of one per job;
    a path that leaves a group and comes back is still refused."""
    from snakemake.exceptions import WorkflowError

    snakemake_speed.check_each_group_once()
    wrapped = DAG._check_groups
    assert wrapped.plmexit_speed
    snakemake_speed.check_each_group_once()
    assert DAG._check_groups is wrapped

    jobs = [_Job(f"step{k}") for k in range(6)]
    group = _Group(jobs)
    dag = _dag(dict.fromkeys(jobs, group), {job: [] for job in jobs}, {})
    DAG._check_groups(dag)
    assert dag._dependencies.reads == 6  # each job walked once (Snakemake 9 alone: 36)
    assert dag._group == dict.fromkeys(jobs, group)  # the map is put back

    inside, outside, back = _Job("a"), _Job("b"), _Job("c")
    cyclic = _Group([inside, back])
    dag = _dag({inside: cyclic, back: cyclic}, {back: [outside], outside: [inside], inside: []}, {})
    with pytest.raises(WorkflowError, match="Group g depends on itself"):
        DAG._check_groups(dag)


def test_snakemake_readies_each_job_group_once_per_update_with_its_own_answer():
    """ask_each_group_once: the jobs and groups made ready are Snakemake's; each group's members are asked once
    per update, and a group is never compared with itself element by element."""
    snakemake_speed.ask_each_group_once()
    ready, update = DAG._ready, DAG.update_ready
    assert ready.plmexit_speed and update.plmexit_speed
    snakemake_speed.ask_each_group_once()
    assert (DAG._ready, DAG.update_ready) == (ready, update)

    # A ready group (a chain inside it), a group whose last job waits on an unfinished job outside it,
    # a job alone that is ready and one that waits.
    chain = [_Job(f"chain{k}", grouped=True) for k in range(8)]
    blocked = [_Job(f"blocked{k}", grouped=True) for k in range(5)]
    outside, alone, waits = _Job("outside"), _Job("alone"), _Job("waits")
    ready_group, blocked_group = _Group(chain), _Group(blocked)
    groups = {**dict.fromkeys(chain, ready_group), **dict.fromkeys(blocked, blocked_group)}
    dependencies = {
        **{job: chain[:k] for k, job in enumerate(chain)},
        **{job: blocked[:k] for k, job in enumerate(blocked)},
        outside: [], alone: [], waits: [outside],
    }
    dependencies[blocked[-1]] = [*blocked[:-1], outside]
    waiting = {job: len(deps) for job, deps in dependencies.items()}
    jobs = [*chain, *blocked, alone, waits]

    dag = _dag(groups, dependencies, waiting)
    _Group.comparisons = 0
    assert DAG.update_ready(dag, jobs)
    assert dag._ready_jobs == {ready_group, alone}
    # Each member's dependencies read once per group and update (Snakemake 9 alone: 3 g^2 per group of g), the
    # blocked group's until a member that waits; only the dependency outside a group compared by its jobs.
    assert len(chain) < dag._dependencies.reads <= len(chain) + len(blocked)
    assert _Group.comparisons == 1
    assert dag._plmexit_group_ready is None  # no answer outlives the update
    assert dag._ready_jobs == {groups.get(job, job) for job in jobs if snakemake_ready(dag, job)}

    # Once the outside job has run, the blocked group is ready at the next update, asked afresh.
    dag._n_until_ready[blocked[-1]] -= 1
    DAG.update_ready(dag, blocked)
    assert blocked_group in dag._ready_jobs and snakemake_ready(dag, blocked[0])


def test_snakemake_inspects_each_function_signature_once(monkeypatch):
    """remember_signatures: the parameters Snakemake's lookup returns, for a function, a bound method and a
    function that declares its own, each function inspected once."""
    from snakemake import common, jobs, rules

    snakemake_speed.remember_signatures()
    lookup = common.get_function_params
    assert lookup.plmexit_speed and rules.get_function_params is lookup and jobs.get_function_params is lookup
    snakemake_speed.remember_signatures()
    assert common.get_function_params is lookup

    inspected = []
    signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda func: inspected.append(func) or signature(func))

    def runtime(wildcards, attempt, threads=1):
        return attempt

    class Evaluator:
        def evaluate(self, wildcards, **kwargs):
            return 0

    assert list(lookup(runtime)) == ["wildcards", "attempt", "threads"] == list(lookup(runtime))
    assert list(lookup(Evaluator().evaluate)) == ["wildcards", "kwargs"] == list(lookup(Evaluator().evaluate))
    assert len(inspected) == 2  # one per function, not per call or per bound method
    common.overwrite_function_params(runtime, ["wildcards"])  # Snakemake's own hook still wins
    assert lookup(runtime) == ["wildcards"]


SNAKEFILE = """
from plmexit.pipeline.snakemake_speed import format_each_command_once
import snakemake.jobs

if config.get("faster"):
    format_each_command_once()
formats = []
_format = snakemake.jobs.Job.format_wildcards
snakemake.jobs.Job.format_wildcards = lambda self, string, **more: formats.append(1) or _format(self, string, **more)

rule all:
    input: expand("{name}.txt", name=["a", "b", "c"])

rule write:
    output: "{name}.txt"
    params: words=lambda wildcards: f"hello {wildcards.name}"
    resources: mem_mb=lambda wildcards, attempt: 100 * attempt
    shell: "echo {params.words} {resources.mem_mb} > {output}"

import atexit
atexit.register(lambda: print(f"formatted {len(formats)} times"))
"""


@pytest.mark.workflow
def test_snakemake_formats_each_command_once_to_describe_a_job_and_prints_the_same(tmp_path):
    """format_each_command_once: a dry run prints the same commands, formatting each job's command once, not three times."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))

    def dry_run(*config: str) -> tuple[list[str], int]:
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "--directory", str(tmp_path), "--snakefile", str(tmp_path / "Snakefile"),
             "--dry-run", "--printshellcmds", "--cores", "1", *config],
            capture_output=True, text=True, env=snakemake_env(),
        )
        assert run.returncode == 0, run.stderr[-2000:]
        printed = run.stdout + run.stderr
        commands = sorted(line.removeprefix("Shell command: ") for line in printed.splitlines() if line.startswith("Shell command: echo"))
        return commands, int(printed.split("formatted ")[1].split()[0])

    shipped, shipped_formats = dry_run()
    faster, faster_formats = dry_run("--config", "faster=1")
    assert faster == shipped == [f"echo hello {name} 100 > {name}.txt" for name in "abc"]
    assert shipped_formats - faster_formats == 2 * 3  # three jobs, each formatted once instead of three times


class _Node:
    next = None


@pytest.mark.parametrize("interpreter", [(700, 10, 10), (2000, 10, 10)], ids=["python3.11-3.12", "python3.13"])
def test_python_collects_cycles_less_often_unless_told_otherwise(interpreter):
    before = gc.get_threshold()
    try:
        gc.set_threshold(*interpreter)
        snakemake_speed.collect_cycles_less_often()
        assert gc.get_threshold() == snakemake_speed.LARGE_GRAPH_COLLECTION
        snakemake_speed.collect_cycles_less_often()  # a second Snakefile load changes nothing
        assert gc.get_threshold() == snakemake_speed.LARGE_GRAPH_COLLECTION
        gc.set_threshold(1000, 5, 5)  # a user's own thresholds (PYTHON* settings, a wrapper) are kept
        snakemake_speed.collect_cycles_less_often()
        assert gc.get_threshold() == (1000, 5, 5)
        # Cycles are still collected: a cycle dropped is freed by the next full collection.
        gc.set_threshold(*snakemake_speed.LARGE_GRAPH_COLLECTION)
        cycle = _Node()
        cycle.next = _Node()
        cycle.next.next = cycle
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
    finally:
        gc.set_threshold(*before)
