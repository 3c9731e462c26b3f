"""The prediction job: one run = one configured model (partition) from DHIS2 data to a chap prediction."""

import dagster as dg

from ..settings import get_settings
from .ops import await_prediction, fetch_analytics, probe_covariates, submit_prediction
from .partitions import configured_models_partitions
from .publishing import publish_forecasts
from .tags import DHIS2_TAG, MAX_RUNTIME_TAG
from .run_state import RunStateIOManager


@dg.job(
    partitions_def=configured_models_partitions,
    # The chain is sequential and I/O-bound: one process per step would only add ~3 s of imports each.
    executor_def=dg.in_process_executor,
    tags={
        DHIS2_TAG: get_settings().location_name or "default",
        # Run monitoring fails a run that outlives its longest honest duration (chap's wait plus
        # 30 min for DHIS2), so a worker that died on a host is not left "started" for the 2 h default.
        MAX_RUNTIME_TAG: str(int(get_settings().prediction_timeout_seconds) + 1800),
    },
    description="Run one chap configured model (partition = chap id) from DHIS2 data to a finished prediction.",
)
def dhis2_chap_prediction() -> None:
    publish_forecasts(await_prediction(submit_prediction(fetch_analytics(probe_covariates()))))


# The state between ops lives in the instance's database, the same in tests and production, so a
# re-execution finds its parent's state (defs/run_state.py, docs/decisions.md §14). The IO manager is
# the job's own, so execute_in_process does not swap in its in-memory one. Every other resource
# (dhis2, and any added later) stays unbound here and comes from Definitions or from the caller:
# `_was_explicitly_provided_resources=False` (Dagster 1.13 private API, checked by
# test_operator_picture.py) keeps Dagster from demanding them all at definition time.
dhis2_chap_prediction = dhis2_chap_prediction._copy(  # noqa: SLF001
    resource_defs={"io_manager": RunStateIOManager().get_resource_definition()},
    _was_explicitly_provided_resources=False,
)
