"""The run tags this code location sets and reads, in one place (operators filter runs by them).

Every prediction run says which model it is for: the partition key (``dagster/partition``) is chap's
id and ``chap_scheduler/model`` adds the configured model's name. Launchers that know the name set it
when they create the run; ``probe_covariates`` sets it on every run once it has loaded the model.
"""

from __future__ import annotations

import dagster as dg

# Set by submit_prediction and read by the backstop; defined in core, which records them without Dagster.
from ..core.run_cause import JOB_TAG, POST_TAG  # noqa: F401

# The queued run coordinator limits concurrent runs per value of this tag (dagster.yaml).
DHIS2_TAG = "chap_scheduler/dhis2"
# Who launched the run: "chap-cron", "schedule:<name>" or "cli".
TRIGGER_TAG = "chap_scheduler/trigger"
# chap's own schedule: the cron expression and the tick a run is for; "true" when it catches up after downtime.
CRON_TAG = "chap_scheduler/cron"
CRON_TICK_TAG = "chap_scheduler/cron_tick"
CATCH_UP_TAG = "chap_scheduler/catch_up"
# The operator schedule's tick a run is for.
SCHEDULED_TICK_TAG = "chap_scheduler/scheduled_tick"
# One model at one minute (core.double_runs.model_tick), so chap's cron and an operator schedule never both run it.
MODEL_TICK_TAG = "chap_scheduler/model_tick"
# Dagster's own.
MAX_RUNTIME_TAG = "dagster/max_runtime"
PARTITION_TAG = "dagster/partition"
# The configured model's name, and the chap job a run waits on (set by the ops).
MODEL_TAG = "chap_scheduler/model"
CHAP_JOB_TAG = JOB_TAG  # one tag for the chap job a run created or waits on
# The run report's status (succeeded, succeeded with warnings, failed, canceled, skipped), so the
# Runs page says what the report says (Dagster's own run status has no "with warnings").
OUTCOME_TAG = "chap_scheduler/outcome"
# Tag values show in one line on the Runs page; a long model name is cut.
MAX_TAG_VALUE = 120


def model_tags(name: str | None) -> dict[str, str]:
    """The model-name tag, or nothing when the name is not known yet."""
    name = " ".join((name or "").split())
    if not name:
        return {}
    return {MODEL_TAG: name if len(name) <= MAX_TAG_VALUE else name[: MAX_TAG_VALUE - 1] + "…"}


def launch_tags(trigger: str, model_name: str | None = None) -> dict[str, str]:
    """Tags for a run being created: who launched it and, when known, the model's name."""
    return {TRIGGER_TAG: trigger, **model_tags(model_name)}


def tag_running_run(context: dg.OpExecutionContext, tags: dict[str, str]) -> None:
    """Add tags to the run this op belongs to, so the Runs page shows them (only what changed)."""
    run = context.instance.get_run_by_id(context.run_id) if tags else None
    if run is not None:
        changed = {k: v for k, v in tags.items() if v and run.tags.get(k) != v}
        if changed:
            context.instance.add_run_tags(context.run_id, changed)
