import pytest

from chap_scheduler_dagster.settings import get_settings


@pytest.fixture(autouse=True)
def fast_settings(monkeypatch):
    """Poll chap quickly in tests; every test starts from fresh settings."""
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.01")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
