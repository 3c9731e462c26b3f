import tempfile
from pathlib import Path

import dagster as dg
import pytest

from chap_scheduler_dagster.settings import get_settings

from .real_chap_fixture import real_chap_lane  # noqa: F401  (one real chap-core per session, for -m realchap)

# pytest-xdist (pyproject.toml: `-n 3 --dist loadscope`) sends whole modules to a worker, so a
# module-wide fixture (an e2e stack, the Docker lane) is built once. The modules that share the
# session's real chap-core are sent as one (`pytest_xdist_make_scheduler` below). The lanes are
# collected first, heaviest first, so their waits overlap the short tests instead of following them.
REAL_CHAP_MODULES = {"test_faults_realchap.py", "test_real_chap_lane.py"}
LANES = ("docker", "realchap", "e2e")


def _lane_rank(item: pytest.Item) -> int:
    marks = {m.name for m in item.iter_markers()}
    module_marks = getattr(item.module, "pytestmark", [])
    module_marks = {m.name for m in (module_marks if isinstance(module_marks, list) else [module_marks])}
    if "realchap" in marks and item.path.name not in REAL_CHAP_MODULES:
        raise pytest.UsageError(f"{item.path.name} has real chap-core tests: add it to REAL_CHAP_MODULES in "
                                "conftest.py, so that one worker starts one chap-core for all of them")
    for rank, lane in enumerate(LANES):
        if lane in (module_marks if lane == "e2e" else marks):
            return rank
    return len(LANES)


def pytest_configure(config):
    """Compile the project's packages once, before any worker starts.

    Where PYTHONDONTWRITEBYTECODE is set (this machine and its CI set it), no process writes the
    bytecode of the checkout's own modules, so each of the suite's several hundred Python processes
    (code servers, run workers, the command line) compiled the 14,000 lines again: 0.2-0.3 CPU-s
    each. Bytecode files that exist are still read; they stay out of git and of the Docker build."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("chap_scheduler_dagster", "dhis2_sandbox"):
        compileall.compile_dir(root / package, quiet=1)


def pytest_collection_modifyitems(config, items):
    ranked = sorted(enumerate(items), key=lambda pair: (_lane_rank(pair[1]), pair[0]))
    items[:] = [item for _, item in ranked]


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "real chap-core" if Path(module).name in REAL_CHAP_MODULES else module

    return LaneScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def repository_built_once():
    """Build the code location's repository before any test instance exists.

    ``Definitions.get_repository_def`` is cached, and the first call reads the defs state of the
    instance current at that moment; made after a test's instance was closed (test order decides, and
    pytest-xdist changes the order) it fails with "undefined DagsterInstance weakref".
    """
    from chap_scheduler_dagster.definitions import defs

    defs.get_repository_def()


@pytest.fixture(autouse=True)
def no_closed_instance_stays_current():
    """Every test starts with no Dagster instance "current", and whatever it leaves current is undone.

    An instance makes its defs-state storage current on ``__enter__`` (a context variable) and
    restores the previous one on ``__exit__`` (one exit stack per instance object, so an instance
    entered twice restores once). Seen here: after test_due_and_double_runs.py, its module's
    instance stayed current for the rest of the session, closed and its directory removed; a later
    test that built new ``Definitions`` read that dead storage ("unable to open database file") when
    no pooled connection was left, which depended on the modules an xdist worker ran before.
    (Dagster offers no public way to reset it.)"""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True)
def fast_settings(monkeypatch, request):
    """Poll chap quickly and retry GETs at once in tests; every test starts from fresh settings.

    Tests that record the sleeps (the ``sleeps`` fixture) never really sleep, so they keep the
    real backoff policy and check it.
    """
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.01")
    if "sleeps" not in request.fixturenames:
        monkeypatch.setenv("CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS", "0")
    # Credentials go only to DHIS2_BASE_URL's origin: one set in the developer's shell would refuse the fakes.
    for name in ("DHIS2_BASE_URL", "DHIS2_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def memory_backed_dir() -> tempfile.TemporaryDirectory:
    """A temporary directory in memory (/dev/shm) where the machine has it: on a busy disk, SQLite's
    syncs (a database file per run) took longer than the runs themselves."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)


@pytest.fixture(scope="module")
def shared_instance():
    """One Dagster instance on SQLite per module (creating one takes a second or two); wipe it per test."""
    with memory_backed_dir() as tmp, dg.instance_for_test(temp_dir=tmp) as inst:
        yield inst


@pytest.fixture
def dagster_home(monkeypatch) -> Path:
    """DAGSTER_HOME for code that opens the instance itself (the CLI in process), in memory-backed files."""
    with memory_backed_dir() as tmp:
        home = Path(tmp)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        monkeypatch.setenv("DAGSTER_HOME", tmp)
        yield home


@pytest.fixture
def persistent_instance(shared_instance):
    """The module's SQLite instance, wiped: for sensor contexts, which need an instance another
    process could open (an in-memory one is refused)."""
    shared_instance.wipe()
    return shared_instance


@pytest.fixture(scope="module")
def memory_instance():
    """One in-memory Dagster instance per module, for runs in process: no files, no SQLite syncs.

    A run against it costs about half the CPU of one against a fresh ``instance_for_test`` and
    needs no second or two to create the instance.
    """
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def instance(memory_instance):
    """The module's in-memory instance, wiped before each test (runs, events, dynamic partitions)."""
    memory_instance.wipe()
    return memory_instance
