"""Shared fixtures: the real data directory, a finished local pipeline run, a tiny random ESM2 and a
tiny random transformers model of every family, a local HTTP server, file writers.

Everything a test writes goes under pytest's temporary directories; the shared data is only read.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from plmexit.atomic import write_json
from plmexit.download import sha256_file
from plmexit.models import fair_esm, families, hub
from plmexit.models import manifest as model_manifest

from system_programs import require
from workflow_runs import PipelineRun, snakemake, write_config

# The real data sits next to the repository (../shared/data), read-only; it is never copied in.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Fixtures that one group of tests shares, each group a work unit of its own under pytest-xdist, both
# queued first so they start side by side on the two workers: the local pipeline run (session-wide; the
# SLURM run compared to it comes with it) and the SLURM test cluster (per module; its own ports, state and
# munge socket, so two clusters share nothing even if the comparison's starts before the other stops).
SHARED_RUN_FIXTURE, SHARED_RUN_GROUP = "pipeline_run", "shared_pipeline_run"
CLUSTER_FIXTURE, CLUSTER_GROUP = "slurm_cluster", "slurm_cluster"

# Small enough to run everywhere in milliseconds, big enough to have intermediate layers.
TINY_MODEL = {"layers": 2, "dim": 32, "heads": 4, "seed": 0}


def _unit(item) -> tuple[int, str]:
    """(rank, work unit) of a test under pytest-xdist: the tests needing the shared run (followed through the
    fixtures they request) are one unit and the other tests needing the SLURM cluster another, ranked first;
    every other test file is a unit, its tests running Snakemake ranked next."""
    if SHARED_RUN_FIXTURE in item.fixturenames:
        return 0, SHARED_RUN_GROUP
    if CLUSTER_FIXTURE in item.fixturenames:
        return 0, CLUSTER_GROUP
    return (1 if item.get_closest_marker("workflow") else 2), item.nodeid.split("::")[0]


def _units_file(basetemp: Path) -> Path:
    return basetemp / "xdist_units.json"


def pytest_collection_modifyitems(config, items):
    """Order the tests by ``_unit``'s rank (stable within a rank) and, on an xdist worker, write each test's work
    unit beside the workers' temporary directories for ``UnitScheduling`` to read. pytest-xdist's own
    ``--dist loadgroup`` cannot carry them: it renames node ids, which pytest 9 no longer lets a plugin do."""
    items.sort(key=lambda item: _unit(item)[0])
    if hasattr(config, "workerinput"):
        write_json(_units_file(Path(config.option.basetemp).parent), {item.nodeid: _unit(item)[1] for item in items})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Two workers (pyproject's addopts) share the tests by work unit: the shared run's tests on one worker and
    the cluster's on the other, queued first as the longest units, then the rest file by file."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                self.units = json.loads(_units_file(config._tmp_path_factory.getbasetemp()).read_text())
            return self.units[nodeid]

    return UnitScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test in this process on one BLAS, one OpenMP and one torch thread, as ``plmexit probe`` fits its
    layers: the tests' arrays and models are tiny, and a thread pool only spins on them, the more so on a
    loaded machine (tests/probing's baselines, honesty and logistic files: 42 s of CPU, 11 s on one thread).
    Processes a test starts (the CLI, benchmarks, Snakemake and its jobs) keep their own settings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The staged real datasets; a hard failure in CI, a visible skip elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"real data directory {SHARED_DATA} not found (see shared/data/PROVENANCE.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, shared_data) -> PipelineRun:
    """The real Snakefile run to the end on config/test.yaml with the local executor, once per session.

    No wall-clock limit: on a machine loaded by other work it takes longer, and a limit that a slow
    machine exceeds would fail every test reading it with a timeout instead of the run's own error.
    ``--keep-going`` runs every job that can run, so a failure's log names every failed job.
    Tests read it through ``finished_run``.
    """
    require(("mmseqs2",), ("mmseqs",), "config/test.yaml's ec task (homology folds, deepfri_ec's default)")
    workdir = tmp_path_factory.mktemp("e2e")
    config = write_config(workdir, shared_data)
    # One layer at a time per probe job: worker processes cost seconds to start and the test's
    # probes take less than that. The SLURM run, compared equal to this one, probes with two
    # worker processes per job, so the parallel path runs end to end too.
    # Extended benchmark records (threads and resources), which summary/resources.tsv needs for GPU- and CPU-hours.
    started = time.monotonic()
    run = snakemake(workdir, "--cores", "2", "--keep-going", "--benchmark-extended", "--configfile", str(config), "--set-threads", "probe_layers=1")
    return PipelineRun.of(run, workdir, config, time.monotonic() - started)


@pytest.fixture
def finished_run(pipeline_run, request) -> tuple[Path, Path]:
    """(workdir, config) of the shared pipeline run, or its failure reported (see ``PipelineRun.result``).

    The run is session-wide because several test modules compare against it (the SLURM run must equal it).
    Tests only read it; a test that changes config works on a copy. A test using it is a workflow test.
    """
    return pipeline_run.result(request.node.nodeid)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a randomly initialised 2-layer, 32-wide ESM2 checkpoint in fair-esm's format."""
    return fair_esm.make_test_model(out_dir=tmp_path_factory.mktemp("tiny_model"), **TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_model_sha256(tiny_model) -> str:
    return sha256_file(tiny_model)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model) -> fair_esm.LoadedModel:
    """The tiny model loaded through plmexit (eval mode, CPU). Do not mutate it in tests."""
    return fair_esm.load_model(tiny_model)


@pytest.fixture(scope="session")
def tiny_hub_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random transformers model directory of every family plmexit writes (``families.HUB_TEST_MODEL_FAMILIES``),
    in the published formats, same shape as ``TINY_MODEL``."""
    out = tmp_path_factory.mktemp("tiny_hub_models")
    return {family: hub.make_test_model(family, out_dir=out, **TINY_MODEL) for family in families.HUB_TEST_MODEL_FAMILIES}


@pytest.fixture(scope="session")
def tiny_hub_loaded(tiny_hub_models) -> dict:
    """Each family's tiny model fetched (``--path``) and loaded through plmexit; do not mutate."""
    return {family: model_manifest.load(model_manifest.resolve(path=path)) for family, path in tiny_hub_models.items()}


@pytest.fixture
def write_file(tmp_path):
    """``write_file(name, content)`` writes str or bytes under ``tmp_path`` and returns the path."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return write


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


class LocalServer:
    """A static file server on 127.0.0.1 (an ephemeral port) for ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def stop(self) -> None:
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self.running = False


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serve ``tmp_path / "served"`` over HTTP on localhost; no proxy may intercept it."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    directory = tmp_path / "served"
    directory.mkdir()
    server = LocalServer(directory)
    yield server
    server.stop()


@pytest.fixture
def files_under():
    """``files_under(path)``: every file below ``path`` (hidden ones included), relative and sorted."""

    def list_files(path: Path) -> list[str]:
        return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())

    return list_files
