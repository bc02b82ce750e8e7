"""Response bodies of the fleet API as pydantic models: the OpenAPI document is generated from
them, and the tests check every response against that document.

Views build plain dicts (pydantic on 1,000 rows per list call would cost more than the query);
these models are the contract those dicts are checked against.
"""

from __future__ import annotations

import datetime
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

Timestamp = str  # RFC 3339 UTC, e.g. 2025-11-30T08:00:00Z


def _timestamp(description: str) -> object:
    return Field(description=description, json_schema_extra={"format": "date-time"})


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Response):
    code: str = Field(description="RESOURCE_NOT_FOUND, VALIDATION_ERROR, UNAUTHORIZED, ...")
    message: str
    details: list[object]
    trace_id: str = Field(description="also sent as the X-Request-ID header")


class ErrorEnvelope(_Response):
    """Every error: ``detail`` for fleet-API clients, ``error`` for research-API ones."""

    detail: str
    error: ErrorBody


class Message(_Response):
    message: str


class UserSummary(_Response):
    user_id: str
    username: str
    email: str
    full_name: str | None
    role: str = Field(description="admin, engineer or viewer")
    is_active: bool


class UserResponse(UserSummary):
    created_at: Timestamp = _timestamp("UTC")
    updated_at: Timestamp = _timestamp("UTC")


class UserList(_Response):
    users: list[UserResponse]
    total: int


class LoginResponse(_Response):
    access_token: str
    refresh_token: str
    token_type: str = Field(description="always bearer")
    expires_in: int = Field(description="access token lifetime, seconds")
    user: UserSummary


class RefreshResponse(_Response):
    access_token: str
    token_type: str
    expires_in: int


class Health(_Response):
    status: str
    service: str
    version: str
    environment: str


class Ready(_Response):
    status: str = Field(description="ready or not_ready")
    service: str
    database: str | None = None
    broker: str | None = None
    error: str | None = None


class Location(_Response):
    location_id: str
    name: str
    region: str
    city: str
    country: str
    latitude: float
    longitude: float
    temp_offset_c: float
    humidity_offset_pct: float
    power_outage_frequency_per_year: float
    total_batteries: int | None = Field(None, description="with include_stats")
    active_batteries: int | None = Field(None, description="reported within the active window")
    critical_batteries: int | None = Field(None, description="status critical")
    average_soh: float | None = Field(None, description="mean latest SoH, %")
    active_alerts: int | None = None


class LocationList(_Response):
    locations: list[Location]
    total: int


class TelemetryPoint(_Response):
    timestamp: Timestamp = _timestamp("when the reading was taken, UTC")
    voltage: float | None = Field(description="V")
    current: float | None = Field(description="A, negative = discharge")
    temperature: float | None = Field(description="°C")
    internal_resistance: float | None = Field(description="Ω")
    soc_pct: float | None
    soh_pct: float | None


class BatteryItem(_Response):
    battery_id: str
    serial_number: str
    position: int
    manufacturer: str
    model: str
    nominal_voltage_v: float
    nominal_capacity_ah: float
    installed_date: date
    warranty_months: int
    string_id: str
    created_at: Timestamp = _timestamp("UTC")
    updated_at: Timestamp = _timestamp("UTC")
    latest_telemetry: TelemetryPoint | None
    status: str = Field(description="healthy, warning, critical, or unknown (no reading yet)")
    active_alerts: int


class BatteryList(_Response):
    batteries: list[BatteryItem]
    total: int


class StringInfo(_Response):
    string_id: str
    position: int = Field(description="the string's number within its UPS")
    ups_id: str


class LocationInfo(_Response):
    location_id: str
    name: str


class Rul(_Response):
    """A battery's remaining useful life: the latest estimate from its SoH history."""

    status: str = Field(
        description="fading (rul_days is a number), open_ended (no end of life within 20 "
        "years: rul_days null) or end_of_life (rul_days 0)"
    )
    rul_days: float | None = Field(description="days from computed_at to SoH 80 %")
    rul_low_days: float | None = Field(description="early end of the interval")
    rul_high_days: float | None = Field(description="late end of the interval; null: open")
    interval_pct: int = Field(description="the interval's coverage, e.g. 80")
    predicted_eol_date: date | None
    soh_now_pct: float = Field(description="the fitted SoH at computed_at, %")
    fade_pct_per_year: float = Field(description="the fitted fade rate now, SoH % per year")
    n_points: int = Field(description="readings used")
    n_days: int = Field(description="days with a reading")
    method: str = Field(description="huber-{linear|quadratic|hinge}[-seasonal]")
    computed_at: Timestamp = _timestamp("the time the estimate counts from, UTC")


class BatteryDetail(BatteryItem):
    age_days: int = Field(description="days since installation")
    is_in_warranty: bool
    string_info: StringInfo
    location_info: LocationInfo
    rul: Rul | None = Field(description="null until the battery has enough SoH history")


class TelemetrySeries(_Response):
    battery_id: str
    start: Timestamp = _timestamp("UTC")
    end: Timestamp = _timestamp("UTC")
    data: list[TelemetryPoint] = Field(description="oldest first; the newest `limit` readings")
    count: int


class SohDay(_Response):
    date: datetime.date = Field(description="the UTC day")
    t: Timestamp = _timestamp("the mean time of the day's readings, UTC")
    soh_pct: float = Field(description="the median SoH of the day's readings, %")
    n: int = Field(description="readings that day")


