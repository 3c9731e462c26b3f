"""The real chap-core lane: a real chap-core 2.5.1 on loopback behind the sandbox's DHIS2 route.

The session fixture runs ``scripts/real_chap.py install`` (a no-op when the venv is complete),
``start`` (own Redis, Celery worker and API, state in a pytest tmp dir) and ``seed`` (mirrors the
sandbox's monthly prediction setup 1 into the real chap), with a sandbox started with
``chap_url=<real chap>``.  Nothing here skips: if the lane cannot be brought up the test fails
with the script's output, which carries the chap log tails.

The lane itself is the session fixture ``real_chap_lane`` (real_chap_fixture.py, registered in
conftest.py, so this module and test_faults_realchap.py share one chap). Run it alone with
``.venv/bin/python -m pytest -m realchap``.  A cold install takes a couple of
minutes; later runs reuse ``$CHAP_REAL_HOME`` (default ``<repo>/.real-chap/``).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.realchap

from .real_chap_fixture import AUTH, N_PERIODS, QUANTILES, SETUP_TO_MIRROR, _log_tails, rc  # noqa: F401


def test_real_chap_setup_is_listed_and_runs_through_the_sandbox_route(real_chap_lane):
    lane = real_chap_lane
    setup_id = lane.seed["prediction_setup_id"]
    with httpx.Client(timeout=60) as plain, httpx.Client(timeout=60, auth=AUTH) as dhis2:
        # What the sandbox's setup says, and which of its org units have a polygon in DHIS2.
        sandbox_setup = rc.fetch_sandbox_setup(plain, lane.sandbox_url, SETUP_TO_MIRROR)
        r = dhis2.get(f"{lane.sandbox_url}/api/organisationUnits",
                      params={"filter": f"id:in:[{','.join(sandbox_setup['orgUnits'])}]",
                              "fields": "id,geometry", "paging": "false"})
        assert r.status_code == 200, r.text
        with_geometry = {o["id"] for o in r.json()["organisationUnits"] if o.get("geometry")}
        without_geometry = set(sandbox_setup["orgUnits"]) - with_geometry
        assert without_geometry, "the sandbox's monthly setup should contain a district without geometry"
        rejected = {row["orgUnit"] for row in lane.seed["rejected"]}

        # 1) The real chap lists the seeded setup THROUGH THE SANDBOX'S DHIS2 ROUTE.
        r = dhis2.get(f"{lane.route}/v1/crud/prediction-setups")
        assert r.status_code == 200, f"{r.status_code} {r.text[:2000]}\n{_log_tails(lane.run_dir)}"
        listed = {s["id"]: s for s in r.json()}
        assert setup_id in listed, f"setup {setup_id} not listed via the route: {sorted(listed)}"
        real = listed[setup_id]
        assert {(c["covariate"], c["dataElementId"]) for c in real["covariateSources"]} == {
            (c["covariate"], c["dataElementId"]) for c in sandbox_setup["covariateSources"]}
        assert set(real["orgUnits"]) == with_geometry - rejected
        assert not set(real["orgUnits"]) & without_geometry
        assert len(real["orgUnits"]) >= len(with_geometry) // 2, (real["orgUnits"], lane.seed["rejected"])
        assert real["periodType"] == sandbox_setup["periodType"]
        assert real["startPeriod"] == rc.chap_period(sandbox_setup["startPeriod"])
        assert real["configuredModel"]["name"] == "naive_model"
        assert real["scheduleEnabled"] is True
        assert real["quantileTargets"] == [{"quantile": str(q["quantile"]), "dataElementId": q["dataElementId"]}
                                           for q in sandbox_setup["quantileTargets"]]

        # 2) A /run with the mirrored DHIS2 data succeeds through the route and yields entries.
        #    The inputs are built from the REAL setup (as read through the route) + the DHIS2 API.
        inputs = rc.fetch_dhis2_inputs(plain, lane.sandbox_url, real, AUTH)
        assert set(inputs["org_units"]) == set(real["orgUnits"])
        assert inputs["n_periods"] >= rc.min_training_periods(real["periodType"])
        t = time.monotonic()
        r = dhis2.post(f"{lane.route}/v1/crud/prediction-setups/{setup_id}/run",
                       json=rc.run_body(inputs, name="real chap lane test run", n_periods=N_PERIODS))
        assert r.status_code == 200, f"/run -> {r.status_code} {r.text[:3000]}"
        job_id = r.json()["id"]
        try:
            status = rc.wait_job(dhis2, lane.route, job_id, timeout=300)
        except rc.RealChapError as exc:
            pytest.fail(f"/run job did not succeed: {exc}\n{_log_tails(lane.run_dir)}", pytrace=False)
        assert status == "SUCCESS"
        lane.timings["run"] = round(time.monotonic() - t, 1)

        r = dhis2.get(f"{lane.route}/v1/jobs", params={"ids": job_id})
        assert r.status_code == 200, r.text
        [job] = r.json()
        assert job["prediction_setup_id"] == setup_id
        prediction_id = int(json.loads(job["result"]))

        r = dhis2.get(f"{lane.route}/v1/analytics/prediction-entry/{prediction_id}",
                      params=[("quantiles", str(q)) for q in QUANTILES])
        assert r.status_code == 200, r.text
        entries = r.json()
        expected_periods = rc.next_periods(inputs["end_period"], N_PERIODS, real["periodType"])
        assert entries, "no prediction entries"
        assert {e["orgUnit"] for e in entries} == set(real["orgUnits"])
        assert sorted({e["period"] for e in entries}) == expected_periods
        assert {float(e["quantile"]) for e in entries} == set(QUANTILES)
        assert len(entries) == len(real["orgUnits"]) * N_PERIODS * len(QUANTILES)
        assert all(isinstance(e["value"], (int, float)) for e in entries)

        # The prediction is attached to the setup (what the scheduler reads back).
        r = dhis2.get(f"{lane.route}/v1/crud/prediction-setups/{setup_id}")
        assert r.status_code == 200, r.text
        assert prediction_id in [p["id"] for p in r.json()["predictions"]]


def test_dagster_job_predicts_with_the_real_chap(real_chap_lane, monkeypatch):
    """The scheduler's own job, in process, against the sandbox DHIS2 whose route leads to the real chap."""
    import dagster as dg

    lane = real_chap_lane
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.5")
    with dg.instance_for_test() as instance:
        result, meta = lane.run_job(instance)
        # Unchanged inputs skip only while chap holds the prediction: the real chap answers
        # GET /v1/crud/predictions/{id} with the name that carries this run's marker.
        again, again_meta = lane.run_job(instance)
    text = meta["report"]
    assert result.success, f"{text}\n{_log_tails(lane.run_dir)}"
    assert "- **Version:** 2.5.1 (API: prediction-setups)" in text
    prediction_id = meta["prediction_id"]
    assert isinstance(prediction_id, int) and prediction_id > 0
    assert meta["prediction_values"] > 0
    assert "Predicted periods:" in text and "| period | median forecast" in text
    assert again.success and again_meta["status"] == "skipped", again_meta["report"]
    assert again_meta["current_prediction_id"] == str(prediction_id)


