"""The instance side of "one run per model per minute" (rule: ``core.double_runs``)."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from .tags import MODEL_TICK_TAG


def runs_at_tick(instance: dg.DagsterInstance, ticks: Mapping[str, str]) -> dict[str, str]:
    """Partition key -> id of a run that already carries its ``model_tick`` tag value (one query)."""
    if not ticks:
        return {}
    wanted = {value: key for key, value in ticks.items()}
    records = instance.get_run_records(dg.RunsFilter(tags={MODEL_TICK_TAG: sorted(wanted)}), limit=len(wanted) * 4)
    found: dict[str, str] = {}
    for record in records:
        key = wanted.get(record.dagster_run.tags.get(MODEL_TICK_TAG, ""))
        if key is not None:
            found.setdefault(key, record.dagster_run.run_id)
    return found
