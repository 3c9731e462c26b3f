"""chap-core's objects as the scheduler reads them (wire JSON, camelCase unless chap says otherwise).

Unknown fields are ignored so newer chap releases keep working. Both API generations are
read into :class:`PredictionSetup`: chap-core 2.x prediction setups, and the
``configured-models-with-data-source`` rows of the 2.0 development builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class ChapApi(StrEnum):
    PREDICTION_SETUPS = "prediction-setups"
    LEGACY = "configured-models-with-data-source"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ChapSystemInfo(_Wire):
    chap_core_version: str = "unknown"
    python_version: str | None = None
    server_date: str | None = None
    server_time_zone_id: str | None = None


class ModelTemplate(_Wire):
    id: int | None = None
    name: str = ""
    display_name: str | None = Field(default=None, alias="displayName")
    target: str | None = None
    supported_period_type: str | None = Field(default=None, alias="supportedPeriodType")
    min_prediction_periods: int | None = Field(default=None, alias="minPredictionPeriods")
    max_prediction_periods: int | None = Field(default=None, alias="maxPredictionPeriods")


class ConfiguredModel(_Wire):
    id: int | None = None
    name: str = ""
    model_template: ModelTemplate | None = Field(default=None, alias="modelTemplate")


class CovariateSource(_Wire):
    covariate: str
    data_element_id: str = Field(alias="dataElementId")


class QuantileTarget(_Wire):
    quantile: str
    data_element_id: str = Field(alias="dataElementId")


class PredictionSetup(_Wire):
    """A configured model with its DHIS2 data source (chap calls it a prediction setup)."""

    id: int
    name: str
    configured_model: ConfiguredModel = Field(default_factory=ConfiguredModel, alias="configuredModel")
    start_period: str | None = Field(default=None, alias="startPeriod")
    org_units: list[str] = Field(default_factory=list, alias="orgUnits")
    covariate_sources: list[CovariateSource] = Field(
        default_factory=list, validation_alias=AliasChoices("covariateSources", "dataSources")
    )
    period_type: str | None = Field(default=None, alias="periodType")
    schedule_cron_expression: str | None = Field(default=None, alias="scheduleCronExpression")
    # chap-core defaults the flag to false, and legacy rows have no flag at all.
    schedule_enabled: bool = Field(default=False, alias="scheduleEnabled")
    quantile_targets: list[QuantileTarget] = Field(default_factory=list, alias="quantileTargets")

    @field_validator("quantile_targets", mode="before")
    @classmethod
    def _targets_dict_form(cls, raw: object) -> object:
        # The Modeling app's reader also accepts {label: dataElementId}; tolerate it (core/publish_targets.py).
        if isinstance(raw, dict):
            return [{"quantile": str(k), "dataElementId": str(v)} for k, v in raw.items()]
        return raw or []

    @field_validator("org_units")
    @classmethod
    def _unique_org_units(cls, units: list[str]) -> list[str]:
        # A repeated org unit would be fetched twice and chap answers 500 on duplicate observations.
        return list(dict.fromkeys(units))

    @property
    def model_name(self) -> str:
        return self.configured_model.name

    @property
    def template(self) -> ModelTemplate | None:
        return self.configured_model.model_template

    def data_element_covariates(self) -> dict[str, str]:
        """DHIS2 data element id -> chap feature name."""
        return {s.data_element_id: s.covariate for s in self.covariate_sources}


class JobDescription(_Wire):
    # chap keeps these keys snake_case on the wire.
    id: str
    type: str | None = None
    name: str | None = None
    status: str = ""
    start_time: str | None = None
    end_time: str | None = None
    result: str | None = None
    error: str | None = None
    prediction_setup_id: int | None = None


class PredictionInfo(_Wire):
    id: int
    name: str | None = None
    n_periods: int | None = Field(default=None, alias="nPeriods")
    org_units: list[str] | None = Field(default=None, alias="orgUnits")
    model_id: str | None = Field(default=None, alias="modelId")


@dataclass
class PredictionSummary:
    """What the report says about a prediction's values, built without keeping the entries."""

    values: int = 0
    periods: set[str] = field(default_factory=set)
    median_by_period: dict[str, float] = field(default_factory=dict)
    # quantile -> period -> forecast summed over org units (the chap_forecast asset's table)
    sum_by_quantile: dict[float, dict[str, float]] = field(default_factory=dict)

    def add(self, entries: list[dict], quantile: float) -> None:
        self.values += len(entries)
        is_median = abs(quantile - 0.5) < 1e-9
        sums = self.sum_by_quantile.setdefault(quantile, {})
        for entry in entries:
            period = entry["period"]
            self.periods.add(period)
            if entry.get("value") is not None:
                sums[period] = sums.get(period, 0.0) + float(entry["value"])
            if is_median:
                self.median_by_period[period] = self.median_by_period.get(period, 0.0) + float(entry["value"])


# chap's 400 bodies are read leniently: whatever a field holds becomes text, as the report prints it.
_Text = Annotated[str, BeforeValidator(str)]


class RejectedRow(_Wire):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    reason: _Text = ""
    org_unit: _Text = Field(default="", alias="orgUnit")
    feature_name: _Text = Field(default="", alias="featureName")
    time_periods: Annotated[tuple[str, ...], BeforeValidator(lambda v: tuple(str(p) for p in v or ()))] = Field(
        default=(), alias="timePeriods"
    )


class Rejection(_Wire):
    """chap's structured 400: every region rejected for missing covariate values."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    message: _Text = ""
    imported_count: Annotated[int, BeforeValidator(lambda v: int(v or 0))] = 0
    rejected: tuple[RejectedRow, ...] = ()

    @classmethod
    def from_detail(cls, detail: object) -> Rejection | None:
        """The rejection in a 400's ``detail``, or None when the body has another shape."""
        if not isinstance(detail, dict) or not isinstance(rows := detail.get("rejected"), list):
            return None
        if not all(isinstance(row, dict) for row in rows):
            return None
        return cls.model_validate(detail)
