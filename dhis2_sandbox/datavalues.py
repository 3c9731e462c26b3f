"""DHIS2's ``/api/dataValueSets`` for the sandbox: a faithful import and a read-back.

Import rules follow DHIS2 2.41 (reference/publishing.md §5): ``dryRun``; ``importStrategy``
``CREATE_AND_UPDATE`` (upsert) or ``DELETE``; identical values are *ignored*; a ``"0"`` for a
data element that is not ``zeroIsSignificant`` is not stored and deletes an older value; values
with conflicts are rejected (E7610 unknown data element, E7611 bad period, E7612 org unit unknown or
outside the user's capture hierarchy, E7619 value type, E7641 after the data set's latest open
future period); the answer is a WebMessage wrapping the ImportSummary, HTTP 409 with status
WARNING when there are conflicts.
"""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

from . import periods as P
from .world import ROOT_OU, World

INTEGER_TYPES = {"INTEGER", "INTEGER_POSITIVE", "INTEGER_ZERO_OR_POSITIVE", "INTEGER_NEGATIVE"}


class DataValueStore:
    def __init__(self, world: World) -> None:
        self.world = world
        self.values: dict[tuple[str, str, str], str] = {}  # (dataElement, period, orgUnit) -> value
        self.lock = threading.Lock()
        self.imports: list[dict] = []  # one entry per POST: params and counts (for tests)

    def _value_ok(self, value_type: str, value: str) -> bool:
        try:
            number = float(value)
        except ValueError:
            return value_type in ("TEXT", "LONG_TEXT")
        if value_type in INTEGER_TYPES:
            return number == int(number) and "." not in value and "e" not in value.lower()
        if value_type == "BOOLEAN":
            return value in ("0", "1", "true", "false")
        return True

    def _latest_open(self, de_id: str, ptype: str, today: date) -> int | None:
        latest = None
        for ds in self.world.data_sets:
            if de_id in ds["elements"] and ds["periodType"].lower().startswith(ptype[:4]):
                limit = P.index_of(ptype, today) + int(ds["openFuturePeriods"])
                latest = limit if latest is None else min(latest, limit)
        return latest

    def import_values(self, payload: Any, *, dry_run: bool, strategy: str, capture_roots: list[str],
                      today: date) -> tuple[int, dict]:
        w = self.world
        rows = payload.get("dataValues") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            return 409, _message(409, "Conflict", "ERROR", "Invalid data value set", _summary("ERROR", {}, [], []))
        counts = {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
        conflicts: list[dict] = []
        rejected: list[int] = []
        with self.lock:
            pending: dict[tuple[str, str, str], str | None] = {}
            for i, row in enumerate(rows):
                de_id, pe, ou = str(row.get("dataElement", "")), str(row.get("period", "")), str(row.get("orgUnit", ""))
                value = row.get("value")
                de = w.data_elements.get(de_id)
                parsed = P.parse(pe)
                path = f"/{ROOT_OU}" if ou == ROOT_OU else (f"/{ROOT_OU}/{ou}" if ou in w.ou_index else None)
                conflict = None
                if de is None:
                    conflict = ("E7610", de_id, f"Data element not found or not accessible: `{de_id}`", "dataElement")
                elif parsed is None:
                    conflict = ("E7611", pe, f"Period not valid: `{pe}`", "period")
                elif path is None or not set(capture_roots).intersection(path.strip("/").split("/")):
                    conflict = ("E7612", ou, f"Organisation unit not found or not accessible: `{ou}`", "orgUnit")
                elif strategy != "DELETE" and (value is None or not self._value_ok(de.value_type, str(value))):
                    conflict = ("E7619", str(value), f"Value must match data element's `{de_id}` type constraints: "
                                f"Data value is not {'an integer' if de.value_type in INTEGER_TYPES else 'numeric'}",
                                "value")
                else:
                    latest = self._latest_open(de_id, parsed[0], today)
                    if latest is not None and parsed[1] > latest:
                        conflict = ("E7641", pe, f"Period: `{pe}` is after latest open future period: "
                                    f"`{P.format_id(parsed[0], latest)}` for data element: `{de_id}`", "period")
                if conflict is not None:
                    code, obj, text, prop = conflict
                    conflicts.append({"object": obj, "objects": {prop: obj}, "value": text, "errorCode": code,
                                      "property": prop, "indexes": [i]})
                    rejected.append(i)
                    continue
                key = (de_id, P.format_id(parsed[0], parsed[1]), ou)
                existing = pending[key] if key in pending else self.values.get(key)
                text = str(value) if value is not None else None
                zero_dropped = text is not None and not de.zero_is_significant and _is_zero(text)
                if strategy == "DELETE" or zero_dropped:
                    if existing is None:
                        counts["ignored"] += 1
                    else:
                        counts["deleted"] += 1
                        pending[key] = None
                elif existing is None:
                    counts["imported"] += 1
                    pending[key] = text
                elif existing == text:
                    counts["ignored"] += 1
                else:
                    counts["updated"] += 1
                    pending[key] = text
            if not dry_run:
                for key, text in pending.items():
                    if text is None:
                        self.values.pop(key, None)
                    else:
                        self.values[key] = text
            self.imports.append({"dry_run": dry_run, "strategy": strategy, "values": len(rows), **counts,
                                 "conflicts": len(conflicts)})
        status = "WARNING" if conflicts else "SUCCESS"
        summary = _summary(status, counts, conflicts, rejected)
        if conflicts:
            return 409, _message(409, "Conflict", "WARNING", "One more conflicts encountered, please check import "
                                 "summary.", summary)
        return 200, _message(200, "OK", "OK", "Import was successful.", summary)

    def read(self, query: list[tuple[str, str]], capture_roots: list[str]) -> tuple[int, dict]:
        des, pes, ous, children = set(), set(), [], False
        for k, v in query:
            if k == "dataElement":
                des.add(v)
            elif k == "period":
                parsed = P.parse(v)
                if parsed:
                    pes.add(P.format_id(*parsed))
            elif k == "orgUnit":
                ous.append(v)
            elif k == "children":
                children = v.lower() == "true"
        if not des or not ous or not pes:
            return 409, _message(409, "Conflict", "ERROR", "At least one data element or data set, one period and "
                                 "one org unit must be specified", None, "E2001")
        wanted_ous = set(ous)
        if children:
            wanted_ous |= {u for u in self.world.ou_ids if set(ous).intersection(self.world.unit(u)["path"].split("/"))}
        with self.lock:
            rows = [
                {"dataElement": de, "period": pe, "orgUnit": ou, "categoryOptionCombo": "HllvX50cXC0",
                 "attributeOptionCombo": "HllvX50cXC0", "value": val, "storedBy": "admin", "followup": False}
                for (de, pe, ou), val in self.values.items()
                if de in des and pe in pes and ou in wanted_ous
            ]
        return 200, {"dataValues": rows}


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def _summary(status: str, counts: dict, conflicts: list, rejected: list) -> dict:
    return {"responseType": "ImportSummary", "status": status, "importOptions": {"idSchemes": {}},
            "description": "Import process completed successfully" if status == "SUCCESS" else "",
            "importCount": {"imported": counts.get("imported", 0), "updated": counts.get("updated", 0),
                            "ignored": counts.get("ignored", 0), "deleted": counts.get("deleted", 0)},
            "conflicts": conflicts, "rejectedIndexes": rejected, "dataSetComplete": "false"}


def _message(code: int, reason: str, status: str, message: str, response: dict | None,
             error_code: str | None = None) -> dict:
    msg: dict[str, Any] = {"httpStatus": reason, "httpStatusCode": code, "status": status, "message": message}
    if error_code:
        msg["errorCode"] = error_code
    if response is not None:
        msg["response"] = response
    return msg
