"""Plain-data builders shared by the ``test_core_*`` modules (no pytest fixtures, no I/O)."""

from __future__ import annotations

import base64
import json
from typing import Any

from chap_scheduler_dagster.core.chap_models import PredictionSetup

DHIS2 = "http://dhis2.test/dhis"
CHAP = DHIS2 + "/api/routes/chap/run"
USER = "admin"
PASSWORD = "s3cret-Pa55word"


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def setup_json(
    setup_id: int = 3,
    *,
    org_units: list[str] | None = None,
    covariates: dict[str, str] | None = None,
    period_type: str = "month",
    start_period: str | None = "202101",
    legacy: bool = False,
) -> dict[str, Any]:
    """A chap prediction setup (2.x) or configured-model-with-data-source (legacy) row, wire form."""
    covariates = {"DE_RAIN": "rainfall", "DE_CASES": "disease_cases"} if covariates is None else covariates
    sources = [{"covariate": c, "dataElementId": d} for d, c in covariates.items()]
    row: dict[str, Any] = {
        "id": setup_id,
        "name": f"setup {setup_id}",
        "created": "2026-01-01T00:00:00",
        "configuredModel": {
            "id": 7,
            "name": "naive_model",
            "modelTemplate": {"id": 1, "name": "naive", "displayName": "Naive", "supportedPeriodType": "any"},
        },
        "startPeriod": start_period,
        "orgUnits": ["OU_A", "OU_B"] if org_units is None else org_units,
        "periodType": period_type,
    }
    if legacy:
        row["dataSources"] = sources
    else:
        row |= {
            "backtestId": 11,
            "covariateSources": sources,
            "scheduleCronExpression": None,
            "scheduleEnabled": False,
            "quantileTargets": [],
        }
    return row


def make_setup(**kwargs: Any) -> PredictionSetup:
    return PredictionSetup.model_validate(setup_json(**kwargs))


def square(x: float, y: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]]}


def web_message(status: int, message: str, error_code: str | None = None) -> dict[str, Any]:
    phrases = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
    body: dict[str, Any] = {"httpStatus": phrases.get(status, "Error"), "httpStatusCode": status, "status": "ERROR",
                            "message": message}
    if error_code:
        body["errorCode"] = error_code
    return body


def simple_body(setup: PredictionSetup, unit_batches, answers, *, name: str, n_periods: int, legacy: bool = False):
    """The obviously-correct in-memory prediction body: every row held in lists, then one dict.

    Independent of PredictionBodyWriter except for the feature shape, which
    ``test_org_unit_feature_shape`` pins separately.
    """
    import math

    from chap_scheduler_dagster.core.prediction_body import org_unit_feature

    covariate_of = {s.data_element_id: s.covariate for s in setup.covariate_sources}
    in_model = set(setup.org_units)
    features = []
    with_geometry = set()
    for batch in unit_batches:
        for unit in batch:
            if unit.get("id") in in_model and unit.get("geometry"):
                features.append(org_unit_feature(unit))
                with_geometry.add(unit["id"])
    observations = []
    for answer in answers:
        names = [h["name"] for h in answer.get("headers", [])]
        for row in answer.get("rows") or []:
            cells = dict(zip(names, row))
            if len(row) < len(names) or not {"dx", "pe", "ou", "value"} <= set(cells):
                continue
            if cells["dx"] not in covariate_of or cells["ou"] not in with_geometry:
                continue
            try:
                value = float(cells["value"])
            except (TypeError, ValueError):
                continue
            if math.isnan(value) or math.isinf(value):
                continue
            observations.append(
                {"featureName": covariate_of[cells["dx"]], "orgUnit": cells["ou"], "period": cells["pe"],
                 "value": value}
            )
    body: dict[str, Any] = {"name": name, "nPeriods": n_periods, "type": "forecasting"}
    if legacy:
        body["configuredModelWithDataSourceId"] = setup.id
        body["dataSources"] = [{"covariate": s.covariate, "dataElementId": s.data_element_id}
                               for s in setup.covariate_sources]
        body["dataToBeFetched"] = []
    body["geojson"] = {"type": "FeatureCollection", "features": features}
    body["providedData"] = observations
    return json.loads(json.dumps(body))


def simple_dropped(setup: PredictionSetup, unit_batches, answers) -> dict[str, int]:
    """Why each row is left out, by the documented precedence: missing columns or short row,
    unmapped data element, org unit without geometry / outside the model, empty or non-numeric value."""
    import math
    from collections import Counter

    from chap_scheduler_dagster.core import prediction_body as pb

    covariate_of = {s.data_element_id for s in setup.covariate_sources}
    in_model = set(setup.org_units)
    with_geometry = {u["id"] for batch in unit_batches for u in batch if u.get("id") in in_model and u.get("geometry")}
    dropped: Counter[str] = Counter()
    for answer in answers:
        names = [h["name"] for h in answer.get("headers", [])]
        for row in answer.get("rows") or []:
            if not {"dx", "pe", "ou", "value"} <= set(names):
                dropped[pb.DROP_SHORT_ROW] += 1
                continue
            width = max(names.index(n) for n in ("dx", "pe", "ou", "value")) + 1
            cells = dict(zip(names, row))
            if len(row) < width:
                dropped[pb.DROP_SHORT_ROW] += 1
            elif cells["dx"] not in covariate_of:
                dropped[pb.DROP_UNMAPPED] += 1
            elif cells["ou"] not in with_geometry:
                dropped[pb.DROP_NO_GEOMETRY if cells["ou"] in in_model else pb.DROP_OTHER_ORG_UNIT] += 1
            else:
                try:
                    ok = math.isfinite(float(cells["value"]))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    dropped[pb.DROP_EMPTY] += 1
    return dict(dropped)
