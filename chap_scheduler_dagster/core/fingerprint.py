"""The inputs fingerprint: what a run would send to chap, in one string.

A daily schedule over monthly data would otherwise train and store the same prediction
about 29 times out of 30. The fingerprint covers everything that decides chap's answer
and that this scheduler controls: the configured model's identity and mapping, the input
window, the horizon, the chap API, and the request body bytes. The body is hashed while
it is written to the spool (:class:`HashingWriter`), so no extra pass over the data.

If a run's fingerprint equals that of the model's last successful prediction, the run
does not POST: it ends ``skipped`` and the previous forecast stays current (see
:func:`unchanged_since`). ``force`` predicts anyway. The same string is the data version
of the model's forecast.

The body hash depends on the order in which DHIS2 returns rows; a reordered answer makes
the run predict (a needless prediction, never a wrong skip).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from .chap_models import ChapApi, PredictionInfo, PredictionSetup
from .reconcile import run_marker
from .run_window import InputWindow

# Bump when what goes into the fingerprint changes, so old and new never compare equal by accident.
FINGERPRINT_VERSION = 1
PREFIX = "sha256:"


class HashingWriter:
    """A write-only file that hashes every byte on its way to disk."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._out.write(data)

    def write_unhashed(self, data: bytes) -> int:
        """Bytes that name the run, not the inputs (the prediction's name carries the Dagster run id)."""
        return self._out.write(data)

    def close(self) -> None:
        self._out.close()

    @property
    def closed(self) -> bool:
        return self._out.closed

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def prediction_fingerprint(
    setup: PredictionSetup, window: InputWindow, *, n_periods: int, api: ChapApi | None, body_sha256: str
) -> str:
    """``sha256:<hex>`` over the setup's identity and mapping, the window, nPeriods, the API and the body hash."""
    template = setup.template
    identity = {
        "v": FINGERPRINT_VERSION,
        "setup": {
            "id": setup.id,
            "name": setup.name,
            "configured_model": {
                "id": setup.configured_model.id,
                "name": setup.configured_model.name,
                "template": template.name if template else None,
            },
            "period_type": setup.period_type,
            "start_period": setup.start_period,
            "org_units": list(setup.org_units),
            "covariates": sorted((s.data_element_id, s.covariate) for s in setup.covariate_sources),
        },
        "window": [window.start.id, window.end.id],
        "n_periods": n_periods,
        "api": api.value if api else None,
        "body_sha256": body_sha256,
    }
    return PREFIX + hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class LastPrediction:
    """The model's last successful prediction, as its report recorded it."""

    fingerprint: str
    prediction_id: str
    run_id: str

    def describe(self) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        return f"prediction {self.prediction_id or '?'}{run}"


def unchanged_since(fingerprint: str | None, last: LastPrediction | None) -> LastPrediction | None:
    """``last`` when the inputs are the same as for it (then the POST can be left out), else None."""
    if not fingerprint or last is None or not last.fingerprint:
        return None
    return last if last.fingerprint == fingerprint else None


def still_in_chap(last: LastPrediction, found: PredictionInfo | None) -> bool:
    """chap still holds ``last``: its id answers and, where chap gives a name, the name carries the marker of
    the run that made it. A prediction deleted in chap, or a chap whose database is new (its ids start again
    at 1, so another prediction may answer to the same id), is not a forecast to keep: the run predicts."""
    if found is None:
        return False
    return not (found.name and last.run_id) or run_marker(last.run_id) in found.name


def skip_reason(last: LastPrediction) -> str:
    return f"inputs unchanged since {last.describe()}"


SKIP_HINT = (
    "Nothing was sent to chap: DHIS2's data, the window and the configured model are the same as for the "
    "current prediction, which stays current. To predict anyway, launch with "
    "ops.submit_prediction.config.force: true (or chap-scheduler-run --force)."
)
