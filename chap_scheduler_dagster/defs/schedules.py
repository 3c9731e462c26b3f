"""Operator schedules: a fixed cadence chosen in Dagster, one run per known configured model.

``dhis2_chap_prediction_schedule`` uses ``CHAP_SCHEDULER_OPERATOR_SCHEDULE_CRON`` and
``CHAP_SCHEDULER_SCHEDULE_TIMEZONE`` and is stopped until an operator turns it on. More
schedules, with other cadences or run windows, are one line each in ``definitions.py``::

    build_prediction_schedule(
        "monthly_fixed_window", "0 7 5 * *", {"end_mode": "offset", "end_period_offset": 1}
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ..core.double_runs import model_tick, plan_operator_tick
from ..core.partition_keys import key_order
from ..core.run_window import parse_window_request
from ..settings import get_settings
from .jobs import dhis2_chap_prediction
from .ops import ProbeCovariatesConfig
from .one_run_per_tick import runs_at_tick
from .partitions import configured_models_partitions
from .overview import latest_report_rows
from .resources import Dhis2Resource
from .sensors import _list_setups
from .tags import MODEL_TICK_TAG, SCHEDULED_TICK_TAG, launch_tags


def build_prediction_schedule(
    name: str,
    cron_schedule: str,
    run_window_config: Mapping[str, Any] | ProbeCovariatesConfig | None = None,
    *,
    execution_timezone: str | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    description: str | None = None,
) -> dg.ScheduleDefinition:
    """A schedule that launches one ``dhis2_chap_prediction`` run per known configured model.

    ``run_window_config`` is the ``probe_covariates`` config (``end_mode``, ``end_date``,
    ``end_period_offset``); default ``calculated``. It is checked here, so a typo fails when
    the code location loads, not at 6 a.m. Run keys ``operator:<model>:<tick>`` make a tick
    idempotent: re-evaluating it never launches a second run for the same model.
    """
    if isinstance(run_window_config, ProbeCovariatesConfig):
        window = run_window_config.model_dump(exclude_none=True)
    else:
        window = ProbeCovariatesConfig.model_validate(dict(run_window_config or {})).model_dump(exclude_none=True)
    # The same cross-field rules a run applies (fixed needs end_date, …), at load time.
    parse_window_request(window.get("end_mode", "calculated"), window.get("end_date"), window.get("end_period_offset"))
    run_config = {"ops": {"probe_covariates": {"config": window}}}
    timezone = execution_timezone or get_settings().schedule_timezone

    @dg.schedule(
        name=name,
        job=dhis2_chap_prediction,
        cron_schedule=cron_schedule,
        execution_timezone=timezone,
        default_status=default_status,
        description=description
        or f"One run per configured model at '{cron_schedule}' ({timezone}), window {window}.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, dhis2: Dhis2Resource):
        keys = sorted(context.instance.get_dynamic_partitions(configured_models_partitions.name), key=key_order)
        if not keys:
            return dg.SkipReason("no configured models known yet; configured_models_sensor adds chap's models")
        when = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        tick = when.isoformat()
        # One run per model per minute (core.double_runs): chap's cron and this schedule never both run a model.
        settings = get_settings()
        setups = _list_setups(dhis2)
        plan = plan_operator_tick(
            keys,
            None if isinstance(setups, str) else setups,
            tick=when,
            tz=settings.schedule_timezone,
            scope=settings.operator_schedule_covers,
            already_run=runs_at_tick(context.instance, {k: model_tick(k, when, settings.location_name) for k in keys}),
            unreadable=setups if isinstance(setups, str) else "",
        )
        if plan.summary():
            context.log.info(plan.summary())
        if not plan.run:
            return dg.SkipReason(f"nothing to launch at {tick}: {plan.summary()}")
        # Model names from the latest reports, so the Runs page says which model each run is for.
        names = {row.setup_id: row.name for row in latest_report_rows(context.instance, keys)}
        return [
            dg.RunRequest(
                partition_key=key,
                run_key=f"operator:{key}:{tick}",
                run_config=run_config,
                tags={
                    **launch_tags(f"schedule:{name}", names.get(key)),
                    SCHEDULED_TICK_TAG: tick,
                    MODEL_TICK_TAG: model_tick(key, when, settings.location_name),
                },
            )
            for key in plan.run
        ]

    return _schedule


dhis2_chap_prediction_schedule = build_prediction_schedule(
    "dhis2_chap_prediction_schedule",
    get_settings().operator_schedule_cron,
    {"end_mode": "calculated"},
    description="Operator cadence: one run per known configured model at CHAP_SCHEDULER_OPERATOR_SCHEDULE_CRON "
    "(time zone CHAP_SCHEDULER_SCHEDULE_TIMEZONE), window calculated. Stopped by default; turn it on in the UI.",
)
