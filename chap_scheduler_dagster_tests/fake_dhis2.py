"""A respx-backed DHIS2 with chap behind its route, small and controllable, for job tests.

It answers from a tiny world (a few org units, one configured model) and lets a test
switch on one failure at a time. Analytics answers are computed from the request's own
dx/pe/ou parameters, like DHIS2 does, with weekly ids unpadded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date

import httpx
import respx

from chap_scheduler_dagster.core.periods import PeriodType, covering, parse_period, probe_keyword_periods

BASE = "http://dhis2.test"
ROUTE = BASE + "/api/routes/chap/run"
USER, PASSWORD = "admin", "district-secret"

DE = {"disease_cases": "DeCases0001", "rainfall": "DeRain00001", "mean_temperature": "DeTemp00001"}
ORG_UNITS = ["OuDistrict1", "OuDistrict2", "OuDistrict3"]
NO_GEOMETRY = "OuNoGeom001"


def square(i: int) -> dict:
    x = float(i)
    return {"type": "Polygon", "coordinates": [[[x, 0.0], [x + 1, 0.0], [x + 1, 1.0], [x, 1.0], [x, 0.0]]]}


@dataclass
class FakeDhis2:
    period_type: PeriodType = PeriodType.MONTH
    start_period: str = "202001"
    today: date = field(default_factory=date.today)
    lag: dict[str, int] = field(default_factory=lambda: {"mean_temperature": 1})
    setup_id: int = 7
    # failure switches
    dhis2_down: bool = False
    wrong_password: bool = False
    login_page: bool = False
    chap_down: bool = False
    reject_all: bool = False
    drop_org_unit: str | None = None
    job_outcome: str = "SUCCESS"  # or FAILURE or HANG
    # observations
    posted_bodies: list[bytes] = field(default_factory=list)
    post_calls: int = 0

    def __post_init__(self) -> None:
        self._jobs: dict[str, dict] = {}
        self._polls: dict[str, int] = {}
        self._ids = itertools.count(1)

    # ---- world ----
    def latest(self, covariate: str):
        last_complete = covering(self.today, self.period_type).shift(-1)
        return last_complete.shift(-self.lag.get(covariate, 0))

    def value(self, covariate: str, ou: str, period) -> str | None:
        if period > self.latest(covariate) or period < parse_period(self.start_period, self.period_type).shift(-5):
            return None
        return str(10 + (hash((covariate, ou, period.id)) % 90))

    def setup(self) -> dict:
        return {
            "id": self.setup_id,
            "name": "Test district model",
            "configuredModel": {"id": 3, "name": "naive_model", "modelTemplate": {"name": "naive", "displayName": "Naive"}},
            "startPeriod": parse_period(self.start_period, self.period_type).chap_id,
            "orgUnits": ORG_UNITS + [NO_GEOMETRY],
            "covariateSources": [{"covariate": c, "dataElementId": d} for c, d in DE.items()],
            "periodType": self.period_type.value,
            "scheduleCronExpression": "0 6 * * 1",
            "scheduleEnabled": True,
            "quantileTargets": [],
        }

    # ---- routes ----
    def install(self, router: respx.Router) -> respx.Router:
        router.route(host="dhis2.test").mock(side_effect=self._dispatch)
        return router

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if self.dhis2_down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        auth = request.headers.get("authorization", "")
        if self.login_page:
            return httpx.Response(200, text="<!DOCTYPE html><html><body>DHIS2 login</body></html>")
        if self.wrong_password or auth != httpx.BasicAuth(USER, PASSWORD)._auth_header:
            return httpx.Response(
                401, json={"httpStatus": "Unauthorized", "httpStatusCode": 401, "status": "ERROR", "message": "Unauthorized"}
            )
        path = request.url.path
        if path == "/api/system/info":
            return httpx.Response(200, json={"version": "2.41.4", "serverDate": "2026-11-22T10:00:00.000", "systemName": "Fake"})
        if path == "/api/analytics":
            return self._analytics(request)
        if path == "/api/organisationUnits":
            return self._org_units(request)
        if path.startswith("/api/routes/chap/run"):
            if self.chap_down:
                return httpx.Response(
                    502, json={"httpStatus": "Bad Gateway", "httpStatusCode": 502, "status": "ERROR", "message": "Bad Gateway"}
                )
            return self._chap(request, path.removeprefix("/api/routes/chap/run"))
        return httpx.Response(404, json={"httpStatusCode": 404, "message": "not found"})

    def _analytics(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        dims = dict(d.split(":", 1) for d in params.get_list("dimension"))
        filters = dict(f.split(":", 1) for f in params.get_list("filter"))
        data_elements = dims["dx"].split(";")
        ou_items = (dims.get("ou") or filters["ou"]).split(";")
        pe = dims["pe"]
        if pe.startswith("LAST_"):
            periods = probe_keyword_periods(self.today, self.period_type)
        else:
            periods = [parse_period(p) for p in pe.split(";")]
        covariate_of = {d: c for c, d in DE.items()}
        rows = []
        for de in data_elements:
            for p in periods:
                values = [(ou, self.value(covariate_of[de], ou, p)) for ou in ou_items]
                values = [(ou, v) for ou, v in values if v is not None]
                if "ou" in filters and values:
                    rows.append([de, p.id, str(sum(float(v) for _, v in values))])
                else:
                    rows += [[de, p.id, ou, v] for ou, v in values]
        names = ["dx", "pe"] + ([] if "ou" in filters else ["ou"]) + ["value"]
        return httpx.Response(200, json={"headers": [{"name": n} for n in names], "rows": rows, "height": len(rows)})

    def _org_units(self, request: httpx.Request) -> httpx.Response:
        flt = request.url.params["filter"]
        ids = flt.removeprefix("id:in:[").removesuffix("]").split(",")
        units = []
        for i, ou in enumerate(ids):
            unit = {"id": ou, "displayName": f"District {ou}", "level": 2, "parent": {"id": "OuCountry01"}}
            if ou != NO_GEOMETRY:
                unit["geometry"] = square(i)
            units.append(unit)
        return httpx.Response(200, json={"organisationUnits": units})

    def _chap(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == "/system/info":
            return httpx.Response(200, json={"chap_core_version": "2.5.1", "python_version": "3.13.0"})
        if path == "/v1/crud/prediction-setups":
            return httpx.Response(200, json=[self.setup()])
        if path == f"/v1/crud/prediction-setups/{self.setup_id}/run" and request.method == "POST":
            self.post_calls += 1
            self.posted_bodies.append(request.read())
            if self.reject_all:
                return httpx.Response(
                    400,
                    json={"detail": {"message": "All regions rejected due to missing values", "imported_count": 0,
                                     "rejected": [{"reason": "Missing value for some/all time periods", "orgUnit": ou,
                                                   "featureName": "rainfall", "timePeriods": ["202406", "202407"]}
                                                  for ou in ORG_UNITS]}},
                )
            job_id = f"job-{next(self._ids)}"
            self._jobs[job_id] = {"id": job_id, "type": "create_prediction", "status": "PENDING"}
            return httpx.Response(200, json={"id": job_id})
        if path == "/v1/jobs":
            ids = request.url.params.get_list("ids")
            return httpx.Response(200, json=[j for j in self._jobs.values() if not ids or j["id"] in ids])
        if path.startswith("/v1/jobs/"):
            job_id, _, rest = path.removeprefix("/v1/jobs/").partition("/")
            job = self._jobs.get(job_id)
            if job is None:
                return httpx.Response(404, json={"detail": f"Job '{job_id}' not found"})
            if not rest:
                self._polls[job_id] = self._polls.get(job_id, 0) + 1
                if self._polls[job_id] >= 2 and self.job_outcome != "HANG":
                    job["status"] = self.job_outcome
                    if self.job_outcome == "SUCCESS":
                        job["result"] = "42"
                    else:
                        job["error"] = "Training data must cover at least two whole years"
                elif self._polls[job_id] == 1:
                    job["status"] = "STARTED"
                return httpx.Response(200, json=job["status"])
            if rest == "prediction_result":
                if job["status"] == "FAILURE":
                    return httpx.Response(500, json={"detail": "Internal server error", "type": "ProgrammingError"})
                surviving = [ou for ou in ORG_UNITS if ou != self.drop_org_unit]
                return httpx.Response(200, json={"id": 42, "nPeriods": 3, "orgUnits": surviving, "name": "p"})
        if path == "/v1/analytics/prediction-entry/42":
            quantiles = [float(q) for q in request.url.params.get_list("quantiles")]
            last = max(parse_period(p) for p in self._posted_periods())
            rows = [
                {"orgUnit": ou, "period": last.shift(k).chap_id, "quantile": q, "value": 5.0 * q}
                for ou in ORG_UNITS if ou != self.drop_org_unit for k in (1, 2, 3) for q in quantiles
            ]
            return httpx.Response(200, json=rows)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _posted_periods(self) -> set[str]:
        import orjson

        body = orjson.loads(self.posted_bodies[-1])
        return {o["period"] for o in body["providedData"]}