def test_real_chap_raises_alerts_for_a_setup_with_an_alert_policy_and_the_report_shows_them(real_chap_lane, monkeypatch):
    """chap-core 2.5.1, seen live: after /run of a setup with an alert policy, chap's job ends SUCCESS and
    the alerts exist (pending) at GET /v1/crud/alerts?predictionId=…; the run report lists them."""
    import dagster as dg

    lane = real_chap_lane
    setup_id = lane.seed["prediction_setup_id"]
    levels = [  # a low channel so the naive model's forecast surely crosses it
        {"name": "monitor", "thresholdParams": {"type": "seasonal", "stdMultiplier": 0.0}, "exceedanceThreshold": 0.3},
        {"name": "action", "thresholdParams": {"type": "seasonal", "stdMultiplier": 1.0}, "exceedanceThreshold": 0.5},
    ]
    with httpx.Client(timeout=60, auth=AUTH) as dhis2:
        r = dhis2.post(f"{lane.route}/v1/crud/alert-policies", json={"name": "lane policy", "levels": levels})
        assert r.status_code == 200, r.text
        policy_id = r.json()["id"]
        r = dhis2.patch(f"{lane.route}/v1/crud/prediction-setups/{setup_id}", json={"alertPolicyId": policy_id})
        assert r.status_code == 200, r.text
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.5")
    try:
        with dg.instance_for_test() as instance:
            result, meta = lane.run_job(instance)
        text = meta["report"]
        assert result.success, f"{text}\n{_log_tails(lane.run_dir)}"
        prediction_id = meta["prediction_id"]
        with httpx.Client(timeout=60, auth=AUTH) as dhis2:
            r = dhis2.get(f"{lane.route}/v1/crud/alerts", params={"predictionId": prediction_id})
        assert r.status_code == 200, r.text
        alerts = r.json()
        assert alerts and {a["predictionId"] for a in alerts} == {prediction_id}
        assert {a["approved"] for a in alerts} == {"pending"}
        assert meta["chap_alerts"] == len(alerts) == meta["chap_alerts_pending"]
        assert "## chap alerts" in text
        assert "- **Alert policy:** lane policy (levels, least to most severe: monitor, action)" in text
        # Org units by their DHIS2 name, periods in DHIS2's form.
        assert "| action |" in text or "| monitor |" in text
        assert not any(f"| {a['orgUnit']} |" in text for a in alerts), "org units should be shown by name"
    finally:
        with httpx.Client(timeout=60, auth=AUTH) as dhis2:
            dhis2.patch(f"{lane.route}/v1/crud/prediction-setups/{setup_id}", json={"alertPolicyId": None})


