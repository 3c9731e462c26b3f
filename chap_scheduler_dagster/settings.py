"""Operator policy settings, read from ``CHAP_SCHEDULER_*`` environment variables.

These are deployment policy, not launch parameters: an operator sets them once per
code location (in the environment, a ``.env`` file or docker compose), and every run,
sensor and schedule of that location reads the same values.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
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
    # Sensors and schedules
    discovery_interval_seconds: int = Field(default=300, ge=30)
    schedule_timezone: str = Field(default="UTC")
    operator_schedule_cron: str = Field(default="0 6 * * 1")

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
