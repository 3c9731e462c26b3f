"""Preflight of a configured model's quantile targets in DHIS2, before anything is written.

For each target data element: it exists and this user can read it, its value type takes the
numbers chap gives, its data sets have the setup's period type, their ``openFuturePeriods``
cover the horizon, and zeros are stored (``zeroIsSignificant``). The configured model's org
units must lie in the user's data capture hierarchy. Dagster-free, so ``chap-scheduler-run check``
can call :func:`check_publish_targets` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Dhis2RequestFailed

Level = Literal["ok", "warning", "error"]

DATA_ELEMENT_FIELDS = (
    "id,displayName,valueType,domainType,zeroIsSignificant,"
    "dataSetElements[dataSet[id,displayName,periodType,openFuturePeriods]]"
)
DECIMAL_TYPES = {"NUMBER", "UNIT_INTERVAL", "PERCENTAGE"}
INTEGER_TYPES = {"INTEGER", "INTEGER_POSITIVE", "INTEGER_ZERO_OR_POSITIVE", "INTEGER_NEGATIVE"}
FLAG_TYPES = DECIMAL_TYPES | INTEGER_TYPES | {"BOOLEAN"}
# chap's period type words -> DHIS2's periodType names
DHIS2_PERIOD_TYPES = {"day": "Daily", "week": "Weekly", "month": "Monthly", "quarter": "Quarterly", "year": "Yearly"}
ORG_UNIT_BATCH = 100
# Said by the preflight and by the run report's DHIS2 import section.
NO_TARGETS = ("no quantile targets in chap for this configured model (to publish its forecasts, map their "
              "quantiles to data elements in the Modeling app's import mapping)")


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str
    fix: str = ""
    target: str = ""  # "<label> -> <data element id>", or "" for the org units
    name: str = ""  # the target data element's DHIS2 name, when it could be read

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "target": self.target, "message": self.message, "fix": self.fix}


def check_publish_targets(
    reader: Any,
    targets: Sequence[Any],
    *,
    period_type: str | None,
    horizon: int,
    org_units: Sequence[str] = (),
) -> list[Finding]:
    """Findings about ``targets`` (``publish_targets.PublishTarget``) in the DHIS2 behind ``reader``.

    ``reader`` is a :class:`core.dhis2_reader.Dhis2Reader` (anything with ``get(path, params)``).
    ``period_type`` is chap's word (``month``, ``week`` …), ``horizon`` the number of periods
    predicted. An empty list means there is nothing to check. Errors mean a write would be refused.
    """
    findings: list[Finding] = []
    for t in targets:
        findings += _check_element(reader, t, period_type, horizon)
    if org_units:
        findings += _check_org_units(reader, list(org_units))
    return findings


def check_setup_targets(reader: Any, setup: Any, *, horizon: int) -> list[Finding]:
    """The same checks for a chap prediction setup (``chap_models.PredictionSetup``), its targets parsed
    first: an unusable target is an error finding, and a setup without targets gives one ok finding."""
    from .publish_targets import TargetError, parse_targets

    try:
        targets = parse_targets(setup.quantile_targets)
    except TargetError as exc:
        return [Finding("error", str(exc), exc.hint)]
    if not targets:
        return [Finding("ok", NO_TARGETS)]
    return check_publish_targets(
        reader, targets, period_type=setup.period_type, horizon=horizon, org_units=setup.org_units
    )


def data_element_names(findings: Sequence[Finding]) -> dict[str, str]:
    """Target ("label -> id") -> the data element's DHIS2 name, from the findings."""
    return {f.target: f.name for f in findings if f.target and f.name}


