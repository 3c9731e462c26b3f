"""The run report's metadata keys: one contract for the writer (core/report.py) and its readers.

The report asset's metadata is how the overview, the notifications, the unchanged-inputs check and
the command line learn a run's outcome; they all name the keys through :class:`Key` and read the
values with :func:`text` / :func:`count`, so a renamed key cannot leave a reader behind.
Pure: no Dagster (a Dagster ``MetadataValue`` is unwrapped through its ``value``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Key(StrEnum):
    # outcome (str)
    STATUS = "status"
    FAILED_STEP = "failed_step"
    ERROR = "error"
    HINT = "hint"
    # the configured model and the run (str)
    CONFIGURED_MODEL_ID = "configured_model_id"
    CONFIGURED_MODEL = "configured_model"
    PERIOD_TYPE = "period_type"
    RUN_ID = "run_id"
    JOB_ID = "job_id"
    WINDOW = "window"
    # figures (int / float)
    PREDICTION_ID = "prediction_id"  # int, "" when there is none
    INPUT_PERIODS = "input_periods"
    ROW_ESTIMATE = "row_estimate"
    ANALYTICS_ROWS = "analytics_rows"
    OBSERVATIONS = "observations"
    LONGEST_URL = "longest_url"
    PREDICTION_VALUES = "prediction_values"
    DURATION_SECONDS = "duration_seconds"
    # unchanged inputs (core/fingerprint.py; str)
    FINGERPRINT = "fingerprint"
    CURRENT_PREDICTION_ID = "current_prediction_id"
    CURRENT_PREDICTION_RUN_ID = "current_prediction_run_id"
    # succeeded with warnings (core/run_warnings.py)
    WARNINGS = "warnings"  # int: how many
    WARNINGS_TEXT = "warnings_text"  # str: one a line
    WARNINGS_SUMMARY = "warnings_summary"  # str: in a few words
    # chap's alerts (core/chap_alerts.py; int, int, str)
    CHAP_ALERTS = "chap_alerts"
    CHAP_ALERTS_PENDING = "chap_alerts_pending"
    CHAP_ALERTS_SUMMARY = "chap_alerts_summary"
    # publishing (core/publish_report.py; str)
    PUBLISH_MODE = "publish_mode"
    PUBLISH_OUTCOME = "publish_outcome"
    # the markdown itself (Dagster markdown metadata, written by defs/reporting.py)
    REPORT = "report"


def text(metadata: Mapping[str, Any], key: Key) -> str:
    """The value under ``key`` as text; "" when absent."""
    entry = metadata.get(key)
    value = getattr(entry, "value", entry)
    return "" if value is None else str(value)


def count(metadata: Mapping[str, Any], key: Key) -> int:
    """A non-negative whole number under ``key``; 0 when absent or not a number."""
    value = text(metadata, key)
    return int(value) if value.isdigit() else 0
