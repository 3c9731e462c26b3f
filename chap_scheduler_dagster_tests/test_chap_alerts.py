"""chap's outbreak alerts: read over the route (respx), in the run report, the overview and the
metadata for chap_forecast."""

from __future__ import annotations

import dagster as dg
import respx

from chap_scheduler_dagster.core.chap_alerts import (
    AlertsSummary,
    ChapAlert,
    collect_alerts,
    forecast_alert_metadata,
    read_alerts,
    render_alerts_section,
)
from chap_scheduler_dagster.core.chap_client import ChapClient
from chap_scheduler_dagster.core.overview import OverviewRow, render_overview
from chap_scheduler_dagster.core.prediction_steps import PredictionRun
from chap_scheduler_dagster.core.report import RunReport

from .core_fixtures import CHAP, DHIS2, PASSWORD, USER, make_setup

POLICY = {"id": 2, "name": "EWARS ladder", "levels": [
    {"name": "monitor", "thresholdParams": {"type": "seasonal", "stdMultiplier": 1}, "exceedanceThreshold": 0.5},
    {"name": "action", "thresholdParams": {"type": "seasonal", "stdMultiplier": 2}, "exceedanceThreshold": 0.5}]}


def _alert(i: int, ou: str, period: str, level: str, approved: str = "pending") -> dict:
    # The wire shape chap-core 2.5.1 answered live (camelCase).
    return {"timePeriod": period, "orgUnit": ou, "alertPolicyId": 2, "level": level, "predictionId": 7,
            "created": "2026-11-30T10:13:30.715967", "approved": approved, "approvedBy": None, "approvedAt": None,
            "id": i}


ALERTS = [_alert(1, "OU_A", "202609", "monitor"), _alert(2, "OU_A", "202610", "action"),
          _alert(3, "OU_A", "202611", "action"), _alert(4, "OU_B", "202610", "action", "approved")]


def _client() -> ChapClient:
    return ChapClient(DHIS2, username=USER, password=PASSWORD, get_attempts=1, sleep=lambda s: None)


@respx.mock
def test_alerts_are_read_grouped_and_named():
    route = respx.get(f"{CHAP}/v1/crud/alerts", params={"predictionId": "7"}).respond(json=ALERTS)
    with _client() as chap:
        summary = read_alerts(chap, 7, alert_policy=POLICY, org_unit_names=lambda ids: {"OU_A": "Bo", "OU_B": "Kenema"})
    assert route.called
    assert summary.available and summary.pending == 3
    assert summary.counts() == {"action": 3, "monitor": 1}  # most severe first
    assert summary.one_line() == "4 alerts (3 action, 1 monitor) in 2 org units"
    text = "\n".join(render_alerts_section(summary))
    assert "- **Alert policy:** EWARS ladder (levels, least to most severe: monitor, action)" in text
    assert "approval: 1 approved, 3 pending" in text
    assert "| action | Bo | 202610, 202611 | 2 pending |" in text
    assert "| action | Kenema | 202610 | approved |" in text
    assert text.index("| action | Bo") < text.index("| monitor | Bo | 202609 | pending |")
    assert summary.metadata() == {"chap_alerts": 4, "chap_alerts_pending": 3,
                                  "chap_alerts_summary": "4 alerts (3 action, 1 monitor) in 2 org units",
                                  "chap_alerts_action": 3, "chap_alerts_monitor": 1}


@respx.mock
def test_a_chap_without_the_alerts_api_is_a_note_not_a_failure():
    respx.get(f"{CHAP}/v1/crud/alerts").respond(404, json={"detail": "Not Found"})
    with _client() as chap:
        summary = read_alerts(chap, 7, alert_policy=POLICY)
    assert not summary.available
    assert "has no alerts API" in summary.note
    assert render_alerts_section(summary)[-1].startswith("- **Note:** this chap-core has no alerts API")
    respx.get(f"{CHAP}/v1/crud/alerts").respond(500, json={"detail": "boom"})
    with _client() as chap:
        assert "could not be read" in read_alerts(chap, 7).note


