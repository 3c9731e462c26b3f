"""Assets: the per-model run report (materialized by the prediction job's ops)."""

import dagster as dg

from ..settings import get_settings
from .partitions import configured_models_partitions

REPORT_ASSET_NAME = "dhis2_chap_prediction_report"


def _key(name: str) -> dg.AssetKey:
    location = get_settings().location_name
    return dg.AssetKey([location, name]) if location else dg.AssetKey(name)


report_asset_key = _key(REPORT_ASSET_NAME)

dhis2_chap_prediction_report = dg.AssetSpec(
    report_asset_key,
    partitions_def=configured_models_partitions,
    group_name="chap_predictions",
    description="Run report of the latest prediction run of each configured model: status, failed step and error, "
    "input window, DHIS2 rows, chap job and prediction. Written on every run, failed ones included.",
    metadata={"report_metadata_key": "report"},
)
