"""The code location: ``defs`` is what Dagster loads."""

import warnings

import dagster as dg

from .defs.assets import dhis2_chap_prediction_report
from .defs.jobs import dhis2_chap_prediction
from .defs.resources import dhis2_resource_from_env

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

defs = dg.Definitions(
    assets=[dhis2_chap_prediction_report],
    jobs=[dhis2_chap_prediction],
    resources={"dhis2": dhis2_resource_from_env()},
)
