"""The run tags this code location sets and reads, in one place (operators filter runs by them)."""

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
# Dagster's own.
MAX_RUNTIME_TAG = "dagster/max_runtime"
PARTITION_TAG = "dagster/partition"
