"""The prediction job: one run = one configured model (partition) from DHIS2 data to a chap prediction."""

import dagster as dg

from ..settings import get_settings
from .ops import await_prediction, fetch_analytics, probe_covariates, submit_prediction
from .partitions import configured_models_partitions
from .resources import dhis2_resource_from_env
from .run_state import RunStateIOManager

# The queued run coordinator limits concurrent runs per value of this tag (dagster.yaml).
DHIS2_TAG = "chap_scheduler/dhis2"
MAX_RUNTIME_TAG = "dagster/max_runtime"


@dg.job(
    partitions_def=configured_models_partitions,
    # The chain is sequential and I/O-bound: one process per step would only add ~3 s of imports each.
    executor_def=dg.in_process_executor,
    # The state between ops lives in the instance's database, the same in tests and production,
    # so re-execution finds its parent's state (defs/run_state.py, docs/decisions.md).
    # dhis2 is bound here too (the same EnvVar-backed resource as in Definitions) because a job that
    # brings any resource must bring all it needs; tests and the launchpad still override it.
    resource_defs={"io_manager": RunStateIOManager(), "dhis2": dhis2_resource_from_env()},
    tags={
        DHIS2_TAG: get_settings().location_name or "default",
        # Run monitoring fails a run that outlives its longest honest duration (chap's wait plus
        # 30 min for DHIS2), so a worker that died on a host is not left "started" for the 2 h default.
        MAX_RUNTIME_TAG: str(int(get_settings().prediction_timeout_seconds) + 1800),
    },
    description="Run one chap configured model (partition = chap id) from DHIS2 data to a finished prediction.",
)
def dhis2_chap_prediction() -> None:
    await_prediction(submit_prediction(fetch_analytics(probe_covariates())))
