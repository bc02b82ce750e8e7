"""Alert rules: pure functions from a battery's recent readings and stored facts to conditions.

A ``Condition`` is one observation of one alert type: present at a severity, clear (back past the
mildest threshold by the hysteresis margin), or in between (the dead band, which neither raises
nor counts towards resolving). Whether that raises, escalates or resolves an alert is the
lifecycle's decision (``central.alerts.lifecycle``), not the rule's.

Each rule reads the *latest valid* value of its measurement: the reading with the greatest ``ts``
whose value is not null. A null is a value the device did not give, never 0; a type without any
valid value yields no condition at all, so missing data neither raises nor clears an alert.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple, Protocol

from central.alerts.thresholds import AlertSettings, AlertThresholds
from common.timeutil import ensure_utc


class AlertType(StrEnum):
    VOLTAGE_HIGH = "voltage_high"
    VOLTAGE_LOW = "voltage_low"
    TEMPERATURE_HIGH = "temperature_high"
    RESISTANCE_DRIFT = "resistance_drift"
    SOH_DEGRADED = "soh_degraded"
    RUL_WARNING = "rul_warning"
    RUL_CRITICAL = "rul_critical"
    COMMUNICATION_LOST = "communication_lost"

    @property
    def higher_is_worse(self) -> bool:
        """Which way ``actual_value`` worsens (the lifecycle keeps an alert's worst value)."""
        return self in _HIGHER_IS_WORSE


_HIGHER_IS_WORSE = frozenset(
    {
        AlertType.VOLTAGE_HIGH,
        AlertType.TEMPERATURE_HIGH,
        AlertType.RESISTANCE_DRIFT,
        AlertType.COMMUNICATION_LOST,
    }
)


class Severity(StrEnum):
    """The store's severities; the rules use warning and critical, ``info`` is for operators."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_TS = attrgetter("ts")
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True)
class Condition:
    """One observation of one alert type at ``observed_at``.

    ``severity`` is None when the value is not beyond any threshold; ``clear`` is True only when it
    is also past the mildest threshold by the margin. ``threshold_value`` is the threshold of
    ``severity`` (the mildest one when None), in the unit of ``actual_value``: °C, V, percent of
    drift over baseline, percent SoH, days, or seconds of silence. ``actual_value`` is None only
    for a clear RUL without end of life in sight; ``message`` is None unless present.
    """

    alert_type: AlertType
    severity: Severity | None
    clear: bool
    actual_value: float | None
    threshold_value: float
    observed_at: datetime
    message: str | None

    @property
    def present(self) -> bool:
        return self.severity is not None


class ReadingLike(Protocol):
    """What a rule reads of a reading: ``common.schemas.Reading`` and the telemetry rows fit."""

    @property
    def ts(self) -> datetime: ...
    @property
    def voltage(self) -> float | None: ...
    @property
    def current(self) -> float | None: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def internal_resistance(self) -> float | None: ...
    @property
    def soh_pct(self) -> float | None: ...


@dataclass(frozen=True)
class BatteryContext:
    """What the store knows of a battery beyond its recent readings.

    ``baseline_resistance_ohm`` comes from ``baseline()`` over the block's earliest readings and is
    kept once set; without it there is no resistance_drift. ``rul_as_of`` is when the RUL engine
    made its latest estimate and ``rul_days`` that estimate (``RulEstimate.computed_at`` and
    ``.rul_days``); ``rul_days`` None with ``rul_as_of`` set means no end of life within the
    horizon, which clears both RUL types. Without ``rul_as_of`` there are no RUL conditions.
    """

    baseline_resistance_ohm: float | None = None
    rul_days: float | None = None
    rul_as_of: datetime | None = None

    def __post_init__(self) -> None:
        if self.rul_days is not None and self.rul_as_of is None:
            raise ValueError("rul_days needs rul_as_of, the time of its estimate")


def baseline(resistances_in_time_order: Iterable[float | None], min_count: int) -> float | None:
    """The block's own resistance baseline: the median of its first ``min_count`` valid readings.

    None until there are that many; nulls and non-positive values (no working sensor reads 0 Ω)
    are skipped. Later readings never move it, so recomputing from the store gives the same value.
    """
    early: list[float] = []
    for value in resistances_in_time_order:
        if value is not None and value > 0:
            early.append(value)
            if len(early) == min_count:
                return statistics.median(early)
    return None


# A replaced block's resistance: a new block is back at a new block's few milliohms, well below
# the worn one it replaces (field practice replaces at +50 %); monitors' noise is a few percent.
RENEWAL_DROP = 0.10


def renewed_baseline(
    before: Sequence[float], after: Sequence[float], min_count: int, drop: float = RENEWAL_DROP
) -> float | None:
    """The baseline of a block put in where SoH stepped up (``central.rul.replacement_start``):
    ``baseline(after)`` of its first readings, if their median is at least ``drop`` below the
    median of the old block's last ones (``before``) — a new block, not a recovered one. None
    until there are ``min_count`` after, or when resistance did not step down with SoH.
    """
    old = [value for value in before if value is not None and value > 0]
    new = baseline(after, min_count)
    if not old or new is None or new > statistics.median(old) * (1.0 - drop):
        return None
    return new


def evaluate(
    battery: BatteryContext, readings: Sequence[ReadingLike], thresholds: AlertThresholds
) -> list[Condition]:
    """Conditions of the reading-based types for one battery, in ``AlertType`` order.

    ``readings`` are that battery's recent readings in any order (the batch, or a window from the
    store); ``thresholds`` are ``AlertSettings.for_model(model)`` of the battery's model.
    """
    conditions: list[Condition] = []
    newest = newest_reading(readings)
    latest_v = _latest(readings, newest, lambda r: r.voltage)
    if latest_v is not None:
        reading, volts = latest_v
        conditions.append(_voltage_high(volts, reading.ts, thresholds))
        conditions.append(_voltage_low(volts, reading.current, reading.ts, thresholds))
    latest_t = _latest(readings, newest, lambda r: r.temperature)
    if latest_t is not None:
        conditions.append(_temperature(latest_t[1], latest_t[0].ts, thresholds))
    latest_r = _latest(readings, newest, lambda r: r.internal_resistance)
    base = battery.baseline_resistance_ohm
    if latest_r is not None and base is not None and base > 0:
        conditions.append(_resistance(latest_r[1], base, latest_r[0].ts, thresholds))
    latest_soh = _latest(readings, newest, lambda r: r.soh_pct)
    if latest_soh is not None:
        conditions.append(_soh(latest_soh[1], latest_soh[0].ts, thresholds))
    if battery.rul_as_of is not None:
        conditions.extend(_rul(battery.rul_days, battery.rul_as_of, thresholds))
    return conditions


def evaluate_communication(
    now: datetime,
    settings: AlertSettings,
    *,
    last_data_at: datetime | None,
    known_since: datetime,
    site_offline_since: datetime | None = None,
) -> Condition:
    """communication_lost of one battery, judged at ``now`` (run it on a timer, not per batch).

    Present (warning) when the battery has been silent longer than ``missed_polls`` poll
    intervals, or while its site's agent state is ``offline`` (``site_offline_since`` set). A site
    that stopped reporting altogether is caught battery by battery through the silence.
    ``last_data_at`` is when central last received a reading of the battery, on central's clock so
    that an agent's clock skew cannot fake silence; ``known_since`` (when central learned of the
    battery) stands in for a battery that never reported. Clear, observed at ``last_data_at``,
    once data is fresh; a battery that never reported and is not yet overdue is neither.
    """
    reference = last_data_at if last_data_at is not None else known_since
    silence_s = float(round((now - reference).total_seconds()))
    limit = settings.communication_after_s
    tail = f"last reading {_stamp(last_data_at)}" if last_data_at is not None else "no reading yet"
    if site_offline_since is not None:
        message = f"Site agent offline since {_stamp(site_offline_since)} ({tail})"
    elif silence_s > limit:
        intervals = math.floor(silence_s / settings.poll_interval_s)
        message = f"No data from battery for {intervals} poll intervals ({tail})"
    else:
        return Condition(
            alert_type=AlertType.COMMUNICATION_LOST,
            severity=None,
            clear=last_data_at is not None,
            actual_value=silence_s,
            threshold_value=limit,
            observed_at=last_data_at if last_data_at is not None else now,
            message=None,
        )
    return Condition(
        alert_type=AlertType.COMMUNICATION_LOST,
        severity=Severity.WARNING,
        clear=False,
        actual_value=silence_s,
        threshold_value=limit,
        observed_at=now,
        message=message,
    )


def _temperature(celsius: float, ts: datetime, th: AlertThresholds) -> Condition:
    levels = _levels(th.temperature_warning_c, th.temperature_critical_c)
    verdict = _judge(celsius, True, levels, th.temperature_margin_c)
    limit = verdict.threshold
    message = (
        None
        if verdict.severity is None
        else (f"Battery temperature {_num(celsius, 1, limit)}°C exceeds threshold {limit:.1f}°C")
    )
    return _condition(AlertType.TEMPERATURE_HIGH, verdict, celsius, ts, message)


def _voltage_high(volts: float, ts: datetime, th: AlertThresholds) -> Condition:
    levels = _levels(th.voltage_high_warning_v, th.voltage_high_critical_v)
    verdict = _judge(volts, True, levels, th.voltage_margin_v)
    limit = verdict.threshold
    message = (
        None
        if verdict.severity is None
        else (f"Battery voltage {_num(volts, 2, limit)}V exceeds threshold {limit:.2f}V")
    )
    return _condition(AlertType.VOLTAGE_HIGH, verdict, volts, ts, message)


def _voltage_low(
    volts: float, current: float | None, ts: datetime, th: AlertThresholds
) -> Condition:
    """On float, the float thresholds with hysteresis. While discharging, or when the reading
    has no current to tell, only end of discharge (critical) counts, and nothing counts as clear:
    a discharge voltage says nothing about whether a float fault has gone."""
    if current is not None and current >= -th.discharge_current_a:
        levels = _levels(th.voltage_low_warning_v, th.voltage_low_critical_v)
        verdict = _judge(volts, False, levels, th.voltage_margin_v)
        limit = verdict.threshold
        message = (
            None
            if verdict.severity is None
            else (f"Battery voltage {_num(volts, 2, limit)}V below threshold {limit:.2f}V")
        )
        return _condition(AlertType.VOLTAGE_LOW, verdict, volts, ts, message)
    end = th.voltage_low_discharge_v
    if end is not None and volts < end:
        message = (
            f"Battery voltage {_num(volts, 2, end)}V below end-of-discharge threshold"
            f" {end:.2f}V while discharging"
        )
        verdict = _Verdict(Severity.CRITICAL, end, clear=False)
        return _condition(AlertType.VOLTAGE_LOW, verdict, volts, ts, message)
    verdict = _Verdict(None, th.voltage_low_warning_v, clear=False)
    return _condition(AlertType.VOLTAGE_LOW, verdict, volts, ts, None)


def _resistance(ohms: float, base: float, ts: datetime, th: AlertThresholds) -> Condition:
    drift = round((ohms - base) / base * 100.0, 1)
    levels = _levels(th.resistance_warning_pct, th.resistance_critical_pct)
    verdict = _judge(drift, True, levels, th.resistance_margin_pct)
    limit = verdict.threshold
    message = (
        None
        if verdict.severity is None
        else (
            f"Internal resistance {ohms * 1000:.2f}mΩ is {_num(drift, 0, limit)}% above baseline"
            f" {base * 1000:.2f}mΩ (threshold {limit:g}%)"
        )
    )
    return _condition(AlertType.RESISTANCE_DRIFT, verdict, drift, ts, message)


def _soh(soh: float, ts: datetime, th: AlertThresholds) -> Condition:
    levels = _levels(th.soh_warning_pct, th.soh_critical_pct)
    verdict = _judge(soh, False, levels, th.soh_margin_pct)
    limit = verdict.threshold
    message = (
        None
        if verdict.severity is None
        else (f"State of health {_num(soh, 1, limit)}% below threshold {limit:.1f}%")
    )
    return _condition(AlertType.SOH_DEGRADED, verdict, soh, ts, message)


def _rul(days: float | None, as_of: datetime, th: AlertThresholds) -> list[Condition]:
    """Two types, one severity each: rul_warning stays present while rul_critical is too, so
    reaching critical never auto-resolves the warning as if things had improved."""
    conditions = []
    for alert_type, level, threshold in (
        (AlertType.RUL_WARNING, Severity.WARNING, th.rul_warning_days),
        (AlertType.RUL_CRITICAL, Severity.CRITICAL, th.rul_critical_days),
    ):
        if days is None:
            verdict, message = _Verdict(None, threshold, clear=True), None
        else:
            verdict = _judge(days, False, ((level, threshold),), th.rul_margin_days)
            message = (
                f"Remaining useful life {math.floor(days)} days below threshold {threshold:g} days"
            )
        conditions.append(_condition(alert_type, verdict, days, as_of, message))
    return conditions


class _Verdict(NamedTuple):
    severity: Severity | None
    threshold: float  # of ``severity``; the mildest one when None
    clear: bool


def _levels(warning: float, critical: float) -> tuple[tuple[Severity, float], ...]:
    return ((Severity.WARNING, warning), (Severity.CRITICAL, critical))


def _judge(
    value: float,
    higher_is_worse: bool,
    levels: tuple[tuple[Severity, float], ...],
    margin: float,
) -> _Verdict:
    """``value`` against strict thresholds ``levels`` (mildest first), with hysteresis."""
    sign = 1.0 if higher_is_worse else -1.0
    reached = [(severity, limit) for severity, limit in levels if sign * (value - limit) > 0]
    if reached:
        severity, limit = reached[-1]
        return _Verdict(severity, limit, clear=False)
    mildest = levels[0][1]
    return _Verdict(None, mildest, clear=sign * (mildest - value) >= margin)


def _condition(
    alert_type: AlertType,
    verdict: _Verdict,
    actual: float | None,
    observed_at: datetime,
    message: str | None,
) -> Condition:
    return Condition(
        alert_type=alert_type,
        severity=verdict.severity,
        clear=verdict.clear,
        actual_value=actual,
        threshold_value=verdict.threshold,
        observed_at=observed_at,
        message=message if verdict.severity is not None else None,
    )


def newest_reading(readings: Sequence[ReadingLike]) -> ReadingLike | None:
    """The reading with the greatest ``ts``; of several, the last (``max`` keeps the first it
    meets, and meets them in reverse)."""
    return max(reversed(readings), key=_TS, default=None)


def _latest(
    readings: Sequence[ReadingLike],
    newest: ReadingLike | None,
    value_of: Callable[[ReadingLike], float | None],
) -> tuple[ReadingLike, float] | None:
    """The latest reading with a non-null value, and that value; of several at the latest
    time, the last. Usually ``newest`` (from ``newest_reading``) has the value: one scan serves all
    measurements."""
    if newest is not None:
        value = value_of(newest)
        if value is not None:
            return newest, value
    best: tuple[ReadingLike, float] | None = None
    for reading in readings:
        value = value_of(reading)
        if value is not None and (best is None or reading.ts >= best[0].ts):
            best = (reading, value)
    return best


def _num(value: float, places: int, threshold: float) -> str:
    """``value`` to ``places`` decimals, or up to two more where it would print like the
    threshold it is compared with ("45.04°C exceeds 45.0°C", not "45.0°C exceeds 45.0°C")."""
    for digits in range(places, places + 2):
        text = f"{value:.{digits}f}"
        if text != f"{threshold:.{digits}f}":
            return text
    return f"{value:.{places + 2}f}"


def _stamp(value: datetime) -> str:
    """``2025-11-30T08:00:00Z``, as the reference's messages show times."""
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
