"""Tags every prediction run carries, whoever launches it, so the Runs page says which model a run is for.

The partition key (``dagster/partition``) is chap's id; ``chap_scheduler/model`` adds the
configured model's name. Launchers that know the name (the command line with ``--all``,
chap's own schedules) set it when they create the run; ``probe_covariates`` sets it on every
run as soon as it has loaded the configured model, so launches from the launchpad and
operator schedules get it too.
"""

from __future__ import annotations

import dagster as dg

TRIGGER_TAG = "chap_scheduler/trigger"
MODEL_TAG = "chap_scheduler/model"
CHAP_JOB_TAG = "chap_scheduler/chap_job"
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
