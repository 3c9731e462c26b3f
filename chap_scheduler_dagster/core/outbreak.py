"""The Modeling app's ``outbreak_indicator``: 1 where the forecast at a quantile (default 0.75)
is above chap's seasonal threshold for that org unit and period, else 0.

Thresholds come from ``POST /v1/analytics/thresholds`` (chap-core 2.5.1), computed from the
prediction's dataset. That POST only computes; it creates nothing in chap.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chap_client import ChapClient
from .errors import ChapError, SchedulerError
from .periods import dhis2_id

Thresholds = dict[tuple[str, str], float]  # (org unit, DHIS2 period id) -> threshold


def outbreak_flag(thresholds: Thresholds, org_unit: str, period: str, forecast: float) -> str | None:
    """"1" or "0", or None when chap gave no threshold for this cell."""
    threshold = thresholds.get((org_unit, dhis2_id(period)))
    if threshold is None:
        return None
    return "1" if forecast > threshold else "0"


def parse_thresholds(answer: Any) -> Thresholds:
    table: Thresholds = {}
    for entry in (answer or {}).get("entries") or []:
        values = entry.get("values") or []
        if values and values[0] is not None:
            table[(str(entry["location"]), dhis2_id(str(entry["period"])))] = float(values[0])
    return table


def chap_thresholds(chap: ChapClient, prediction_id: int, periods: list[str]) -> Thresholds:
    """chap's seasonal thresholds (mean + 2 std of the same month/week) for the forecast's periods,
    computed from the prediction's dataset. ``periods`` in DHIS2's form, which chap 2.5.1 accepts."""
    try:
        prediction = chap._get(f"/v1/crud/predictions/{prediction_id}")
        dataset_id = (prediction or {}).get("datasetId")
        if dataset_id is None:
            raise SchedulerError(f"chap's prediction {prediction_id} names no dataset")
        body = {"datasetId": dataset_id, "periodIds": periods, "params": {"type": "seasonal"}}
        answer = chap._post("/v1/analytics/thresholds", content=orjson.dumps(body))
    except ChapError as exc:
        raise SchedulerError(str(exc), hint=exc.hint) from exc
    return parse_thresholds(answer)
