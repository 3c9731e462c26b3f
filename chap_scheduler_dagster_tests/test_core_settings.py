"""SchedulerSettings: CHAP_SCHEDULER_* environment, validation, helpers."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from chap_scheduler_dagster.settings import SchedulerSettings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.upper().startswith("CHAP_SCHEDULER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults():
    s = SchedulerSettings()
    assert (s.location_name, s.period_cap, s.max_url_bytes, s.fetch_concurrency, s.row_budget) == (
        "", 120, 8000, 4, 5_000_000)
    assert (s.prediction_timeout_seconds, s.poll_interval_seconds, s.http_get_attempts) == (3600, 5, 4)
    assert s.quantile_list() == [0.1, 0.25, 0.5, 0.75, 0.9]


def test_env_prefix_parsing(monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_PERIOD_CAP", "60")
    monkeypatch.setenv("CHAP_SCHEDULER_MAX_URL_BYTES", "4096")
    monkeypatch.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "90.5")
    monkeypatch.setenv("CHAP_SCHEDULER_LOCATION_NAME", "sierra_leone")
    monkeypatch.setenv("CHAP_SCHEDULER_QUANTILES", "0.1, 0.5,0.9,")
    monkeypatch.setenv("chap_scheduler_fetch_concurrency", "8")  # names are case-insensitive
    monkeypatch.setenv("ROW_BUDGET", "1")  # no prefix: not ours
    s = SchedulerSettings()
    assert (s.period_cap, s.max_url_bytes, s.prediction_timeout_seconds) == (60, 4096, 90.5)
    assert s.location_name == "sierra_leone"
    assert s.quantile_list() == [0.1, 0.5, 0.9]
    assert s.fetch_concurrency == 8
    assert s.row_budget == 5_000_000


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("CHAP_SCHEDULER_HORIZON_WEEK=20\nDHIS2_PASSWORD=not-for-us\n")
    assert SchedulerSettings().horizon("week") == 20


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHAP_SCHEDULER_LOCATION_NAME", "Sierra Leone"),
        ("CHAP_SCHEDULER_FETCH_CONCURRENCY", "0"),
        ("CHAP_SCHEDULER_FETCH_CONCURRENCY", "33"),
        ("CHAP_SCHEDULER_MAX_URL_BYTES", "512"),
        ("CHAP_SCHEDULER_PERIOD_CAP", "0"),
        ("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "-1"),
        ("CHAP_SCHEDULER_DISCOVERY_INTERVAL_SECONDS", "5"),
        ("CHAP_SCHEDULER_OVERVIEW_INTERVAL_SECONDS", "4"),
        ("CHAP_SCHEDULER_HTTP_GET_ATTEMPTS", "0"),
        ("CHAP_SCHEDULER_ROW_BUDGET", "lots"),
    ],
)
def test_invalid_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        SchedulerSettings()
    assert name.removeprefix("CHAP_SCHEDULER_").lower() in str(info.value)


def test_namespaced():
    assert SchedulerSettings().namespaced("dhis2_chap_prediction") == "dhis2_chap_prediction"
    assert SchedulerSettings(location_name="sl").namespaced("dhis2_chap_prediction") == "sl__dhis2_chap_prediction"


def test_horizon_per_period_type(monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_HORIZON_MONTH", "6")
    s = SchedulerSettings()
    assert [s.horizon(t) for t in ("day", "week", "month", "quarter", "year")] == [30, 12, 6, 2, 1]


def test_get_settings_is_cached(monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_PERIOD_CAP", "77")
    first = get_settings()
    monkeypatch.setenv("CHAP_SCHEDULER_PERIOD_CAP", "78")
    assert get_settings() is first and first.period_cap == 77
    get_settings.cache_clear()
    assert get_settings().period_cap == 78