def test_a_real_prediction_is_published_into_dhis2_equal_to_chaps_entries(real_chap_lane, monkeypatch):
    """publish_forecasts with the real chap: DHIS2 then holds exactly chap's prediction-entry values (1e-6),
    and chap's real threshold endpoint gives the outbreak indicator's thresholds for the same prediction."""
    import dagster as dg

    from chap_scheduler_dagster.core.chap_client import ChapClient
    from chap_scheduler_dagster.core.outbreak import chap_thresholds

    lane = real_chap_lane
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.5")
    with dg.instance_for_test() as instance:
        result, meta = lane.run_job(instance)
    assert result.success, f"{meta['report']}\n{_log_tails(lane.run_dir)}"
    assert meta["publish_outcome"] == "published" and meta["publish_conflicts"] == 0
    prediction_id = meta["prediction_id"]
    targets = {float(t["quantile"]): t["dataElementId"]
               for t in rc.fetch_sandbox_setup(httpx.Client(), lane.sandbox_url, SETUP_TO_MIRROR)["quantileTargets"]}
    compared = 0
    with httpx.Client(timeout=60, auth=AUTH) as dhis2:
        for q, de in targets.items():
            entries = dhis2.get(f"{lane.route}/v1/analytics/prediction-entry/{prediction_id}",
                                params={"quantiles": str(q)}).json()
            assert entries
            periods = sorted({e["period"] for e in entries})
            stored = dhis2.get(f"{lane.sandbox_url}/api/dataValueSets", params=[
                ("dataElement", de), *[("period", p) for p in periods], ("orgUnit", "SandboxiaRt"),
                ("children", "true")]).json()["dataValues"]
            got = {(v["orgUnit"], v["period"]): float(v["value"]) for v in stored}
            want = {(e["orgUnit"], e["period"]): float(e["value"]) for e in entries}
            assert got.keys() == want.keys()
            assert all(abs(got[k] - want[k]) <= 1e-6 for k in want), (got, want)
            compared += len(want)
    assert compared == meta["publish_values"]
    with ChapClient(lane.sandbox_url, username=AUTH[0], password=AUTH[1]) as chap:
        thresholds = chap_thresholds(chap, prediction_id, sorted({p for (_, p) in got}))
    assert len(thresholds) == len(got) and all(v > 0 for v in thresholds.values())