@respx.mock
def test_collect_only_for_setups_with_an_alert_policy_and_into_the_report():
    setup = make_setup()
    run = PredictionRun(report=RunReport(setup_id=str(setup.id), dhis2_url=DHIS2, setup=setup))
    run.report.prediction_id = 7
    detail = respx.get(f"{CHAP}/v1/crud/prediction-setups/{setup.id}")
    alerts = respx.get(f"{CHAP}/v1/crud/alerts").respond(json=ALERTS)
    detail.respond(json={"id": setup.id, "alertPolicy": None})
    with _client() as chap:
        collect_alerts(run, chap, None)
    assert run.report.chap_alerts is None and not alerts.called
    assert "## chap alerts" not in run.report.markdown()

    detail.respond(json={"id": setup.id, "alertPolicy": POLICY})
    with _client() as chap:
        collect_alerts(run, chap, None)
    run.report.succeed()
    text = run.report.markdown()
    assert "## chap alerts" in text and "| action | OU_A | 202610, 202611 | 2 pending |" in text
    meta = run.report.metadata()
    assert meta["chap_alerts_pending"] == 3 and meta["status"] == "succeeded"

    # The metadata the chap_forecast asset carries.
    forecast = forecast_alert_metadata(run.report.chap_alerts)
    assert forecast["chap_alerts"] == 4 and "| action |" in forecast["chap_alerts_table"]
    assert forecast_alert_metadata(None) == {}


def test_overview_counts_alerts():
    rows = [OverviewRow(setup_id="3", name="EWARS", status="succeeded", alerts=4, alerts_pending=3),
            OverviewRow(setup_id="4", status="succeeded")]
    text = render_overview(rows)
    assert "## chap alerts (latest prediction)" in text
    assert "- **3** (EWARS): 4 alerts, 3 pending review" in text
    assert "**4**" not in text
    assert "chap alerts" not in render_overview([rows[1]])


def test_weekly_periods_are_shown_in_dhis2_form():
    summary = AlertsSummary(prediction_id=1, alerts=[ChapAlert.model_validate(_alert(1, "OU", "2027W01", "x"))])
    assert "| x | OU | 2027W1 | pending |" in "\n".join(render_alerts_section(summary))


@respx.mock
def test_job_failed_after_storing_the_prediction_is_reported_for_what_it_is():
    from chap_scheduler_dagster.core.chap_alerts import explain_failed_job
    from chap_scheduler_dagster.core.errors import ChapJobFailed

    setup = make_setup()
    run = PredictionRun(report=RunReport(setup_id=str(setup.id), dhis2_url=DHIS2, setup=setup, job_id="job-1"))
    respx.get(f"{CHAP}/v1/jobs", params={"ids": "job-1"}).respond(json=[{
        "id": "job-1", "type": "create_prediction", "status": "FAILURE", "start_time": "2026-11-30T10:13:13.207279",
        "end_time": "2026-11-30T10:13:20.0", "result": None,
        "error": "Traceback …\nValueError: no complete year of history to compute a seasonal threshold",
        "prediction_setup_id": setup.id}])
    detail = respx.get(f"{CHAP}/v1/crud/prediction-setups/{setup.id}")
    older = {"id": 4, "created": "2026-11-29T09:00:00"}
    detail.respond(json={"id": setup.id, "alertPolicy": POLICY,
                         "predictions": [older, {"id": 9, "created": "2026-11-30T10:13:19.5"}]})
    exc = ChapJobFailed("chap job job-1 ended FAILURE: ValueError: no complete year of history")
    with _client() as chap:
        assert explain_failed_job(run, chap, exc) is True
    run.report.fail("await_prediction", exc)
    text = run.report.markdown()
    assert "FAILED at `await_prediction`" in text
    assert "The forecast exists in chap (prediction 9); only chap's alert step failed" in text
    assert "- **Prediction id:** 9" in text
    assert "- **Note:** chap stored prediction 9, then failed while raising alerts for policy 'EWARS ladder': " \
           "ValueError: no complete year of history to compute a seasonal threshold" in text

    # No prediction after the job started, or no alert policy: the failure is left as it was.
    detail.respond(json={"id": setup.id, "alertPolicy": POLICY, "predictions": [older]})
    other = ChapJobFailed("chap job job-1 ended FAILURE: model crashed", hint="See chap-core's job log")
    run2 = PredictionRun(report=RunReport(setup_id=str(setup.id), dhis2_url=DHIS2, setup=setup, job_id="job-1"))
    with _client() as chap:
        assert explain_failed_job(run2, chap, other) is False
    assert other.hint == "See chap-core's job log" and run2.report.prediction_id is None
    detail.respond(json={"id": setup.id, "alertPolicy": None, "predictions": [{"id": 9, "created": "2026-12-01T00:00:00"}]})
    with _client() as chap:
        assert explain_failed_job(run2, chap, other) is False
