"""Alert thresholds as configuration: defaults for a 12 V VRLA block, overridable per model.

Every threshold is strict: a "high" alert is present when the value *exceeds* its threshold, a
"low" one when the value is *below* it, so a value exactly at a threshold raises nothing (as the
battery status treats SoH 85.0 % as healthy). A present alert counts as clear only once the value
is back past its mildest threshold by the type's margin (hysteresis).

Voltage thresholds are for one 12 V, 6-cell block on float (2.25–2.30 V/cell → 13.5–13.8 V) and are
not temperature-compensated: the charger compensates by about −3 mV/°C per cell, which keeps a
healthy block well inside the 12.6–14.4 V band from 0 to 50 °C.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from common.schemas import describe_errors


class AlertThresholds(BaseModel):
    """The thresholds of one battery model; the defaults fit a 12 V VRLA monobloc."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # temperature_high: VRLA life halves per 8–10 °C above 25 °C; 45 °C is the reference's example.
    temperature_warning_c: float = 45.0
    temperature_critical_c: float = 55.0
    temperature_margin_c: float = Field(1.0, ge=0)

    # voltage_high: above 2.40 V/cell (boost-charge level) the block gasses and dries out.
    voltage_high_warning_v: float = 14.4
    voltage_high_critical_v: float = 14.7  # 2.45 V/cell
    # voltage_low on float: 2.10 V/cell is open-circuit level (the charger is not holding the block
    # up); 2.00 V/cell is a shorted cell or a block that will not carry the load.
    voltage_low_warning_v: float = 12.6
    voltage_low_critical_v: float = 12.0
    # While the string discharges (current below -discharge_current_a), a low voltage is expected:
    # only a block below end of discharge (1.75 V/cell) is an alert (critical). None: never.
    voltage_low_discharge_v: float | None = 10.5
    discharge_current_a: float = Field(1.0, ge=0)
    voltage_margin_v: float = Field(0.05, ge=0)

    # resistance_drift, in percent over the block's own baseline (field practice: warn at
    # +20–25 %, replace at +50 %).
    resistance_warning_pct: float = Field(25.0, gt=0)
    resistance_critical_pct: float = 50.0
    resistance_margin_pct: float = Field(5.0, ge=0)  # percentage points of drift

    # soh_degraded: end of life is 80 % of rated capacity (IEEE 1188).
    soh_warning_pct: float = 85.0
    soh_critical_pct: float = 80.0
    soh_margin_pct: float = Field(0.5, ge=0)

    # rul_warning (warning) and rul_critical (critical) are separate alert types.
    rul_warning_days: float = 180.0
    rul_critical_days: float = 30.0
    rul_margin_days: float = Field(5.0, ge=0)

    @model_validator(mode="after")
    def _critical_beyond_warning(self) -> Self:
        """A critical threshold milder than its warning would make warnings unreachable."""
        pairs = (
            ("temperature", self.temperature_critical_c > self.temperature_warning_c),
            ("voltage_high", self.voltage_high_critical_v > self.voltage_high_warning_v),
            ("voltage_low", self.voltage_low_critical_v < self.voltage_low_warning_v),
            ("resistance", self.resistance_critical_pct > self.resistance_warning_pct),
            ("soh", self.soh_critical_pct < self.soh_warning_pct),
            ("rul", self.rul_critical_days < self.rul_warning_days),
        )
        wrong = [name for name, ok in pairs if not ok]
        if wrong:
            raise ValueError(f"critical threshold not beyond warning for: {', '.join(wrong)}")
        if (
            self.voltage_low_discharge_v is not None
            and self.voltage_low_discharge_v >= self.voltage_low_critical_v
        ):
            raise ValueError("voltage_low_discharge_v must be below voltage_low_critical_v")
        if self.voltage_high_warning_v <= self.voltage_low_warning_v:
            raise ValueError("voltage_high_warning_v must be above voltage_low_warning_v")
        return self


class AlertSettings(BaseModel):
    """Alert configuration: thresholds per battery model, and the lifecycle's timing.

    ``per_model`` maps a battery model name (the birth message's ``model``, matched exactly) to
    the fields that differ from ``defaults``; each merged set is validated when the settings load,
    so a typo fails at start-up rather than at the first alert.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: AlertThresholds = Field(default_factory=AlertThresholds)
    per_model: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    # communication_lost after missed_polls poll intervals without data from a battery.
    poll_interval_s: float = Field(60.0, gt=0)
    missed_polls: int = Field(3, ge=1)
    # An active alert resolves once its condition has stayed clear this long.
    hold_s: float = Field(600.0, ge=0)
    # After an engineer resolves an alert whose condition is still present, a new alert of that
    # type waits until the condition has been seen clear once, or this long (see lifecycle).
    rearm_s: float = Field(3600.0, ge=0)
    # Resistance baseline: median of a block's first this-many valid resistance readings
    # (an hour at the default 60 s poll).
    baseline_readings: int = Field(60, ge=1)

    _resolved: dict[str, AlertThresholds] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve_models(self) -> Self:
        base = self.defaults.model_dump()
        for model, override in self.per_model.items():
            try:
                self._resolved[model] = AlertThresholds.model_validate({**base, **override})
            except ValidationError as exc:
                raise ValueError(f"thresholds of model {model!r}: {describe_errors(exc)}") from exc
        return self

    @property
    def communication_after_s(self) -> float:
        """Silence, in seconds, after which a battery counts as lost."""
        return self.poll_interval_s * self.missed_polls

    def for_model(self, model: str | None) -> AlertThresholds:
        """The thresholds of battery ``model``: its override if configured, else the defaults."""
        if model is None:
            return self.defaults
        return self._resolved.get(model, self.defaults)
