"""Tests for the DHIS2 sandbox (``dhis2_sandbox``): DHIS2 facts, the chap stand-in, faults, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as P
from dhis2_sandbox.world import (
    DE_CASES,
    DE_CASES_WEEKLY,
    DE_POP,
    DE_RAIN,
    DE_RAIN_GAPPY,
    DE_TEMP,
    DE_TEMP_WEEKLY,
    ROOT_OU,
)

AUTH = ("admin", "district")
ROUTE = "/api/routes/chap/run"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.3)) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset_faults(request):
    yield
    if "sb" in request.fixturenames:
        request.getfixturevalue("sb").faults.reset()


@pytest.fixture
def client(sb):
    with httpx.Client(base_url=sb.base_url, auth=AUTH, timeout=30) as c:
        yield c


def analytics(client, *dims, **params):
    return client.get("/api/analytics", params={"dimension": list(dims), **params})


def wait_terminal(client, job_id, prefix=ROUTE, timeout=10.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.get(f"{prefix}/v1/jobs/{job_id}").json()
        if not seen or seen[-1] != st:
            seen.append(st)
        if st in ("SUCCESS", "FAILURE"):
            return seen
        time.sleep(0.03)
    return seen


def run_body(client, sb, setup, last_n=36, periods=None, n_periods=3):
    """Build a /run body the way the scheduler does: analytics + org-unit geometry."""
    ptype = setup["periodType"]
    if periods is None:
        # the probe's end: min over covariates of the latest period (temperature lags)
        last = {"month": sb.world.last_month - 2, "week": sb.world.last_week - 1,
                "year": sb.world.today.year - 1}[ptype]
        start = P.parse(setup["startPeriod"])[1]
        first = max(start, last - last_n + 1)
        periods = [P.format_id(ptype, i) for i in range(first, last + 1)]
    dx = {s["dataElementId"]: s["covariate"] for s in setup["covariateSources"]}
    r = analytics(client, "dx:" + ";".join(dx), "pe:" + ";".join(periods), "ou:" + ";".join(setup["orgUnits"]))
    assert r.status_code == 200, r.text
    data = [
        {"featureName": dx[row[0]], "orgUnit": row[2], "period": row[1], "value": float(row[3])}
        for row in r.json()["rows"]
    ]
    ous = client.get(
        "/api/organisationUnits",
        params={"filter": f"id:in:[{','.join(setup['orgUnits'])}]",
                "fields": "id,geometry,parent[id],level,displayName,code", "paging": "false"},
    ).json()["organisationUnits"]
    features = [
        {"type": "Feature", "id": o["id"], "geometry": o["geometry"],
         "properties": {"id": o["id"], "level": o["level"], "displayName": o["displayName"]}}
        for o in ous if "geometry" in o
    ]
    return {"name": f"sandbox test {setup['name']}", "geojson": {"type": "FeatureCollection", "features": features},
            "providedData": data, "nPeriods": n_periods, "type": "forecasting"}


# ---------------------------------------------------------------------------------------------
# periods (private helpers)
# ---------------------------------------------------------------------------------------------
def test_period_helpers_accept_padded_weeks_and_emit_unpadded():
    assert P.parse("2024W01") == P.parse("2024W1") == ("week", P.index_of("week", date(2024, 1, 1)))
    assert P.format_id(*P.parse("2024W01")) == "2024W1"
    assert P.format_id(*P.parse("2024W1"), pad=True) == "2024W01"
    assert P.parse("2024W53") is None and P.parse("2020W53") is not None
    assert P.format_id(*P.parse("2024-03")) == "202403"
    assert [P.format_id(t, i) for t, i in P.expand_relative("LAST_12_MONTHS", date(2022, 1, 1))][::11] == [
        "202101", "202112"]
    assert P.expand_relative("LAST_5_YEARS", date(2024, 6, 1))[-1] == ("year", 2023)


# ---------------------------------------------------------------------------------------------
# auth and system info
# ---------------------------------------------------------------------------------------------
def test_auth_variants(sb):
    r = httpx.get(f"{sb.base_url}/api/system/info")
    assert r.status_code == 302
    assert r.headers["location"].endswith("/dhis-web-login/")
    r = httpx.get(f"{sb.base_url}/api/system/info", auth=("admin", "wrong"))
    assert r.status_code == 401
    assert r.json() == {"httpStatus": "Unauthorized", "httpStatusCode": 401, "status": "ERROR",
                        "message": "Unauthorized"}
    r = httpx.get(f"{sb.base_url}/api/system/info", headers={"Authorization": f"ApiToken {sb.config.token}"})
    assert r.status_code == 200
    r = httpx.get(f"{sb.base_url}/api/system/info", headers={"Authorization": "ApiToken d2pat_nope"})
    assert r.status_code == 401
    # the route needs DHIS2 auth too; the direct stand-in does not
    assert httpx.get(f"{sb.base_url}{ROUTE}/system/info").status_code == 302
    assert httpx.get(f"{sb.base_url}/__sandbox/chap/system/info").json()["chap_core_version"] == "2.5.1"


def test_system_info_and_ping(client, sb):
    info = client.get("/api/system/info").json()
    assert info["version"] == "2.41.4"
    assert info["systemName"] == "DHIS2 sandbox (Sandboxia)"
    assert info["serverTimeZoneId"] == "Etc/UTC" and info["calendar"] == "iso8601"
    assert info["contextPath"] == sb.base_url
    for key in ("revision", "buildTime", "serverDate", "dateFormat", "systemId"):
        assert info[key]
    assert client.get("/api/system/ping").status_code == 200
    assert client.get("/api/41/system/info").json()["version"] == "2.41.4"


# ---------------------------------------------------------------------------------------------
# analytics
# ---------------------------------------------------------------------------------------------
def test_analytics_headers_follow_request_order_and_cells_are_strings(client, sb):
    r = analytics(client, "pe:LAST_3_MONTHS", "ou:LEVEL-2", f"dx:{DE_CASES};{DE_RAIN}")
    assert r.status_code == 200
    body = r.json()
    assert [h["name"] for h in body["headers"]] == ["pe", "ou", "dx", "value"]
    assert body["headers"][0] == {"name": "pe", "column": "Period", "valueType": "TEXT",
                                  "type": "java.lang.String", "hidden": False, "meta": True}
    assert body["headers"][-1]["valueType"] == "NUMBER" and body["headers"][-1]["meta"] is False
    assert body["height"] == len(body["rows"]) == 3 * 12 * 2
    assert body["width"] == body["headerWidth"] == 4
    for pe, ou, dx, value in body["rows"]:
        assert all(isinstance(c, str) for c in (pe, ou, dx, value))
        float(value)
        if dx == DE_CASES:
            assert value.isdigit()
    assert set(body["metaData"]["dimensions"]) >= {"dx", "pe", "ou"}
    assert body["metaData"]["items"]["LAST_3_MONTHS"]["name"] == "Last 3 months"
    assert body["metaData"]["items"]["dx"] == {"name": "Data"}


def test_analytics_relative_periods_exclude_current(client):
    r = analytics(client, f"dx:{DE_CASES}", "pe:LAST_12_MONTHS", "ou:LEVEL-2", relativePeriodDate="2026-03-15")
    pe = r.json()["metaData"]["dimensions"]["pe"]
    assert pe[0] == "202503" and pe[-1] == "202602" and len(pe) == 12
    r = analytics(client, f"dx:{DE_CASES}", "pe:LAST_5_YEARS;THIS_MONTH", "ou:LEVEL-2",
                  relativePeriodDate="2026-03-15")
    assert r.json()["metaData"]["dimensions"]["pe"] == ["2021", "2022", "2023", "2024", "2025", "202603"]
    r = analytics(client, f"dx:{DE_CASES}", "pe:LAST_4_QUARTERS", "ou:LEVEL-2", relativePeriodDate="2026-03-15")
    assert r.json()["metaData"]["dimensions"]["pe"] == ["2025Q1", "2025Q2", "2025Q3", "2025Q4"]


def test_analytics_freshness_and_temperature_lag(client, sb):
    w = sb.world
    r = analytics(client, f"dx:{DE_CASES};{DE_RAIN};{DE_TEMP};{DE_POP}", "pe:LAST_12_MONTHS", "ou:LEVEL-2")
    latest: dict[str, str] = {}
    for dx, pe, _ou, _v in r.json()["rows"]:
        latest[dx] = max(latest.get(dx, ""), pe)
    assert latest[DE_CASES] == latest[DE_RAIN] == P.format_id("month", w.last_month)
    assert latest[DE_TEMP] == P.format_id("month", w.last_month - 2)
    assert latest[DE_POP] == P.format_id("month", w.last_month)
    # weekly: temperature lags one week
    r = analytics(client, f"dx:{DE_CASES_WEEKLY};{DE_TEMP_WEEKLY}", "pe:LAST_4_WEEKS", "ou:LEVEL-2")
    per = {}
    for dx, pe, _ou, _v in r.json()["rows"]:
        per.setdefault(dx, set()).add(pe)
    assert len(per[DE_CASES_WEEKLY]) == 4 and len(per[DE_TEMP_WEEKLY]) == 3


def test_analytics_weekly_ids_unpadded_and_padded_input(client, sb):
    year = sb.world.today.year - 1
    r = analytics(client, f"dx:{DE_CASES_WEEKLY}", f"pe:{year}W03;{year}W4;{year}W10", "ou:LEVEL-2")
    body = r.json()
    assert body["metaData"]["dimensions"]["pe"] == [f"{year}W3", f"{year}W4", f"{year}W10"]
    assert {row[1] for row in body["rows"]} == {f"{year}W3", f"{year}W4", f"{year}W10"}
    assert f"{year}W3" in body["metaData"]["items"]


def test_analytics_errors_and_dropping(client):
    r = analytics(client, "dx:nosuchthing", "pe:LAST_12_MONTHS", "ou:LEVEL-2")
    assert r.status_code == 409
    assert r.json()["errorCode"] == "E7124" and r.json()["httpStatus"] == "Conflict"
    r = analytics(client, f"dx:{DE_CASES}", "pe:LAST_24_MONTHS", "ou:LEVEL-2")
    assert r.status_code == 409 and r.json()["errorCode"] == "E7124"
    r = analytics(client, f"dx:{DE_CASES}", f"dx:{DE_RAIN}", "pe:LAST_12_MONTHS", "ou:LEVEL-2")
    assert r.status_code == 409 and r.json()["errorCode"] == "E7111"
    r = analytics(client, f"dx:{DE_CASES};bogusbogus1", "pe:LAST_12_MONTHS;NOT_A_PERIOD", "ou:LEVEL-2;nope")
    assert r.status_code == 200
    assert r.json()["metaData"]["dimensions"]["dx"] == [DE_CASES]
    assert len(r.json()["metaData"]["dimensions"]["pe"]) == 12


def test_analytics_comma_joined_skipmeta_and_root(client, sb):
    ou = sb.world.ou_ids[0]
    r = client.get("/api/analytics", params={"dimension": f"dx:{DE_CASES},pe:LAST_3_MONTHS,ou:{ROOT_OU};{ou}",
                                             "skipMeta": "true"})
    body = r.json()
    assert "metaData" not in body
    rows = body["rows"]
    assert {row[2] for row in rows} == {ROOT_OU, ou}
    root = {row[1]: int(row[3]) for row in rows if row[2] == ROOT_OU}
    one = {row[1]: int(row[3]) for row in rows if row[2] == ou}
    assert all(root[p] > one[p] for p in one)


def test_analytics_gappy_rainfall_and_holes(client, sb):
    w = sb.world
    gap = P.format_id("month", w.last_month - 4)
    r = analytics(client, f"dx:{DE_RAIN_GAPPY}", "pe:LAST_12_MONTHS", "ou:LEVEL-2")
    pes = [row[1] for row in r.json()["rows"]]
    assert gap not in pes and len(pes) == 11 * w.n
    # ~1% holes in the first half, none in the last 24 months
    months = ";".join(P.format_id("month", i) for i in range(w.first_month, w.last_month + 1))
    r = analytics(client, f"dx:{DE_RAIN}", "pe:" + months, "ou:LEVEL-2")
    have = {(row[1], row[2]) for row in r.json()["rows"]}
    missing = [(p, o) for i in range(w.first_month, w.last_month + 1) for o in w.ou_ids
               if (p := P.format_id("month", i), o) not in have]
    assert missing, "expected a few holes"
    assert all(P.parse(p)[1] < w.last_month - 23 for p, _ in missing)
    assert len(missing) < 0.05 * w.n * w.months


def test_analytics_is_deterministic():
    with Sandbox(SandboxConfig(seed=11)) as a, Sandbox(SandboxConfig(seed=11)) as b:
        ra = httpx.get(f"{a.base_url}/api/analytics?dimension=dx:{DE_RAIN}&dimension=pe:LAST_12_MONTHS"
                       f"&dimension=ou:LEVEL-2", auth=AUTH).json()["rows"]
        rb = httpx.get(f"{b.base_url}/api/analytics?dimension=dx:{DE_RAIN}&dimension=pe:LAST_12_MONTHS"
                       f"&dimension=ou:LEVEL-2", auth=AUTH).json()["rows"]
        assert ra == rb and a.world.ou_ids == b.world.ou_ids


# ---------------------------------------------------------------------------------------------
# org units
# ---------------------------------------------------------------------------------------------
def test_org_units_fields_filters_and_geometry(client, sb):
    w = sb.world
    r = client.get("/api/organisationUnits", params={
        "filter": "level:eq:2", "fields": "id,name,displayName,code,level,path,parent[id],geometry",
        "paging": "false"})
    body = r.json()
    assert list(body) == ["organisationUnits"]
    units = body["organisationUnits"]
    assert len(units) == w.n
    assert all(set(u) <= {"id", "name", "displayName", "code", "level", "path", "parent", "geometry"} for u in units)
    assert all(u["parent"] == {"id": ROOT_OU} and u["level"] == 2 for u in units)
    assert all(u["path"] == f"/{ROOT_OU}/{u['id']}" for u in units)
    without = [u["id"] for u in units if "geometry" not in u]
    assert without == [w.no_geometry_ou]
    types = {u["geometry"]["type"] for u in units if "geometry" in u}
    assert types == {"Polygon", "MultiPolygon"}
    poly = next(u for u in units if "geometry" in u and u["geometry"]["type"] == "Polygon")
    lon, lat = poly["geometry"]["coordinates"][0][0]
    assert 30 <= lon <= 38 and -5 <= lat <= 4
    assert all(len(u["id"]) == 11 and u["id"][0].isalpha() for u in units)

    some = w.ou_ids[:3]
    r = client.get("/api/organisationUnits", params={"filter": f"id:in:[{','.join(some)}]", "paging": "false",
                                                      "fields": "id,displayName"})
    assert [u["id"] for u in r.json()["organisationUnits"]] == some
    assert set(r.json()["organisationUnits"][0]) == {"id", "displayName"}

    r = client.get("/api/organisationUnits", params={"pageSize": 5})
    body = r.json()
    assert body["pager"] == {"page": 1, "pageCount": 3, "total": w.n + 1, "pageSize": 5,
                             "nextPage": f"{sb.base_url}/api/organisationUnits?page=2"}
    assert set(body["organisationUnits"][0]) == {"id", "displayName"}


def test_org_unit_by_id_and_404(client, sb):
    u = client.get(f"/api/organisationUnits/{sb.world.ou_ids[1]}").json()
    assert u["level"] == 2 and "geometry" in u
    r = client.get("/api/organisationUnits/abcdefghijk")
    assert r.status_code == 404
    assert r.json() == {"httpStatus": "Not Found", "httpStatusCode": 404, "status": "ERROR",
                        "message": "OrganisationUnit with id abcdefghijk could not be found.", "errorCode": "E1005"}
    root = client.get(f"/api/organisationUnits/{ROOT_OU}", params={"fields": "id,name,level"}).json()
    assert root == {"id": ROOT_OU, "name": "Sandboxia", "level": 1}
    gj = client.get("/api/organisationUnits.geojson", params={"level": 2}).json()
    assert len(gj["features"]) == sb.world.n - 1 and gj["features"][0]["properties"]["level"] == "2"


# ---------------------------------------------------------------------------------------------
# route
# ---------------------------------------------------------------------------------------------
def test_route_listing_unknown_route_and_error_relay(client):
    r = client.get("/api/routes", params={"filter": "code:eq:chap", "fields": "id,code,name,url,disabled",
                                          "paging": "false"})
    assert r.json()["routes"][0]["code"] == "chap" and r.json()["routes"][0]["disabled"] is False
    assert client.get("/api/routes", params={"filter": "code:eq:other", "paging": "false"}).json() == {"routes": []}
    r = client.get("/api/routes/nochap/run/system/info")
    assert r.status_code == 404 and r.json()["message"] == "Route nochap not found"
    r = client.get(f"{ROUTE}/v1/crud/prediction-setups/999")
    assert r.status_code == 404 and r.json() == {"detail": "PredictionSetup 999 not found"}
    r = client.get(f"{ROUTE}/v1/jobs/not-a-job")
    assert r.status_code == 404 and r.json() == {"detail": "Job 'not-a-job' not found"}
    r = client.get(f"{ROUTE}/v1/analytics/prediction-entry/1")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "quantiles"]
    assert client.get(f"{ROUTE}/health").json() == {"status": "success", "message": "healthy"}
    assert client.get(f"{ROUTE}/health/ready").json()["checks"]["celery"] == "ok"


# ---------------------------------------------------------------------------------------------
# chap stand-in: setups and validation
# ---------------------------------------------------------------------------------------------
def test_chap_system_info_and_setups(client, sb):
    info = client.get(f"{ROUTE}/system/info").json()
    assert info["chap_core_version"] == "2.5.1" and info["auth_required"] is False
    assert {"python_version", "server_date", "server_time_zone_id", "revision"} <= set(info)
    setups = client.get(f"{ROUTE}/v1/crud/prediction-setups").json()
    assert [s["id"] for s in setups][:4] == [1, 2, 3, 4]
    s1, s2, s3, s4 = setups[:4]
    assert s1["periodType"] == "month" and s1["scheduleEnabled"] is True and s1["scheduleCronExpression"] == "0 6 * * 1"
    assert {c["covariate"]: c["dataElementId"] for c in s1["covariateSources"]} == {
        "disease_cases": DE_CASES, "rainfall": DE_RAIN, "mean_temperature": DE_TEMP, "population": DE_POP}
    assert s1["orgUnits"] == sb.world.ou_ids and sb.world.no_geometry_ou in s1["orgUnits"]
    assert s1["startPeriod"] == P.format_id("month", sb.world.last_month - 59)
    assert [t["quantile"] for t in s1["quantileTargets"]] == ["0.1", "0.5", "0.9"]
    assert [t["quantile"] for t in s2["quantileTargets"]] == ["quantile_low", "median", "quantile_high"]
    assert s1["configuredModel"]["modelTemplate"]["target"] == "disease_cases"
    assert s1["alertPolicy"] is None and isinstance(s1["backtestId"], int)
    assert s2["periodType"] == "week" and s2["scheduleEnabled"] is False and s2["scheduleCronExpression"] is None
    assert len(s2["startPeriod"].split("W")[1]) == 2  # zero-padded like real chap
    assert any(c["dataElementId"] == DE_RAIN_GAPPY for c in s3["covariateSources"])
    assert s4["periodType"] == "year" and s4["scheduleCronExpression"] == "0 5 1 1 *"
    one = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    assert one["id"] == 1 and "predictions" in one
    assert client.get(f"{ROUTE}/v1/crud/backtests/{s1['backtestId']}").json()["nPeriods"] == 3
    assert client.get(f"{ROUTE}/v1/crud/model-templates").json()[0]["name"] == "naive_model"


def test_chap_422_branches(client, sb):
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    good = run_body(client, sb, setup, last_n=30)
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=good | {"dataSources": [], "nPeriods": 0})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert {"type": "extra_forbidden", "loc": ["body", "dataSources"], "msg": "Extra inputs are not permitted",
            "input": []} in detail
    assert {"type": "greater_than", "loc": ["body", "nPeriods"], "msg": "Input should be greater than 0",
            "input": 0, "ctx": {"gt": 0}} in detail
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json={"name": "x", "providedData": []})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "missing"
    assert r.json()["detail"][0]["loc"] == ["body", "geojson"]
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=good | {"providedData": []})
    assert r.status_code == 422 and r.json() == {"detail": "provided_data cannot be empty"}
    no_target = [o for o in good["providedData"] if o["featureName"] != "disease_cases"]
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=good | {"providedData": no_target})
    assert r.status_code == 422 and r.json() == {"detail": "Dataset has no target column 'disease_cases'"}
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/99/run", json=good)
    assert r.status_code == 404 and r.json() == {"detail": "PredictionSetup 99 not found"}


def test_chap_400_all_regions_rejected(client, sb):
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/3").json()
    body = run_body(client, sb, setup, last_n=30)
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/3/run", json=body)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail["message"] == "All regions rejected due to missing values" and detail["imported_count"] == 0
    gap = P.format_id("month", sb.world.last_month - 4)
    assert len(detail["rejected"]) == sb.world.n
    assert {row["orgUnit"] for row in detail["rejected"]} == set(sb.world.ou_ids)
    for row in detail["rejected"]:
        assert row == {"reason": "Missing value for some/all time periods", "orgUnit": row["orgUnit"],
                       "featureName": "rainfall", "timePeriods": [gap]}


@pytest.fixture
def slow_jobs():
    """A sandbox whose jobs take long enough that PENDING and STARTED are always observed."""
    with Sandbox(SandboxConfig(job_seconds=1.2)) as s, httpx.Client(base_url=s.base_url, auth=AUTH) as c:
        yield s, c


def test_chap_partial_rejection_then_lifecycle_and_results(slow_jobs):
    sb, client = slow_jobs
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    body = run_body(client, sb, setup, last_n=36)
    victim = sb.world.ou_ids[0] if sb.world.ou_ids[0] != sb.world.no_geometry_ou else sb.world.ou_ids[1]
    drop_period = body["providedData"][0]["period"]
    body["providedData"] = [
        o | {"value": None} if (o["orgUnit"] == victim and o["featureName"] == "rainfall"
                                and o["period"] == drop_period) else o
        for o in body["providedData"]
    ]
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    assert len(job_id) == 36
    first = client.get(f"{ROUTE}/v1/jobs/{job_id}").json()
    assert first == "PENDING"
    r = client.get(f"{ROUTE}/v1/jobs/{job_id}/prediction_result")
    assert r.status_code == 400 and r.json() == {"detail": "Job is still running, try again later"}
    seen = wait_terminal(client, job_id)
    assert seen == ["PENDING", "STARTED", "SUCCESS"]
    row = client.get(f"{ROUTE}/v1/jobs", params={"ids": [job_id, "other"]}).json()
    assert len(row) == 1 and row[0]["status"] == "SUCCESS" and row[0]["type"] == "create_prediction"
    assert row[0]["prediction_setup_id"] == 1 and row[0]["end_time"] and row[0]["start_time"]
    pred_id = row[0]["result"]
    assert isinstance(pred_id, str) and pred_id.isdigit()
    info = client.get(f"{ROUTE}/v1/jobs/{job_id}/prediction_result").json()
    assert str(info["id"]) == pred_id and info["predictionSetupId"] == 1 and info["nPeriods"] == 3
    expected = [o for o in sb.world.ou_ids if o not in (victim, sb.world.no_geometry_ou)]
    assert info["orgUnits"] == expected
    assert client.get(f"{ROUTE}/v1/crud/predictions/{pred_id}").json()["id"] == info["id"]
    entries = client.get(f"{ROUTE}/v1/analytics/prediction-entry/{pred_id}",
                         params={"quantiles": [0.1, 0.5, 0.9]}).json()
    assert len(entries) == len(expected) * 3 * 3
    nxt = [P.format_id("month", sb.world.last_month - 2 + k) for k in (1, 2, 3)]
    assert sorted({e["period"] for e in entries}) == nxt
    e = [x for x in entries if x["orgUnit"] == expected[0] and x["period"] == nxt[0]]
    assert [x["quantile"] for x in e] == [0.1, 0.5, 0.9] and e[0]["value"] < e[1]["value"] < e[2]["value"]
    r = client.get(f"{ROUTE}/v1/analytics/prediction-entry/987654", params={"quantiles": 0.5})
    assert r.status_code == 404 and r.json() == {"detail": "Prediction not found"}
    # filters on the job list
    assert client.get(f"{ROUTE}/v1/jobs", params={"status": "success", "predictionSetupId": 1}).json()
    assert client.get(f"{ROUTE}/v1/jobs", params={"predictionSetupId": 4, "ids": job_id}).json() == []


def test_chap_weekly_and_yearly_runs(client, sb):
    weekly = client.get(f"{ROUTE}/v1/crud/prediction-setups/2").json()
    body = run_body(client, sb, weekly, last_n=110, n_periods=2)
    job = client.post(f"{ROUTE}/v1/crud/prediction-setups/2/run", json=body).json()["id"]
    yearly = client.get(f"{ROUTE}/v1/crud/prediction-setups/4").json()
    body = run_body(client, sb, yearly, last_n=10, n_periods=1)
    assert {o["period"] for o in body["providedData"]} >= {str(sb.world.today.year - 1)}
    job_y = client.post(f"{ROUTE}/v1/crud/prediction-setups/4/run", json=body).json()["id"]
    assert wait_terminal(client, job)[-1] == "SUCCESS"
    assert wait_terminal(client, job_y)[-1] == "SUCCESS"
    pid_y = client.get(f"{ROUTE}/v1/jobs/{job_y}/prediction_result").json()["id"]
    assert {e["period"] for e in client.get(f"{ROUTE}/v1/analytics/prediction-entry/{pid_y}",
                                            params={"quantiles": 0.5}).json()} == {str(sb.world.today.year)}
    pid = client.get(f"{ROUTE}/v1/jobs/{job}/prediction_result").json()["id"]
    periods = {e["period"] for e in client.get(f"{ROUTE}/v1/analytics/prediction-entry/{pid}",
                                               params={"quantiles": 0.5}).json()}
    expect = {P.format_id("week", sb.world.last_week - 1 + k, pad=True) for k in (1, 2)}
    assert periods == expect and all(len(p.split("W")[1]) == 2 for p in periods)


def test_chap_failure_branches(client, sb):
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    short = run_body(client, sb, setup, last_n=24)
    job = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=short).json()["id"]
    assert wait_terminal(client, job)[-1] == "FAILURE"
    row = client.get(f"{ROUTE}/v1/jobs", params={"ids": job}).json()[0]
    assert row["error"] == "Training data must cover at least two whole years" and row["result"] is None
    r = client.get(f"{ROUTE}/v1/jobs/{job}/prediction_result")
    assert r.status_code == 500
    assert r.json() == {"detail": "Internal server error",
                        "error": "(psycopg2.ProgrammingError) can't adapt type 'ValueError'",
                        "type": "ProgrammingError"}
    nogeo = run_body(client, sb, setup, last_n=30) | {"geojson": {"type": "FeatureCollection", "features": []}}
    job = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=nogeo).json()["id"]
    assert wait_terminal(client, job)[-1] == "FAILURE"
    assert client.get(f"{ROUTE}/v1/jobs", params={"ids": job}).json()[0]["error"] == "No data in dataset DataSet({})"


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------
def test_faults_fail_next_and_html_next(client, sb):
    sb.faults.fail_next = 2
    r1, r2, r3 = (client.get("/api/system/info") for _ in range(3))
    assert r1.status_code == r2.status_code == 503 and "text/html" in r1.headers["content-type"]
    assert r3.status_code == 200
    httpx.post(f"{sb.base_url}/__sandbox/faults", json={"html_next": 1})
    r = client.get("/api/system/info")
    assert r.status_code == 200 and r.text.startswith("<!DOCTYPE html><html>") and "DHIS2 login" in r.text
    assert client.get("/api/system/info").json()["version"]


def test_faults_over_http_slow_route_down_and_reset(client, sb):
    r = httpx.post(f"{sb.base_url}/__sandbox/faults", json={"slow_seconds": 0.2, "route_down": True})
    assert r.json()["slow_seconds"] == 0.2 and r.json()["route_down"] is True
    assert httpx.get(f"{sb.base_url}/__sandbox/faults").json()["route_down"] is True
    t0 = time.monotonic()
    r = client.get(f"{ROUTE}/system/info")
    assert time.monotonic() - t0 >= 0.2
    assert r.status_code == 502 and r.json()["message"] == "Bad Gateway"
    assert httpx.post(f"{sb.base_url}/__sandbox/faults", json={"bogus": 1}).status_code == 400
    httpx.post(f"{sb.base_url}/__sandbox/reset")
    assert sb.faults.slow_seconds == 0 and sb.faults.route_down is False
    assert client.get(f"{ROUTE}/system/info").status_code == 200


def test_fault_chap_job_fail_and_hang(client, sb):
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    body = run_body(client, sb, setup, last_n=30)
    sb.faults.chap_job = "fail"
    job = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=body).json()["id"]
    assert wait_terminal(client, job)[-1] == "FAILURE"
    assert client.get(f"{ROUTE}/v1/jobs", params={"ids": job}).json()[0]["error"]
    sb.faults.chap_job = "hang"
    job = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", json=body).json()["id"]
    seen = wait_terminal(client, job, timeout=sb.config.job_seconds * 3)
    assert seen[-1] == "STARTED"
    assert client.get(f"{ROUTE}/v1/jobs/{job}/prediction_result").status_code == 400


def test_setups_added_and_removed(client, sb):
    s = sb.chap.add_setup(name="Added from Python")
    ids = [x["id"] for x in client.get(f"{ROUTE}/v1/crud/prediction-setups").json()]
    assert s["id"] in ids and s["id"] > 5
    assert sb.chap.remove_setup(s["id"])
    r = httpx.post(f"{sb.base_url}/__sandbox/chap-setups", json={"name": "Added over HTTP", "periodType": "month"})
    assert r.status_code == 201
    new_id = r.json()["id"]
    assert client.get(f"{ROUTE}/v1/crud/prediction-setups/{new_id}").json()["name"] == "Added over HTTP"
    assert httpx.delete(f"{sb.base_url}/__sandbox/chap-setups/{new_id}").status_code == 200
    assert client.get(f"{ROUTE}/v1/crud/prediction-setups/{new_id}").status_code == 404
    assert [x["id"] for x in httpx.get(f"{sb.base_url}/__sandbox/chap/v1/crud/prediction-setups").json()] == [
        1, 2, 3, 4, 5]


def test_requests_log_and_chunked_upload(client, sb):
    n = len(sb.requests)
    client.get("/api/system/info", params={"x": "1"})
    assert sb.requests[n] == ("GET", "/api/system/info?x=1", 0)
    setup = client.get(f"{ROUTE}/v1/crud/prediction-setups/1").json()
    payload = json.dumps(run_body(client, sb, setup, last_n=30)).encode()

    def gen():
        for i in range(0, len(payload), 7000):
            yield payload[i:i + 7000]

    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", content=gen(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert sb.requests[-1][0] == "POST" and sb.requests[-1][2] == len(payload)


# ---------------------------------------------------------------------------------------------
# legacy chap API and forwarding
# ---------------------------------------------------------------------------------------------
def test_legacy_chap_api():
    with Sandbox(SandboxConfig(chap_api="legacy", job_seconds=0.1)) as sb, \
            httpx.Client(base_url=sb.base_url, auth=AUTH) as client:
        r = client.get(f"{ROUTE}/v1/crud/prediction-setups")
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
        items = client.get(f"{ROUTE}/v1/crud/configured-models-with-data-source").json()
        assert [i["id"] for i in items] == [1, 2, 3, 4, 5]
        assert "dataSources" in items[0] and "covariateSources" not in items[0]
        assert "scheduleEnabled" not in items[0]
        assert client.get(f"{ROUTE}/v1/crud/configured-models-with-data-source/2").json()["periodType"] == "week"
        setup = sb.chap.setups[1]
        body = run_body(client, sb, setup, last_n=30) | {
            "dataSources": items[0]["dataSources"], "dataToBeFetched": [], "configuredModelWithDataSourceId": 1}
        r = client.post(f"{ROUTE}/v1/analytics/make-prediction-with-data-source", json=body)
        assert r.status_code == 200, r.text
        assert wait_terminal(client, r.json()["id"])[-1] == "SUCCESS"
        body.pop("configuredModelWithDataSourceId")
        r = client.post(f"{ROUTE}/v1/analytics/make-prediction-with-data-source", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "configuredModelWithDataSourceId"]


class _FakeChap(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/v1/teapot"):
            out, status, ctype = b'{"detail":"I am a teapot"}', 418, "application/json"
        elif self.path.startswith("/plain"):
            out, status, ctype = b"plain text", 200, "text/plain"
        else:
            out = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                              "user": self.headers.get("X-Forwarded-User"),
                              "auth": self.headers.get("Authorization")}).encode()
            status, ctype = 200, "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any


def test_forwarding_to_real_chap_url():
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChap)
    t = threading.Thread(target=fake.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{fake.server_address[1]}"
        with Sandbox(SandboxConfig(chap_url=url)) as sb, httpx.Client(base_url=sb.base_url, auth=AUTH) as client:
            r = client.get(f"{ROUTE}/v1/analytics/prediction-entry/5?quantiles=0.1&quantiles=0.5")
            echo = r.json()
            assert echo["path"] == "/v1/analytics/prediction-entry/5?quantiles=0.1&quantiles=0.5"
            assert echo["user"] == "admin" and echo["auth"] is None
            r = client.patch(f"{ROUTE}/v1/x", json={"a": 1})
            assert r.json()["method"] == "PATCH" and json.loads(r.json()["body"]) == {"a": 1}
            for method in ("PUT", "DELETE", "POST"):
                assert client.request(method, f"{ROUTE}/v1/y").json()["method"] == method
            r = client.get(f"{ROUTE}/v1/teapot")
            assert r.status_code == 418 and r.json() == {"detail": "I am a teapot"}
            r = client.get(f"{ROUTE}/plain")
            assert r.text == "plain text" and r.headers["content-type"].startswith("text/plain")
            # the built-in stand-in stays reachable directly
            assert httpx.get(f"{sb.base_url}/__sandbox/chap/v1/crud/prediction-setups").json()[0]["id"] == 1
            assert url in client.get("/api/routes", params={"paging": "false", "fields": "id,url"}).json()["routes"][0]["url"]
    finally:
        fake.shutdown()
        fake.server_close()
    with Sandbox(SandboxConfig(chap_url=url)) as sb:  # nothing listens there any more
        r = httpx.get(f"{sb.base_url}{ROUTE}/system/info", auth=AUTH)
        assert r.status_code == 502


# ---------------------------------------------------------------------------------------------
# lifecycle and CLI
# ---------------------------------------------------------------------------------------------
def test_start_stop_releases_port():
    sb = Sandbox(SandboxConfig())
    sb.start()
    port = sb.port
    assert port != 0 and sb.base_url == f"http://127.0.0.1:{port}"
    with httpx.Client(auth=AUTH) as c:  # keep-alive connection open while stopping
        assert c.get(f"{sb.base_url}/api/system/ping").status_code == 200
        sb.stop()
        assert sb._thread is None
        with pytest.raises(httpx.TransportError):  # the kept-alive connection was closed too
            c.get(f"{sb.base_url}/api/system/ping")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sb.base_url}/api/system/ping")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_starts_and_stops_on_signal(sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dhis2_sandbox", "--port", "0", "--org-units", "5", "--months", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("DHIS2 sandbox listening on http://127.0.0.1:")
        assert line.endswith("(user admin / password district)")
        base = line.split(" on ")[1].split(" ")[0]
        assert httpx.get(f"{base}/api/system/info", auth=AUTH).json()["version"] == "2.41.4"
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# smaller contract points
# ---------------------------------------------------------------------------------------------
def test_world_constants_and_scale():
    from dhis2_sandbox import world as W

    ids = [W.DE_CASES, W.DE_RAIN, W.DE_TEMP, W.DE_POP, W.DE_CASES_WEEKLY, W.DE_RAIN_WEEKLY, W.DE_TEMP_WEEKLY,
           W.DE_RAIN_GAPPY, W.ROOT_OU]
    assert all(len(i) == 11 and i[0].isalpha() and i.isalnum() for i in ids) and len(set(ids)) == len(ids)
    big = W.World(org_units=2000, months=60, seed=3)
    assert sum(big.geometry(i) is None for i in range(big.n)) == 1
    assert len(set(big.ou_ids)) == 2000 and len(set(big.ou_names)) == 2000
    assert big.last_month - big.first_month + 1 == 60


def test_data_elements_paging_and_world_endpoint(client, sb):
    r = client.get("/api/dataElements", params={"filter": f"id:in:[{DE_CASES},{DE_RAIN}]", "paging": "false",
                                                "fields": "id,name,valueType,periodType"})
    des = r.json()["dataElements"]
    assert [d["id"] for d in des] == [DE_CASES, DE_RAIN] and des[0]["valueType"] == "INTEGER"
    r = client.get("/api/organisationUnits", params={"pageSize": 5, "page": 3, "fields": "id"})
    assert r.json()["pager"]["page"] == 3 and "nextPage" not in r.json()["pager"]
    assert len(r.json()["organisationUnits"]) == (sb.world.n + 1) - 10
    w = httpx.get(f"{sb.base_url}/__sandbox/world").json()
    assert w["noGeometryOrgUnit"] == sb.world.no_geometry_ou and w["root"] == ROOT_OU
    r = client.post("/api/analytics")
    assert r.status_code == 405


def test_chap_invalid_json_and_method_mismatch(client):
    r = client.post(f"{ROUTE}/v1/crud/prediction-setups/1/run", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.get(f"{ROUTE}/v1/no/such/path")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_max_url_length_emulates_a_proxy_limit():
    with Sandbox(SandboxConfig(max_url_length=200)) as sb:
        ok = httpx.get(f"{sb.base_url}/api/system/info", auth=AUTH)
        assert ok.status_code == 200
        long = httpx.get(f"{sb.base_url}/api/organisationUnits",
                         params={"filter": "id:in:[" + ",".join(sb.world.ou_ids) + "]"}, auth=AUTH)
        assert long.status_code == 414
        assert sb.requests[-1][1].startswith("/api/organisationUnits?filter=") and len(sb.requests[-1][1]) > 200


def test_analytics_filters_aggregate_away(client, sb):
    a, b = sb.world.ou_ids[:2]
    r = client.get("/api/analytics", params=[("dimension", f"dx:{DE_CASES};{DE_TEMP}"),
                                             ("dimension", "pe:LAST_12_MONTHS"), ("filter", f"ou:{a};{b}"),
                                             ("skipMeta", "true")])
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["name"] for h in body["headers"]] == ["dx", "pe", "value"]
    latest = {}
    for dx, pe, _v in body["rows"]:
        latest[dx] = max(latest.get(dx, ""), pe)
    assert latest[DE_TEMP] == P.format_id("month", sb.world.last_month - 2)
    per_ou = analytics(client, f"dx:{DE_CASES}", "pe:LAST_12_MONTHS", f"ou:{a};{b}").json()["rows"]
    total = {}
    for _dx, pe, _ou, v in per_ou:
        total[pe] = total.get(pe, 0) + int(v)
    assert {pe: int(v) for dx, pe, v in body["rows"] if dx == DE_CASES} == total
    # a period filter: one value per org unit over the whole window
    r = client.get("/api/analytics", params=[("dimension", f"ou:{a}"), ("dimension", f"dx:{DE_CASES}"),
                                             ("filter", "pe:LAST_12_MONTHS")])
    assert [h["name"] for h in r.json()["headers"]] == ["ou", "dx", "value"]
    assert r.json()["rows"] == [[a, DE_CASES, str(sum(v for (pe, v) in total.items()) - sum(
        int(x[3]) for x in per_ou if x[2] == b))]]
    assert set(r.json()["metaData"]["dimensions"]) >= {"dx", "pe", "ou"}
    r = client.get("/api/analytics", params=[("dimension", f"dx:{DE_CASES}"), ("dimension", "pe:LAST_12_MONTHS"),
                                             ("dimension", f"ou:{a}"), ("filter", f"ou:{b}")])
    assert r.status_code == 409 and r.json()["errorCode"] == "E7103"


def test_importing_geometry_gives_the_org_unit_without_one_its_boundary(client, sb):
    ou = sb.world.no_geometry_ou
    assert "geometry" not in client.get(f"/api/organisationUnits/{ou}").json()
    sb.world.import_geometry(ou)
    assert client.get(f"/api/organisationUnits/{ou}").json()["geometry"]["type"] in ("Polygon", "MultiPolygon")
