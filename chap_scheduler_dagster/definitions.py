"""The code location: ``defs`` is what Dagster loads."""

import warnings

import dagster as dg

from .defs.assets import dhis2_chap_prediction_report
from .defs.health import chap_scheduler_health, check_connections
from .defs.jobs import dhis2_chap_prediction
from .defs.notifications import notification_sensors, notify_channels_from_env
from .defs.overview import chap_predictions_overview, overview_sensors
from .defs.publishing import forecast_assets, publish_chap_forecast
from .defs.resources import dhis2_resource_definition
from .defs.schedules import dhis2_chap_prediction_schedule
from .defs.sensors import chap_sensors

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# Further operator schedules, each with its own cadence and run window, go here, e.g.
#   from .defs.schedules import build_prediction_schedule
#   monthly = build_prediction_schedule("monthly_last_complete", "0 7 5 * *",
#                                       {"end_mode": "offset", "end_period_offset": 1})
# and add it to ``schedules`` below.

defs = dg.Definitions(
    assets=[dhis2_chap_prediction_report, chap_predictions_overview, *forecast_assets, chap_scheduler_health],
    jobs=[dhis2_chap_prediction, publish_chap_forecast, check_connections],
    schedules=[dhis2_chap_prediction_schedule],
    sensors=[*chap_sensors, *overview_sensors, *notification_sensors],
    resources={"dhis2": dhis2_resource_definition(), "notify_channels": notify_channels_from_env()},
)
