import tempfile
from pathlib import Path

import dagster as dg
import pytest

from chap_scheduler_dagster.settings import get_settings

from .real_chap_fixture import real_chap_lane  # noqa: F401  (one real chap-core per session, for -m realchap)


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


@pytest.fixture(scope="module")
def shared_instance():
    """One Dagster instance per module (creating one takes a second or two); wipe it per test.

    Its SQLite files live in memory (/dev/shm) where the machine has it: on a busy disk, SQLite's
    syncs (a database file per run) took longer than the runs themselves.
    """
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp, dg.instance_for_test(temp_dir=tmp) as inst:
        yield inst
