"""Snakemake's planning of a large workflow, made faster without changing what it decides.

Snakemake 9 spends most of the study's plan (about 12,600 jobs, ``benchmarks/planning_speed.py``) on
work it repeats: it inspects a function's signature on every call, checks a job group once per job in
it, and asks whether a group is ready once per job in it, each time comparing groups by their job sets;
and Python's cycle collector walks the growing DAG thousands of times. Each function here removes one
such repetition, applied by the Snakefile (``common.smk``) before the DAG is built. Each wrapper leaves
Snakemake's decision unchanged (the tests compare against Snakemake's own method) and wraps only a method
whose source still has the repetition it removes: a Snakemake that changed it runs as it ships. The
collector's thresholds change when, and only when, they are still the interpreter's own. Nothing is imported from Snakemake until a function is called, so the plan
itself stays importable without it.
"""

from __future__ import annotations

import gc
import inspect
import threading


def remember_signatures() -> None:
    """Have Snakemake inspect each function's signature once, not on every call.

    Snakemake 9 calls ``inspect.signature`` every time it calls an input, params, group or resource
    function, to pass it only the arguments it names (``snakemake.common.get_function_params``). Planning
    the study calls such functions about 500,000 times (a job's resources alone are three or four, each
    evaluated through a bound method and a wrapper), and the inspection cost more than the functions. The
    wrapper remembers each function's parameters the first time: a function's signature does not change
    once it exists. It still looks first where Snakemake looks first (the parameters a wrapper declares
    with ``overwrite_function_params``, Snakemake's own hook), and a bound method is remembered by its
    function (its signature without the first parameter), so no per-call object is kept.
    """
    import snakemake.common
    import snakemake.jobs
    import snakemake.rules

    lookup = snakemake.common.get_function_params
    if not _still_has(lookup, "return inspect.signature(func).parameters"):
        return
    attribute, remembered = snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR, {}

    def remembered_params(func):
        if hasattr(func, attribute):
            return getattr(func, attribute)
        key = (func.__func__, "bound") if inspect.ismethod(func) else func
        try:
            return remembered[key]
        except KeyError:
            params = remembered[key] = inspect.signature(func).parameters
            return params
        except TypeError:  # an unhashable callable: asked every time, as Snakemake asks
            return inspect.signature(func).parameters

    remembered_params.plmexit_speed = True
    for module in (snakemake.common, snakemake.jobs, snakemake.rules):
        if module.get_function_params is lookup:
            module.get_function_params = remembered_params


def _still_has(method, line: str) -> bool:
    return not getattr(method, "plmexit_speed", False) and line in inspect.getsource(method)


def check_each_group_once() -> None:
    """Have Snakemake check each job group once, not once per job in it.

    Snakemake 9's ``DAG._check_groups`` (no path may leave a group and come back into it) walks
    ``self._group.values()``, a map from every job to its group, so a group of g jobs is checked g
    times over, each time walking the ancestry of all g jobs: g^2 walks. With the cluster's batches (a
    GPU batch of tens of steps, a CPU batch of up to 12 assays' tasks) that took the study's plain plan
    from 48 s to 57 s (``benchmarks/README.md``, Planning speed). The wrapper hands Snakemake's own
    method one entry per group, and puts the map back; the check is Snakemake's, unchanged (its walk
    reads the groups it is given and the jobs' dependencies, nothing else of the map).
    """
    from snakemake.dag import DAG

    check = DAG._check_groups
    if not _still_has(check, "for group in self._group.values():"):
        return

    def each_group_once(self) -> None:
        groups = self._group
        self._group = {next(iter(group)): group for group in set(groups.values())}
        try:
            check(self)
        finally:
            self._group = groups

    each_group_once.plmexit_speed = True
    DAG._check_groups = each_group_once


