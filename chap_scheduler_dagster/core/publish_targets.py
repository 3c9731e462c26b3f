"""chap's ``quantileTargets``: where each forecast quantile goes in DHIS2.

Two vocabularies exist (reference/publishing.md §2): chap-core's numeric strings (``"0.5"``)
and the Modeling app's labels (``median``, ``quantile_low`` …, ``outbreak_indicator``). Both are
accepted, as a list of ``{quantile, dataElementId}`` or as the dict form ``{label: dataElementId}``.
An unknown label is the operator's mistake: publishing stops before anything is written and the
error names the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SchedulerError

# The Modeling app's labels and the quantiles they mean.
LABELS: dict[str, float] = {
    "quantile_low": 0.1,
    "quantile_mid_low": 0.25,
    "median": 0.5,
    "quantile_mid_high": 0.75,
    "quantile_high": 0.9,
}
OUTBREAK_INDICATOR = "outbreak_indicator"
VOCABULARY = ", ".join([*LABELS, OUTBREAK_INDICATOR])


class TargetError(SchedulerError):
    """A quantile target chap stores cannot be used."""


@dataclass(frozen=True)
class PublishTarget:
    label: str  # as chap stores it
    data_element_id: str
    kind: Literal["quantile", "outbreak_indicator"]
    quantile: float | None  # None for outbreak_indicator

    def describe(self) -> str:
        return f"{self.label} -> {self.data_element_id}"


def quantile_key(q: float) -> float:
    """Quantiles compared as floats from two sources (chap's JSON, our parsing)."""
    return round(float(q), 6)


def _pairs(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        return [(str(k), str(v)) for k, v in raw.items()]
    pairs = []
    for item in raw if isinstance(raw, Iterable) and not isinstance(raw, (str, bytes)) else [raw]:
        if isinstance(item, Mapping):
            label, de = item.get("quantile"), item.get("dataElementId", item.get("data_element_id"))
        else:  # chap_models.QuantileTarget
            label, de = getattr(item, "quantile", None), getattr(item, "data_element_id", None)
        if label is None or not de:
            raise TargetError(
                f"quantile target {item!r} has no quantile or no dataElementId",
                hint="Edit the prediction setup's quantileTargets in chap (Modeling app: the setup's import mapping).",
            )
        pairs.append((str(label), str(de)))
    return pairs


def parse_target(label: str, data_element_id: str) -> PublishTarget:
    text = label.strip()
    if text.lower() in LABELS:
        return PublishTarget(text, data_element_id, "quantile", LABELS[text.lower()])
    if text.lower() == OUTBREAK_INDICATOR:
        return PublishTarget(text, data_element_id, "outbreak_indicator", None)
    try:
        q = float(text)
    except ValueError:
        raise TargetError(
            f"quantile target {label!r} -> {data_element_id}: {label!r} is neither a quantile nor a known label",
            hint=f"In chap, set the target's quantile to a number between 0 and 1 (\"0.5\") or one of {VOCABULARY}.",
        ) from None
    if not 0 < q < 1:
        raise TargetError(
            f"quantile target {label!r} -> {data_element_id}: quantile {q:g} is outside 0..1",
            hint="Quantiles are fractions: 0.5 is the median, 0.9 the upper bound of the 80 % interval.",
        )
    return PublishTarget(text, data_element_id, "quantile", q)


def parse_targets(raw: Any) -> list[PublishTarget]:
    """chap's quantileTargets (either vocabulary, list or dict form) as publish targets.

    Raises :class:`TargetError` naming the first unusable target, or when two targets write the
    same data element (the second would overwrite the first in DHIS2).
    """
    targets = [parse_target(label, de) for label, de in _pairs(raw)]
    seen: dict[str, PublishTarget] = {}
    for t in targets:
        other = seen.get(t.data_element_id)
        if other is not None:
            raise TargetError(
                f"quantile targets {other.label!r} and {t.label!r} both write data element {t.data_element_id}",
                hint="Give each quantile its own data element in the prediction setup's quantileTargets.",
            )
        seen[t.data_element_id] = t
    return targets


def target_quantiles(targets: Iterable[PublishTarget]) -> list[float]:
    """The quantiles to read from chap for the quantile targets, sorted, without repeats."""
    return sorted({quantile_key(t.quantile) for t in targets if t.quantile is not None})
