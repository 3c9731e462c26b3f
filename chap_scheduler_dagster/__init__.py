"""chap-scheduler-dagster: runs chap-core configured models for DHIS2 on a schedule."""