def _check_element(reader: Any, t: Any, period_type: str | None, horizon: int) -> list[Finding]:
    where = f"{t.label} -> {t.data_element_id}"
    try:
        de = reader.get(f"/api/dataElements/{t.data_element_id}", params={"fields": DATA_ELEMENT_FIELDS})
    except Dhis2RequestFailed as exc:
        if exc.status_code in (403, 404):
            return [
                Finding(
                    "error",
                    f"target {where}: data element {t.data_element_id} does not exist or this DHIS2 user cannot read it",
                    "Create the data element in DHIS2 or fix the target in chap; share it with the scheduler's user "
                    "(metadata read, data write).",
                    where,
                )
            ]
        raise
    name = str(de.get("displayName") or t.data_element_id)
    out: list[Finding] = []
    value_type = str(de.get("valueType") or "")
    allowed = FLAG_TYPES if t.kind == "outbreak_indicator" else DECIMAL_TYPES
    if value_type not in allowed:
        why = "decimals" if value_type in INTEGER_TYPES else "numbers"
        out.append(
            Finding(
                "error",
                f"target {where} ({name}): value type {value_type or 'unknown'} does not take the forecast's {why}",
                "Use a data element of value type NUMBER for quantiles (DHIS2 would reject the values with E7619).",
                where,
                name,
            )
        )
    if de.get("domainType") not in (None, "AGGREGATE"):
        out.append(Finding("error", f"target {where} ({name}) is not an aggregate data element", "Use an aggregate data element.", where, name))
    wanted_type = DHIS2_PERIOD_TYPES.get((period_type or "").lower())
    for dse in de.get("dataSetElements") or []:
        ds = dse.get("dataSet") or {}
        ds_name = ds.get("displayName") or ds.get("id")
        ds_type = ds.get("periodType")
        if wanted_type and ds_type and ds_type != wanted_type:
            out.append(
                Finding(
                    "error",
                    f"target {where} ({name}) is in data set {ds_name!r} of period type {ds_type}, "
                    f"but the configured model predicts {wanted_type} periods",
                    "Use a data element whose data sets have the configured model's period type, or take it out of "
                    "that data set (DHIS2 would refuse the periods with E7643).",
                    where,
                    name,
                )
            )
        open_future = ds.get("openFuturePeriods")
        if open_future is not None and int(open_future) < horizon:
            out.append(
                Finding(
                    "warning",
                    f"target {where} ({name}) is in data set {ds_name!r} with openFuturePeriods {open_future}, below the "
                    f"horizon of {horizon} periods: DHIS2 will refuse the later periods (E7641)",
                    f"Set openFuturePeriods of data set {ds_name!r} to at least {horizon}, or keep forecast data "
                    "elements out of data sets.",
                    where,
                    name,
                )
            )
    if de.get("zeroIsSignificant") is False:
        zeros = "the indicator is 0 wherever no outbreak is forecast" if t.kind == "outbreak_indicator" else "forecasts of 0 can occur"
        out.append(
            Finding(
                "warning",
                f"target {where} ({name}) does not store zeros (zeroIsSignificant is false) and {zeros}: "
                "a 0 is dropped and deletes an older value",
                f"Set 'Store zero data values' (zeroIsSignificant) on data element {name!r}.",
                where,
                name,
            )
        )
    if not out:
        out.append(Finding("ok", f"target {where} ({name}): {value_type}, writable periods", "", where, name))
    return out


def _check_org_units(reader: Any, org_units: list[str]) -> list[Finding]:
    me = reader.get("/api/me", params={"fields": "organisationUnits[id]"})
    roots = {str(ou.get("id")) for ou in me.get("organisationUnits") or [] if isinstance(ou, dict)}
    outside: list[str] = []
    unknown: list[str] = []
    for i in range(0, len(org_units), ORG_UNIT_BATCH):
        batch = org_units[i : i + ORG_UNIT_BATCH]
        answer = reader.get(
            "/api/organisationUnits",
            params=[("filter", f"id:in:[{','.join(batch)}]"), ("fields", "id,path"), ("paging", "false")],
        )
        found = {str(u.get("id")): str(u.get("path") or "") for u in answer.get("organisationUnits") or []}
        for ou in batch:
            path = found.get(ou)
            if path is None:
                unknown.append(ou)
            elif not roots.intersection(path.strip("/").split("/")):
                outside.append(ou)
    findings = []
    if unknown:
        findings.append(
            Finding(
                "error",
                f"{len(unknown)} org units of the configured model are unknown to DHIS2 or hidden from this user: "
                f"{_some(unknown)}",
                "Check the configured model's org units in chap against DHIS2 (DHIS2 would refuse them with E7612).",
            )
        )
    if outside:
        findings.append(
            Finding(
                "error",
                f"{len(outside)} org units are outside the DHIS2 user's data capture org units: {_some(outside)}",
                "Give the scheduler's DHIS2 user a data capture org unit above them (e.g. the country), "
                "or DHIS2 refuses their values with E7612.",
            )
        )
    if not findings:
        findings.append(Finding("ok", f"all {len(org_units)} org units are in the user's data capture hierarchy"))
    return findings


def _some(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} … ({len(items)} in all)"