def ask_each_group_once() -> None:
    """Have Snakemake decide once per readiness update whether a job group is ready, not once per job in it.

    A group is ready when each of its jobs waits only on jobs inside the group. Snakemake 9's
    ``DAG._ready`` answers that for a job by walking the whole group, finding each dependency's group and
    comparing it with ``==``, which compares the two groups' job sets element by element even when they are
    the same object. ``DAG.update_ready`` asks it for every job of a group (twice: once for a debug message)
    and then once more per job of every candidate group: g^3 set lookups for a group of g jobs. It was the
    largest single cost of the study's plan after the groups were checked once (``benchmarks/README.md``).

    The wrapper keeps Snakemake's test and answers it once per group and update: while ``update_ready``
    runs, nothing it reads changes (the jobs' waiting counts, their groups and dependencies), so the first
    answer for a group holds for every job of it. A dependency in the very same group object is counted
    without comparing job sets (a group equals itself); any other is compared as Snakemake compares it.
    """
    from snakemake.dag import DAG

    update, ready = DAG.update_ready, DAG._ready
    if not (_still_has(ready, "self._group.get(dep) == group") and _still_has(update, "self._ready(job)")):
        return

    def group_ready(self, job) -> bool:
        group = self._group.get(job, None)
        if group is None:
            return self._n_until_ready[job] == 0
        answers = getattr(self, "_plmexit_group_ready", None)
        if answers is not None and id(group) in answers:
            return answers[id(group)][1]

        def inside(dep) -> bool:
            other = self._group.get(dep)
            return other is group or other == group

        answer = all(self._n_until_ready[member] - sum(map(inside, self._dependencies[member])) == 0 for member in group)
        if answers is not None:
            answers[id(group)] = (group, answer)  # the group held, so its id is not reused during the update
        return answer

    def update_ready_once_per_group(self, jobs=None):
        self._plmexit_group_ready = {}
        try:
            return update(self, jobs)
        finally:
            self._plmexit_group_ready = None

    group_ready.plmexit_speed = update_ready_once_per_group.plmexit_speed = True
    DAG._ready, DAG.update_ready = group_ready, update_ready_once_per_group


def format_each_command_once() -> None:
    """Have Snakemake format a job's shell command once when it describes the job, not three times.

    Snakemake 9's ``Job.log_info``, which describes every job as it is submitted (and every job of a dry
    run), reads the ``shellcmd`` property three times: for the job's record, for the command's message
    and for that message's record, and each read formats the rule's command with the job's wildcards,
    input, output, params and resources again. The wrapper keeps the first answer until that
    description is written; any other read formats the command as Snakemake does.
    """
    from snakemake.jobs import Job

    describe, shellcmd = Job.log_info, Job.shellcmd
    if not (_still_has(describe, "shellcmd=self.shellcmd") and inspect.getsource(describe).count("self.shellcmd") > 1):
        return
    describing = threading.local()

    def shellcmd_once(self):
        if getattr(describing, "job", None) is not self:
            return shellcmd.fget(self)
        if not hasattr(describing, "command"):
            describing.command = shellcmd.fget(self)
        return describing.command

    def describe_formatting_once(self, *args, **kwargs):
        describing.job = self
        try:
            return describe(self, *args, **kwargs)
        finally:
            del describing.job
            if hasattr(describing, "command"):
                del describing.command

    describe_formatting_once.plmexit_speed = shellcmd_once.plmexit_speed = True
    Job.shellcmd, Job.log_info = property(shellcmd_once, doc=shellcmd.__doc__), describe_formatting_once


# Python's own collection thresholds (CPython 3.11 and 3.12: 700; 3.13: 2,000 new objects), and the ones for
# a process that holds a large DAG. CPython 3.14's collector is incremental, its thresholds mean other
# things: it runs as it ships.
INTERPRETER_COLLECTION = frozenset({(700, 10, 10), (2000, 10, 10)})
LARGE_GRAPH_COLLECTION = (50_000, 20, 100)


def collect_cycles_less_often() -> None:
    """Have Python look for reference cycles less often while Snakemake builds and holds the DAG.

    The plan is millions of small objects made and kept (jobs, their file lists, wildcards, resources),
    and nearly none of them is garbage: reference counting frees what is dropped. With Python 3.11's
    thresholds the cycle collector runs every 700 new objects and walks the whole heap each time it grows
    by a quarter, about 4,000 collections and a fifth of the study's plan. Collecting every 50,000 new
    objects, and the whole heap a tenth as often, keeps the collector (cycles are still freed, later) and
    what it finds, at a fraction of the cost. Only the interpreter's own thresholds are raised: a user's are
    left as they are.
    """
    if gc.get_threshold() in INTERPRETER_COLLECTION:
        gc.set_threshold(*LARGE_GRAPH_COLLECTION)


def plan_faster() -> None:
    """Every speed-up above, once per process (a second Snakefile load in it wraps nothing twice)."""
    remember_signatures()
    check_each_group_once()
    ask_each_group_once()
    format_each_command_once()
    collect_cycles_less_often()