class SohHistory(_Response):
    battery_id: str
    days: int
    points: list[SohDay] = Field(description="one a day with readings, oldest first")
    rul: Rul | None = Field(description="the battery detail's `rul` object")


class AlertResponse(_Response):
    """An alert"""

    id: str = Field(description="UUID")
    alert_id: str = Field(description="ALT-{battery_id}-{YYYY-MM-DD}-{alert_type}-{unique}")
    battery_id: str
    alert_type: str = Field(
        description="voltage_high, voltage_low, temperature_high, resistance_drift, "
        "soh_degraded, rul_warning, rul_critical or communication_lost"
    )
    severity: str = Field(description="info, warning or critical")
    message: str
    threshold_value: float | None
    actual_value: float | None
    triggered_at: Timestamp = _timestamp("UTC")
    resolved_at: Timestamp | None = _timestamp("UTC; null while active")
    is_acknowledged: bool
    acknowledged_at: Timestamp | None = _timestamp("UTC")
    acknowledged_by: str | None = Field(description="user_id of who acknowledged it")
    acknowledgment_note: str | None
    created_at: Timestamp = _timestamp("UTC")
    updated_at: Timestamp = _timestamp("UTC")
    is_active: bool = Field(description="not resolved")
    is_pending: bool = Field(description="active and not acknowledged")


class AlertList(_Response):
    alerts: list[AlertResponse] = Field(description="newest triggered first")
    total: int = Field(description="alerts matching every filter")
    active_count: int = Field(
        description="active alerts matching the filters other than active_only and acknowledged"
    )
    pending_count: int = Field(
        description="active, unacknowledged alerts matching the filters other than active_only "
        "and acknowledged"
    )


class AlertDetail(AlertResponse):
    """An alert with its battery's context"""

    battery_serial: str | None = Field(description="null if the battery is not in the inventory")
    battery_position: int | None = Field(description="the block's position in its string")
    location_id: str
    location_name: str | None


class AlertStats(_Response):
    """Alert statistics"""

    total_alerts: int = Field(description="triggered within the window")
    active_alerts: int = Field(description="active now, whenever triggered")
    critical_alerts: int = Field(description="active now, critical")
    warning_alerts: int = Field(description="active now, warning")
    info_alerts: int = Field(description="active now, info")
    acknowledged_alerts: int = Field(description="triggered within the window, acknowledged")
    alerts_by_type: dict[str, int] = Field(description="triggered within the window, per type")
    alerts_by_location: dict[str, int] = Field(
        description="triggered within the window, per location_id"
    )


class ResearchBattery(_Response):
    """One cell of an uploaded research file."""

    id: int
    filename: str = Field(description="the uploaded file's name")
    total_cycles: int
    nominal_capacity: float = Field(description="Ah")
    manufacturer: str | None
    chemistry: str | None
    created_at: Timestamp = _timestamp("UTC")
    updated_at: Timestamp = _timestamp("UTC")
    cell_label: str = Field(description="the cell's name in its file (beyond the reference)")
    cell_index: int = Field(description="1-based position of the cell in its file")
    layout: str = Field(description="nasa_pcoe, severson_batch or generic")
    eol_threshold: float = Field(description="end of life: SoH below this fraction (0-1)")
    stated_cycle_life: int | None = Field(description="the cycle life the file itself states")
    upload_id: str = Field(description="shared by every cell of one uploaded file")


class ResearchUpload(ResearchBattery):
    """The first cell created, with every cell of the file in ``cells``."""

    cells: list[ResearchBattery]


class PageMeta(_Response):
    page: int
    page_size: int
    total: int
    total_pages: int


class ResearchBatteryList(_Response):
    items: list[ResearchBattery]
    meta: PageMeta


class ResearchCycle(_Response):
    id: int
    battery_id: int
    cycle_index: int
    voltage: list[float | None] = Field(description="V")
    current: list[float | None] = Field(description="A")
    temperature: list[float | None] = Field(description="°C")
    soh: float | None = Field(description="discharge capacity / nominal capacity (0-1)")
    rul: float | None = Field(description="cycles left until SoH first falls below eol_threshold")
    capacity_ah: float | None = Field(description="the cycle's discharge capacity")
    time: list[float | None] = Field(description="s, one per voltage sample where the file has it")
    discharge_capacity: list[float | None] = Field(
        description="Ah at each voltage point, where the file gives capacity on a voltage grid"
    )
    ambient_temperature: float | None = Field(description="°C, where the file states it")


class ResearchCycleList(_Response):
    items: list[ResearchCycle]
    meta: PageMeta


class PredictionInterval(_Response):
    low: float = Field(description="cycles")
    high: float = Field(description="cycles")
    level: float = Field(description="coverage the interval was fitted for (0-1)")


class EarlyLifePrediction(_Response):
    """Cycle life predicted from the first 100 cycles (Severson et al. 2019 features)."""

    battery_id: int
    model: str
    as_of_cycle: int = Field(description="the prediction uses cycles up to this one")
    predicted_cycle_life: float = Field(description="cycles until SoH falls below 80 %")
    predicted_rul: float = Field(description="predicted_cycle_life - as_of_cycle, at least 0")
    interval: PredictionInterval
    features: dict[str, float]
    actual_cycle_life: int | None = Field(
        description="the cell's real cycle life where known (stated by the file, or observed)"
    )
    error_cycles: float | None = Field(description="predicted - actual, where actual is known")
