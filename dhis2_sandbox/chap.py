"""A built-in stand-in for chap-core 2.5.1 (prediction setups, jobs, predictions).

It answers chap paths (``/system/info``, ``/v1/...``) with chap's wire shapes and error bodies.
The sandbox serves it behind the DHIS2 route ``/api/routes/chap/run/<path>`` and directly at
``/__sandbox/chap/<path>``.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from . import periods as P
from .analytics import gc_paused
from .world import (
    DE_CASES,
    DE_CASES_WEEKLY,
    DE_POP,
    DE_HUMID,
    DE_PRED_HIGH,
    DE_PRED_LOW,
    DE_PRED_MEDIAN,
    DE_PRED_WEEKLY_HIGH,
    DE_PRED_WEEKLY_LOW,
    DE_PRED_WEEKLY_MEDIAN,
    DE_RAIN,
    DE_RAIN_GAPPY,
    DE_RAIN_WEEKLY,
    DE_TEMP,
    DE_TEMP_WEEKLY,
    World,
)

JSON = "application/json"
TARGET = "disease_cases"
CHAP_VERSION = "2.5.1"
FAILURE_500 = {
    "detail": "Internal server error",
    "error": "(psycopg2.ProgrammingError) can't adapt type 'ValueError'",
    "type": "ProgrammingError",
}
# Minimum number of periods a naive_model run needs ("two whole years"): 104 weeks fail, 105 work.
MIN_PERIODS = {"month": 25, "week": 105, "year": 3}

Response = tuple[int, bytes, str]


def _now_naive() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


def _json(status: int, obj: Any) -> Response:
    return status, orjson.dumps(obj), JSON


def _detail(status: int, detail: Any) -> Response:
    return _json(status, {"detail": detail})


MODEL_TEMPLATE = {
    "id": 1,
    "name": "naive_model",
    "displayName": "Naive model",
    "description": "A naive baseline used for testing (sandbox stand-in).",
    "authorNote": "",
    "authorAssessedStatus": "gray",
    "author": "CHAP team",
    "organization": None,
    "organizationLogoUrl": None,
    "contactEmail": None,
    "citationInfo": None,
    "documentationUrl": None,
    "target": TARGET,
    "requiredCovariates": ["rainfall", "mean_temperature"],
    "supportedPeriodType": "any",
    "minPredictionPeriods": 0,
    "maxPredictionPeriods": 100,
    "userOptions": {},
    "hpoSearchSpace": None,
    "role": None,
    "isLive": True,
    "archived": False,
    "usesChapkit": False,
    "requiresGeo": False,
    "allowFreeAdditionalContinuousCovariates": False,
    "version": "0.1.0",
    "sourceUrl": None,
    "sourceDigest": None,
}

CONFIGURED_MODEL = {
    "id": 1,
    "name": "naive_model",
    "userOptionValues": {},
    "additionalContinuousCovariates": [],
    "configurationDigest": "4f9c2a51d0b8e7a3",
    "modelTemplate": MODEL_TEMPLATE,
}


@dataclass
class Job:
    id: str
    name: str
    t0: float
    start_time: str
    outcome: str  # ok | fail | hang
    error: str | None
    setup_id: int | None
    org_units: list[str] = field(default_factory=list)
    n_periods: int = 3
    ptype: str = "month"
    last_index: int = 0
    first_index: int = 0
    means: dict[str, float] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    prediction_id: int | None = None
    end_time: str | None = None


class ChapStandIn:
    """In-memory chap-core: setups (editable from Python), jobs driven by time and faults."""

    def __init__(self, world: World, job_seconds: float = 0.6, api: str = "prediction-setups", faults=None,
                 weekly_setup_weeks: int = 110):
        self.world = world
        self.job_seconds = job_seconds
        self.setup_job_seconds: dict[int, float] = {}  # per setup id: one slow model among quick ones
        self.api = api
        self.faults = faults
        self.lock = threading.RLock()
        self.setups: dict[int, dict] = {}
        self.jobs: dict[str, Job] = {}
        self.predictions: dict[int, dict] = {}
        self._prediction_entries: dict[int, Job] = {}
        self._next_prediction = 1
        self._weekly_setup_weeks = weekly_setup_weeks
        self._seed_setups()

    # ------------------------------------------------------------------------------------
    # setups
    # ------------------------------------------------------------------------------------
    def _seed_setups(self) -> None:
        w = self.world
        all_ous = list(w.ou_ids)
        m_start = P.format_id("month", max(w.last_month - 59, w.first_month))
        w_start = P.format_id("week", max(w.last_week - self._weekly_setup_weeks + 1, w.first_week), pad=True)
        first_full_year = -(-w.first_month // 12)
        y_start = str(max(w.today.year - 6, first_full_year))
        monthly_sources = [
            {"covariate": "disease_cases", "dataElementId": DE_CASES},
            {"covariate": "rainfall", "dataElementId": DE_RAIN},
            {"covariate": "mean_temperature", "dataElementId": DE_TEMP},
            {"covariate": "population", "dataElementId": DE_POP},
        ]
        monthly_targets = [  # chap-core's vocabulary: numeric strings
            {"quantile": "0.1", "dataElementId": DE_PRED_LOW},
            {"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN},
            {"quantile": "0.9", "dataElementId": DE_PRED_HIGH},
        ]
        self.add_setup(
            id=1, name="Sandboxia monthly", periodType="month", startPeriod=m_start, orgUnits=all_ous,
            covariateSources=monthly_sources, scheduleCronExpression="0 6 * * 1", scheduleEnabled=True,
            quantileTargets=monthly_targets,
        )
        self.add_setup(
            id=2, name="Sandboxia weekly", periodType="week", startPeriod=w_start, orgUnits=all_ous,
            covariateSources=[
                {"covariate": "disease_cases", "dataElementId": DE_CASES_WEEKLY},
                {"covariate": "rainfall", "dataElementId": DE_RAIN_WEEKLY},
                {"covariate": "mean_temperature", "dataElementId": DE_TEMP_WEEKLY},
            ],
            scheduleCronExpression=None, scheduleEnabled=False,
            # the Modeling app's vocabulary: labels
            quantileTargets=[
                {"quantile": "quantile_low", "dataElementId": DE_PRED_WEEKLY_LOW},
                {"quantile": "median", "dataElementId": DE_PRED_WEEKLY_MEDIAN},
                {"quantile": "quantile_high", "dataElementId": DE_PRED_WEEKLY_HIGH},
            ],
        )
        self.add_setup(
            id=3, name="Sandboxia gappy rainfall", periodType="month", startPeriod=m_start, orgUnits=all_ous,
            covariateSources=[
                {"covariate": "disease_cases", "dataElementId": DE_CASES},
                {"covariate": "rainfall", "dataElementId": DE_RAIN_GAPPY},
                {"covariate": "mean_temperature", "dataElementId": DE_TEMP},
            ],
            scheduleCronExpression="0 6 * * 1", scheduleEnabled=True,
            quantileTargets=monthly_targets,
        )
        self.add_setup(
            id=4, name="Sandboxia yearly", periodType="year", startPeriod=y_start, orgUnits=all_ous,
            covariateSources=[
                {"covariate": "disease_cases", "dataElementId": DE_CASES},
                {"covariate": "population", "dataElementId": DE_POP},
            ],
            scheduleCronExpression="0 5 1 1 *", scheduleEnabled=True,
        )
        # Five covariates over 62 months (60 once the lagging temperature is waited for):
        # the national-scale benchmark's shape (benchmarks/national_scale.py).
        self.add_setup(
            id=5, name="Sandboxia national benchmark", periodType="month",
            startPeriod=P.format_id("month", max(w.last_month - 61, w.first_month)), orgUnits=all_ous,
            covariateSources=monthly_sources + [{"covariate": "relative_humidity", "dataElementId": DE_HUMID}],
            scheduleCronExpression=None, scheduleEnabled=False,
        )

    def add_setup(self, setup: dict | None = None, **fields: Any) -> dict:
        """Add (or replace) a prediction setup; missing fields get sandbox defaults. Returns it."""
        data = dict(setup or {})
        data.update(fields)
        with self.lock:
            sid = int(data.get("id") or (max(self.setups, default=0) + 1))
            full = {
                "id": sid,
                "name": data.get("name", f"Sandbox setup {sid}"),
                "created": data.get("created", _now_naive()),
                "backtestId": data.get("backtestId", sid),
                "configuredModel": data.get("configuredModel", copy.deepcopy(CONFIGURED_MODEL)),
                "startPeriod": data.get("startPeriod", P.format_id("month", self.world.first_month)),
                "orgUnits": data.get("orgUnits", list(self.world.ou_ids)),
                "covariateSources": data.get("covariateSources", data.get("dataSources", [
                    {"covariate": "disease_cases", "dataElementId": DE_CASES},
                    {"covariate": "rainfall", "dataElementId": DE_RAIN},
                ])),
                "periodType": data.get("periodType", "month"),
                "scheduleCronExpression": data.get("scheduleCronExpression"),
                "scheduleEnabled": bool(data.get("scheduleEnabled", False)),
                "quantileTargets": data.get("quantileTargets", []),
                "alertPolicy": data.get("alertPolicy"),
            }
            self.setups[sid] = full
            return full

    def add_prediction(self, n_periods: int = 3, period_type: str = "month", last_index: int | None = None,
                       org_units: list[str] | None = None, setup_id: int | None = None) -> int:
        """A finished prediction without a job run (benchmarks): forecasts after ``last_index``
        (default: the month before the last complete one minus n_periods, so every period is past)."""
        w = self.world
        if last_index is None:
            last_index = (w.last_month if period_type == "month" else w.last_week) - n_periods - 1
        units = list(org_units or w.ou_ids)
        job = Job(id=str(uuid.uuid4()), name="injected prediction", t0=time.monotonic() - 3600,
                  start_time=_now_naive(), outcome="ok", error=None, setup_id=setup_id, org_units=units,
                  n_periods=n_periods, ptype=period_type, last_index=last_index, first_index=last_index - 35,
                  means={ou: 10.0 + i % 53 for i, ou in enumerate(units)}, features=[TARGET])
        job.end_time = _now_naive()
        with self.lock:
            self._finalize(job)
            self.jobs[job.id] = job
        return job.prediction_id  # type: ignore[return-value]

    def remove_setup(self, setup_id: int) -> bool:
        with self.lock:
            return self.setups.pop(int(setup_id), None) is not None

    def _legacy(self, s: dict) -> dict:
        return {
            "id": s["id"],
            "name": s["name"],
            "created": s["created"],
            "configuredModel": s["configuredModel"],
            "startPeriod": s["startPeriod"],
            "orgUnits": s["orgUnits"],
            "dataSources": s["covariateSources"],
            "periodType": s["periodType"],
        }

    # ------------------------------------------------------------------------------------
    # jobs
    # ------------------------------------------------------------------------------------
    def status(self, job: Job) -> str:
        elapsed = time.monotonic() - job.t0
        js = self.setup_job_seconds.get(job.setup_id, self.job_seconds)  # type: ignore[arg-type]
        if elapsed < js / 2:
            return "PENDING"
        if elapsed < js or job.outcome == "hang":
            return "STARTED"
        with self.lock:
            if job.end_time is None:
                job.end_time = (
                    datetime.fromisoformat(job.start_time) + timedelta(seconds=js)
                ).isoformat()
            if job.outcome == "ok":
                if job.prediction_id is None:
                    self._finalize(job)
                return "SUCCESS"
        return "FAILURE"

    def _finalize(self, job: Job) -> None:
        pid = self._next_prediction
        self._next_prediction += 1
        job.prediction_id = pid
        s = self.setups.get(job.setup_id) if job.setup_id is not None else None
        first = P.format_id(job.ptype, job.first_index, pad=True)
        last = P.format_id(job.ptype, job.last_index, pad=True)
        self.predictions[pid] = {
            "id": pid,
            "datasetId": 100 + pid,
            "predictionSetupId": job.setup_id,
            "modelId": CONFIGURED_MODEL["name"],
            "nPeriods": job.n_periods,
            "name": job.name,
            "created": job.end_time,
            "metaData": {},
            "orgUnits": list(job.org_units),
            "configuredModel": {k: v for k, v in CONFIGURED_MODEL.items() if k != "modelTemplate"}
            | {"modelTemplateId": MODEL_TEMPLATE["id"], "archived": False, "usesChapkit": False},
            "dataset": {
                "id": 100 + pid,
                "name": job.name,
                "type": "prediction",
                "covariates": list(job.features),
                "firstPeriod": first,
                "lastPeriod": last,
                "orgUnits": list(job.org_units),
                "periodType": job.ptype,
                "dataSources": s["covariateSources"] if s else [],
                "created": job.end_time,
                "createdManually": False,
            },
        }
        self._prediction_entries[pid] = job

    def _job_row(self, job: Job) -> dict:
        st = self.status(job)
        return {
            "id": job.id,
            "type": "create_prediction",
            "name": job.name,
            "status": st,
            "start_time": job.start_time,
            "end_time": job.end_time if st in ("SUCCESS", "FAILURE") else None,
            "result": str(job.prediction_id) if st == "SUCCESS" else None,
            "error": job.error if st == "FAILURE" else None,
            "prediction_setup_id": job.setup_id,
        }

    # ------------------------------------------------------------------------------------
    # submission
    # ------------------------------------------------------------------------------------
    def _validate_body(self, body: bytes, allowed: dict[str, str] | None, required: list[str]):
        """Return (fields, None) or (None, 422 response). ``allowed=None`` ignores extras."""
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            return None, _detail(422, [{
                "type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error", "input": {},
                "ctx": {"error": str(exc).split(":")[0]},
            }])
        if not isinstance(data, dict):
            if data is None:
                return None, _detail(422, [{"type": "missing", "loc": ["body"], "msg": "Field required",
                                            "input": None}])
            return None, _detail(422, [{
                "type": "model_attributes_type", "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from", "input": data,
            }])
        errors = []
        fields: dict[str, Any] = {}
        aliases = {"provided_data": "providedData", "n_periods": "nPeriods",
                   "configured_model_with_data_source_id": "configuredModelWithDataSourceId",
                   "data_sources": "dataSources", "data_to_be_fetched": "dataToBeFetched",
                   "meta_data": "metaData"}
        for key, value in data.items():
            canon = aliases.get(key, key)
            if allowed is not None and canon not in allowed:
                errors.append({"type": "extra_forbidden", "loc": ["body", key],
                               "msg": "Extra inputs are not permitted", "input": value})
                continue
            fields[canon] = value
        for req in required:
            if req not in fields:
                errors.append({"type": "missing", "loc": ["body", req], "msg": "Field required", "input": data})
        if "name" in fields and not isinstance(fields["name"], str):
            errors.append({"type": "string_type", "loc": ["body", "name"], "msg": "Input should be a valid string",
                           "input": fields["name"]})
        n = fields.get("nPeriods", 3)
        if isinstance(n, bool) or not isinstance(n, (int, float, str)):
            errors.append({"type": "int_type", "loc": ["body", "nPeriods"], "msg": "Input should be a valid integer",
                           "input": n})
        else:
            try:
                nv = int(n)
                if isinstance(n, float) and n != nv:
                    raise ValueError
            except ValueError:
                errors.append({"type": "int_parsing", "loc": ["body", "nPeriods"],
                               "msg": "Input should be a valid integer, unable to parse string as an integer",
                               "input": n})
            else:
                if nv <= 0:
                    errors.append({"type": "greater_than", "loc": ["body", "nPeriods"],
                                   "msg": "Input should be greater than 0", "input": n, "ctx": {"gt": 0}})
                fields["nPeriods"] = nv
        if "geojson" in fields:
            g = fields["geojson"]
            if not isinstance(g, dict):
                errors.append({"type": "model_attributes_type", "loc": ["body", "geojson"],
                               "msg": "Input should be a valid dictionary or object to extract fields from",
                               "input": g})
            elif not isinstance(g.get("features"), list):
                if "features" not in g:
                    errors.append({"type": "missing", "loc": ["body", "geojson", "features"],
                                   "msg": "Field required", "input": g})
                else:
                    errors.append({"type": "list_type", "loc": ["body", "geojson", "features"],
                                   "msg": "Input should be a valid list", "input": g["features"]})
        if "providedData" in fields:
            pdata = fields["providedData"]
            if not isinstance(pdata, list):
                errors.append({"type": "list_type", "loc": ["body", "providedData"],
                               "msg": "Input should be a valid list", "input": pdata})
            else:
                suspects = [i for i, o in enumerate(pdata)
                            if type(o) is not dict or "period" not in o or "orgUnit" not in o
                            or "featureName" not in o]
                for i in suspects:
                    o = pdata[i]
                    if not isinstance(o, dict):
                        errors.append({"type": "model_attributes_type", "loc": ["body", "providedData", i],
                                       "msg": "Input should be a valid dictionary or object to extract fields from",
                                       "input": o})
                        continue
                    if "orgUnit" not in o and "org_unit" in o:
                        o["orgUnit"] = o["org_unit"]
                    if "featureName" not in o:
                        o["featureName"] = o.get("feature_name")
                    for k in ("period", "orgUnit"):
                        if k not in o:
                            errors.append({"type": "missing", "loc": ["body", "providedData", i, k],
                                           "msg": "Field required", "input": o})
                    if len(errors) > 50:
                        break
        if errors:
            return None, _detail(422, errors)
        return fields, None

    def _submit(self, setup: dict, fields: dict) -> Response:
        pdata: list[dict] = fields["providedData"]
        if not pdata:
            return _detail(422, "provided_data cannot be empty")
        target = setup["configuredModel"].get("modelTemplate", {}).get("target") or TARGET
        pcache: dict[Any, tuple[str, int] | None] = {}
        for pid in {o["period"] for o in pdata}:
            pcache[pid] = P.parse(pid) if isinstance(pid, str) else None
            if pcache[pid] is None:
                return _json(500, {"detail": "Internal server error", "error": f"Unknown period format: {pid!r}",
                                   "type": "ValueError"})
        ptypes: dict[str, int] = {}
        for pt, _ in pcache.values():
            ptypes[pt] = ptypes.get(pt, 0) + 1
        ptype = max(ptypes, key=ptypes.get)
        pidx = {pid: pp[1] for pid, pp in pcache.items()}
        lo, hi = min(pidx.values()), max(pidx.values())
        # group observations by (feature, org unit): {period id: value}
        groups: dict[tuple, dict] = {}
        get = groups.get
        for o in pdata:
            key = (o["featureName"], o["orgUnit"])
            d = get(key)
            if d is None:
                d = groups[key] = {}
            d[o["period"]] = o.get("value")
        by_feat: dict[Any, dict[str, dict[int, Any]]] = {}
        for (feat, ou), d in groups.items():
            by_feat.setdefault(feat, {})[ou] = {pidx[p]: v for p, v in d.items()}
        ou_order = dict.fromkeys(ou for _, ou in groups)
        if target not in by_feat:
            return _detail(422, f"Dataset has no target column '{target}'")
        rng = range(lo, hi + 1)
        covariates = [f for f in by_feat if f not in (target, TARGET) and f is not None]
        rejected = []
        rejected_set = set()
        for ou in ou_order:
            for feat in covariates:
                vals = by_feat[feat].get(ou, {})
                if feat == "population":
                    present = [i for i in rng if vals.get(i) is not None]
                    if present:
                        a, b = present[0], present[-1]
                        missing = [i for i in rng if i < a or i > b]
                    else:
                        missing = list(rng)
                else:
                    missing = [i for i in rng if vals.get(i) is None]
                if missing:
                    rejected.append({
                        "reason": "Missing value for some/all time periods",
                        "orgUnit": ou,
                        "featureName": feat,
                        "timePeriods": [P.format_id(ptype, i, pad=True) for i in missing],
                    })
                    rejected_set.add(ou)
                    break
        if rejected and len(rejected_set) == len(ou_order):
            return _detail(400, {"message": "All regions rejected due to missing values", "imported_count": 0,
                                 "rejected": rejected})
        with_geom = {
            str(f.get("id")) for f in fields["geojson"]["features"]
            if isinstance(f, dict) and f.get("id") is not None and f.get("geometry")
        }
        survivors = [ou for ou in ou_order if ou not in rejected_set and ou in with_geom]
        outcome, error = "ok", None
        fault = getattr(self.faults, "chap_job", "ok") if self.faults is not None else "ok"
        if not survivors:
            outcome, error = "fail", "No data in dataset DataSet({})"
        elif len(rng) < MIN_PERIODS.get(ptype, 0):
            outcome, error = "fail", "Training data must cover at least two whole years"
        elif fault == "fail":
            outcome, error = "fail", "Sandbox fault: model run failed (chap_job='fail')"
        elif fault == "hang":
            outcome = "hang"
        target_vals = by_feat[target]
        means = {}
        for ou in survivors:
            vals = [v for i, v in target_vals.get(ou, {}).items() if v is not None and i > hi - 12]
            means[ou] = float(sum(vals) / len(vals)) if vals else 0.0
        job = Job(
            id=str(uuid.uuid4()), name=fields["name"], t0=time.monotonic(), start_time=_now_naive(),
            outcome=outcome, error=error, setup_id=setup["id"],
            org_units=survivors, n_periods=fields.get("nPeriods", 3), ptype=ptype, last_index=hi, first_index=lo,
            means=means, features=[f for f in by_feat if f is not None],
        )
        with self.lock:
            self.jobs[job.id] = job
        return _json(200, {"id": job.id})

    # ------------------------------------------------------------------------------------
    # dispatch
    # ------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: list[tuple[str, str]], body: bytes) -> Response:
        parts = [p for p in path.split("/") if p]
        try:
            if len(body) > 1_000_000:
                with gc_paused():  # millions of small dicts: keep the cyclic GC out of the way
                    return self._dispatch(method, parts, query, body)
            return self._dispatch(method, parts, query, body)
        except Exception as exc:  # mimic chap's global handler
            return _json(500, {"detail": "Internal server error", "error": str(exc), "type": type(exc).__name__})

    def _dispatch(self, method: str, parts: list[str], query: list[tuple[str, str]], body: bytes) -> Response:
        not_found = _detail(404, "Not Found")
        if method == "GET" and parts == ["system", "info"]:
            return _json(200, {
                "chap_core_version": CHAP_VERSION,
                "python_version": "3.13.0",
                "server_date": datetime.now(timezone.utc).isoformat(),
                "server_time_zone_id": "Etc/UTC",
                "revision": "",
                "auth_required": False,
            })
        if method == "GET" and parts == ["health"]:
            return _json(200, {"status": "success", "message": "healthy"})
        if method == "GET" and parts == ["health", "ready"]:
            return _json(200, {"status": "success", "checks": {"db": "ok", "redis": "ok", "celery": "ok"}})
        if not parts or parts[0] != "v1":
            return not_found
        rest = parts[1:]
        legacy = self.api == "legacy"

        if rest[:2] == ["crud", "prediction-setups"]:
            if legacy:
                return not_found
            if len(rest) == 2 and method == "GET":
                with self.lock:
                    return _json(200, [v for k in sorted(self.setups) if (v := self.setups.get(k))])
            if len(rest) >= 3:
                try:
                    sid = int(rest[2])
                except ValueError:
                    return _detail(422, [{"type": "int_parsing", "loc": ["path", "predictionSetupId"],
                                          "msg": "Input should be a valid integer, unable to parse string as an "
                                                 "integer", "input": rest[2]}])
                if len(rest) == 3 and method == "GET":
                    s = self.setups.get(sid)
                    if s is None:
                        return _detail(404, f"PredictionSetup {sid} not found")
                    preds = [p for p in self.predictions.values() if p["predictionSetupId"] == sid]
                    return _json(200, s | {"predictions": preds})
                if len(rest) == 3 and method == "DELETE":
                    if not self.remove_setup(sid):
                        return _detail(404, f"PredictionSetup {sid} not found")
                    return _json(200, {"message": "deleted"})
                if len(rest) == 4 and rest[3] == "run" and method == "POST":
                    fields, err = self._validate_body(
                        body, {"name": "", "geojson": "", "providedData": "", "nPeriods": "", "type": ""},
                        ["name", "geojson", "providedData"],
                    )
                    if err:
                        return err
                    s = self.setups.get(sid)
                    if s is None:
                        return _detail(404, f"PredictionSetup {sid} not found")
                    return self._submit(s, fields)
            return not_found

        if rest[:2] == ["crud", "configured-models-with-data-source"]:
            if not legacy:
                return not_found
            if len(rest) == 2 and method == "GET":
                with self.lock:
                    return _json(200, [self._legacy(v) for k in sorted(self.setups) if (v := self.setups.get(k))])
            if len(rest) == 3 and method == "GET":
                try:
                    s = self.setups.get(int(rest[2]))
                except ValueError:
                    s = None
                if s is None:
                    return _detail(404, f"ConfiguredModelWithDataSource {rest[2]} not found")
                preds = [p for p in self.predictions.values() if p["predictionSetupId"] == s["id"]]
                return _json(200, self._legacy(s) | {"predictions": preds})
            return not_found

        if rest == ["analytics", "make-prediction-with-data-source"] and method == "POST":
            if not legacy:
                return not_found
            fields, err = self._validate_body(
                body, None, ["name", "geojson", "providedData", "dataToBeFetched", "configuredModelWithDataSourceId"]
            )
            if err:
                return err
            cid = fields["configuredModelWithDataSourceId"]
            s = self.setups.get(int(cid)) if str(cid).isdigit() else None
            if s is None:
                return _detail(404, f"ConfiguredModelWithDataSource {cid} not found")
            return self._submit(s, fields)

        if rest[:1] == ["jobs"]:
            return self._jobs(method, rest[1:], query)

        if rest[:2] == ["analytics", "prediction-entry"] and method == "GET":
            q = {}
            for k, v in query:
                q.setdefault(k, []).append(v)
            raw_pid = rest[2] if len(rest) == 3 else (q.get("predictionId") or [None])[0]
            errors = []
            if raw_pid is None:
                errors.append({"type": "missing", "loc": ["query", "predictionId"], "msg": "Field required",
                               "input": None})
            elif not raw_pid.lstrip("-").isdigit():
                errors.append({"type": "int_parsing", "loc": ["path" if len(rest) == 3 else "query", "predictionId"],
                               "msg": "Input should be a valid integer, unable to parse string as an integer",
                               "input": raw_pid})
            qs = q.get("quantiles")
            quantiles = []
            if not qs:
                errors.append({"type": "missing", "loc": ["query", "quantiles"], "msg": "Field required",
                               "input": None})
            else:
                for i, x in enumerate(qs):
                    try:
                        quantiles.append(float(x))
                    except ValueError:
                        errors.append({"type": "float_parsing", "loc": ["query", "quantiles", i],
                                       "msg": "Input should be a valid number, unable to parse string as a number",
                                       "input": x})
            if errors:
                return _detail(422, errors)
            job = self._prediction_entries.get(int(raw_pid))
            if job is None:
                return _detail(404, "Prediction not found")
            if getattr(self.faults, "chap_empty_prediction", False):
                return _json(200, [])
            rows = []
            for ou in job.org_units:
                mean = job.means.get(ou, 0.0)
                for k in range(1, job.n_periods + 1):
                    period = P.format_id(job.ptype, job.last_index + k, pad=True)
                    for qv in quantiles:
                        rows.append({"orgUnit": ou, "period": period, "quantile": qv,
                                     "value": round(mean * (0.5 + qv) * (1 + 0.03 * k), 4)})
            return _json(200, rows)

        if rest == ["analytics", "thresholds"] and method == "POST":
            return self._thresholds(body)

        if rest[:2] == ["crud", "predictions"] and method == "GET":
            if len(rest) == 2:
                return _json(200, list(self.predictions.values()))
            if len(rest) == 3:
                p = self.predictions.get(int(rest[2])) if rest[2].isdigit() else None
                if p is None:
                    return _detail(404, "Prediction not found")
                return _json(200, p)
            return not_found

        if rest[:2] == ["crud", "backtests"] and method == "GET" and len(rest) == 3:
            bid = int(rest[2]) if rest[2].isdigit() else -1
            for s in self.setups.values():
                if s["backtestId"] == bid:
                    return _json(200, {
                        "id": bid, "name": f"Backtest for {s['name']}", "datasetId": bid, "modelId": "naive_model",
                        "nPeriods": 3, "nSplits": 2, "stride": 1, "futureWeatherProvider": "climatology",
                        "predictionSetupId": s["id"], "created": s["created"], "orgUnits": s["orgUnits"],
                        "splitPeriods": [], "modelDbId": 1, "configuredModel": None, "dataset": None,
                        "aggregateMetrics": {},
                    })
            return _detail(404, "Backtest not found")

        if rest == ["crud", "model-templates"] and method == "GET":
            return _json(200, [MODEL_TEMPLATE])
        if rest == ["crud", "configured-models"] and method == "GET":
            return _json(200, [{
                "id": 1, "name": "naive_model", "displayName": "Naive model", "description": MODEL_TEMPLATE[
                    "description"], "supportedPeriodType": "any", "archived": False, "usesChapkit": False,
                "covariates": [{"name": c, "displayName": c.replace("_", " ").capitalize(), "description": ""}
                               for c in MODEL_TEMPLATE["requiredCovariates"]],
                "target": {"name": TARGET, "displayName": "Disease cases", "description": ""},
                "userOptionValues": {}, "additionalContinuousCovariates": [],
            }])
        return not_found

    def _thresholds(self, body: bytes) -> Response:
        """chap 2.5.1's POST /v1/analytics/thresholds (seasonal): one threshold per period x location."""
        try:
            req = orjson.loads(body or b"{}")
            dataset_id, period_ids = int(req["datasetId"]), [str(p) for p in req["periodIds"]]
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return _detail(422, [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
        if getattr(self.faults, "chap_thresholds_fail", False):
            return _detail(400, "Dataset has no complete year to compute a baseline from")
        job = next((j for pid, j in self._prediction_entries.items() if 100 + pid == dataset_id), None)
        if job is None:
            return _detail(404, f"Dataset {dataset_id} has no disease_cases observations")
        locations = req.get("locations") or list(job.org_units)
        entries = []
        for period in period_ids:
            for i, ou in enumerate(locations):
                mean = job.means.get(ou)
                # Above the 0.75 forecast (mean x 1.25+) for every third org unit, below it for the rest.
                value = None if mean is None else round(mean * (1.0 if i % 3 == 0 else 1.6), 4)
                entries.append({"period": period, "location": ou, "values": [value]})
        return _json(200, {"params": {"type": "seasonal", "stdMultiplier": 2.0}, "lines": [2.0], "entries": entries})

    def _jobs(self, method: str, rest: list[str], query: list[tuple[str, str]]) -> Response:
        if not rest and method == "GET":
            ids, statuses, jtype, setup_id = [], [], None, None
            for k, v in query:
                if k == "ids":
                    ids.append(v)
                elif k == "status":
                    statuses.append(v.upper())
                elif k == "type":
                    jtype = v
                elif k == "predictionSetupId":
                    setup_id = int(v) if v.lstrip("-").isdigit() else None
            with self.lock:
                jobs = list(self.jobs.values())
            rows = [self._job_row(j) for j in reversed(jobs)]
            if ids:
                rows = [r for r in rows if r["id"] in ids]
            if statuses:
                rows = [r for r in rows if r["status"] in statuses]
            if jtype:
                rows = [r for r in rows if r["type"] == jtype]
            if setup_id is not None:
                rows = [r for r in rows if r["prediction_setup_id"] == setup_id]
            return _json(200, rows)
        if not rest:
            return _detail(405, "Method Not Allowed")
        job = self.jobs.get(rest[0])
        if job is None:
            return _detail(404, f"Job '{rest[0]}' not found")
        if len(rest) == 1 and method == "GET":
            return _json(200, self.status(job))
        if len(rest) == 2 and rest[1] == "prediction_result" and method == "GET":
            st = self.status(job)
            if st in ("PENDING", "STARTED"):
                return _detail(400, "Job is still running, try again later")
            if st == "FAILURE":
                return _json(500, FAILURE_500)
            return _json(200, self.predictions[job.prediction_id])
        return _detail(404, "Not Found")
