"""Operator policy settings, read from ``CHAP_SCHEDULER_*`` environment variables.

These are deployment policy, not launch parameters: an operator sets them once per
code location (in the environment, a ``.env`` file or docker compose), and every run,
sensor and schedule of that location reads the same values.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHAP_SCHEDULER_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    location_name: str = Field(
        default="",
        description="Name of the DHIS2 this code location serves. Empty for a single DHIS2; set it "
        "(e.g. 'sierra_leone') when one Dagster serves several, so partitions and reports do not mix.",
        pattern=r"^[a-z0-9_]*$",
    )
    # Job waiting
    prediction_timeout_seconds: float = Field(default=3600, gt=0)
    poll_interval_seconds: float = Field(default=5, gt=0)
    reconcile_seconds: float = Field(
        default=120, gt=0, description="How long to look in chap for a prediction by name after its POST's "
        "answer was lost (timeout, 502/503/504, dropped connection) before saying it was not created.",
    )
    # Periods
    period_cap: int = Field(default=120, gt=0, description="Most input periods a run may request.")
    horizon_day: int = Field(default=30, gt=0)
    horizon_week: int = Field(default=12, gt=0)
    horizon_month: int = Field(default=3, gt=0)
    horizon_quarter: int = Field(default=2, gt=0)
    horizon_year: int = Field(default=1, gt=0)
    quantiles: str = Field(default="0.1,0.25,0.5,0.75,0.9", description="Forecast quantiles to read back.")
    # HTTP and data path
    http_timeout_seconds: float = Field(default=60, gt=0)
    http_get_attempts: int = Field(default=4, ge=1, description="Attempts for a GET (POSTs are sent once).")
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0, description="Wait before the first GET retry; it doubles per retry, capped at 8 s (0: none)."
    )
    max_url_bytes: int = Field(default=8000, ge=1024, description="Longest request URL sent to DHIS2.")
    fetch_concurrency: int = Field(default=4, ge=1, le=32, description="Analytics requests in flight at once.")
    max_rows_per_request: int = Field(
        default=20_000, ge=100, description="Most analytics rows asked for in one request (bounds memory per answer)."
    )
    spool_dir: str | None = Field(
        default=None,
        description="Where the request body is written while a run builds it (about 85 bytes per analytics "
        "row: 25 MB at 300k rows). Default: the system temporary directory.",
    )
    row_budget: int = Field(default=5_000_000, gt=0, description="Most analytics rows one run may fetch.")
    # Publishing forecasts to DHIS2 (core/publish.py)
    publish: Literal["on", "dry-run", "off"] = Field(
        default="on",
        description="Write chap's forecasts into the quantile targets' data elements after each prediction: "
        "on (dry run, then import), dry-run (report what would be written), off.",
    )
    publish_chunk_values: int = Field(
        default=10_000, ge=100, description="Most data values sent to DHIS2 in one dataValueSets request."
    )
    publish_delete_stale: bool = Field(
        default=False,
        description="Delete target cells in this forecast's periods that hold a value for an org unit this "
        "forecast no longer covers (dry run first; needs the DHIS2 authority F_DATAVALUE_DELETE).",
    )
    outbreak_quantile: float = Field(
        default=0.75, gt=0, lt=1, description="Forecast quantile compared with chap's threshold for outbreak_indicator."
    )
    refresh_analytics: bool = Field(
        default=False, description="Start DHIS2's analytics table update (last years) after a real import."
    )
    # Sensors and schedules
    discovery_interval_seconds: int = Field(default=300, ge=30)
    overview_interval_seconds: int = Field(
        default=30, ge=5, description="How often the run-status sensors look for ended prediction runs: they "
        "refresh the overview and write the report of a run that could not (Dagster's default is 30 s).",
    )
    schedule_timezone: str = Field(default="UTC")
    operator_schedule_cron: str = Field(default="0 6 * * 1")
    operator_schedule_covers: Literal["unscheduled", "all"] = Field(
        default="unscheduled",
        description="Which models operator schedules run: 'unscheduled' = only those without a working chap "
        "schedule (scheduleEnabled + cron); 'all' = every model, except at a minute its chap cron also fires.",
    )

    # chap-scheduler-run with several models (cli_fanout.py)
    cli_concurrency: int = Field(
        default=2, ge=1, le=64,
        description="Models chap-scheduler-run runs at once when the Dagster instance sets no run-queue limit "
        "for the tag chap_scheduler/dhis2 (when it does, that limit applies).",
    )

    def horizon(self, period_type: str) -> int:
        return int(getattr(self, f"horizon_{period_type}", 3))

    def today(self) -> date:
        """Today in the scheduling time zone: what "offset N periods back" counts from."""
        return datetime.now(ZoneInfo(self.schedule_timezone)).date()

    def quantile_list(self) -> list[float]:
        return [float(q) for q in self.quantiles.split(",") if q.strip()]

    def namespaced(self, name: str) -> str:
        """Prefix a global Dagster name (partition set, asset key part) with the location name."""
        return f"{self.location_name}__{name}" if self.location_name else name


@lru_cache(maxsize=1)
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()
