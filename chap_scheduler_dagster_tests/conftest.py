import pytest

from chap_scheduler_dagster.settings import get_settings


@pytest.fixture(autouse=True)
def fast_settings(monkeypatch):
    """Poll chap quickly in tests; every test starts from fresh settings."""
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.01")
    # Credentials go only to DHIS2_BASE_URL's origin: one set in the developer's shell would refuse the fakes.
    for name in ("DHIS2_BASE_URL", "DHIS2_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
