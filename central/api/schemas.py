"""Request bodies as pydantic models; a body that does not fit is a 422 naming field and issue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from central.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(_Body):
    refresh_token: str = Field(min_length=1)


class ChangePasswordBody(_Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class CreateUserBody(_Body):
    user_id: str = Field(min_length=1, max_length=64)
    username: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=1024)
    full_name: str | None = Field(None, max_length=200)
    role: str = "viewer"


class UpdateUserBody(_Body):
    email: str | None = Field(None, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    full_name: str | None = Field(None, max_length=200)
    role: str | None = None
    is_active: bool | None = None


class Page(_Body):
    skip: int = Field(0, ge=0, le=2**31 - 1, description="pagination offset")
    limit: int = Field(100, ge=1, le=1000, description="page size")


class LocationsQuery(_Body):
    include_stats: bool = Field(True, description="include battery counts and averages")


class BatteriesQuery(Page):
    location_id: str | None = Field(None, max_length=64, description="only this location")


# Readings exist nowhere outside these years; the bounds keep "start = end - 24 h" in range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    """A timestamp without a zone is read as UTC, as the API's timestamps all are."""
    if value is None:
        return None
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}")
    return utc


class TelemetryQuery(_Body):
    start: datetime | None = Field(None, description="default: 24 hours before end (or now)")
    end: datetime | None = Field(None, description="default: now")
    limit: int = Field(1000, ge=1, le=10000, description="at most this many, the newest")

    _utc_times = field_validator("start", "end")(_utc)


class SohHistoryQuery(_Body):
    days: int = Field(730, ge=1, le=3650, description="the last this many days")


class AlertsQuery(Page):
    location_id: str | None = Field(None, max_length=64, description="only this location")
    battery_id: str | None = Field(None, max_length=64, description="only this battery")
    severity: Literal["info", "warning", "critical"] | None = Field(
        None, description="only this severity"
    )
    alert_type: str | None = Field(
        None, max_length=64, description="only this type, e.g. voltage_high, temperature_high"
    )
    active_only: bool = Field(True, description="only alerts not resolved yet")
    acknowledged: bool | None = Field(
        None, description="only acknowledged (true) or only unacknowledged (false) alerts"
    )
    start_date: datetime | None = Field(
        None, description="triggered at or after this time (without a zone: UTC)"
    )
    end_date: datetime | None = Field(
        None, description="triggered at or before this time (without a zone: UTC)"
    )

    _utc_times = field_validator("start_date", "end_date")(_utc)


class AlertStatsQuery(_Body):
    location_id: str | None = Field(None, max_length=64, description="only this location")
    days: int = Field(7, ge=1, le=365, description="the window: alerts triggered in the last days")


class AcknowledgeBody(_Body):
    note: str | None = Field(None, max_length=2000, description="why, or what was done")


def _validation_error(exc: ValidationError, where: str) -> ApiError:
    details = [
        {
            "loc": [where, *(str(part) for part in error["loc"])],
            "field": ".".join(str(part) for part in error["loc"]) or where,
            "msg": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['msg']}" for d in details)
    return ApiError(422, message, details)


def _unstorable(value: object, loc: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where ``value`` holds a string no database can store (NUL, lone surrogate), if anywhere."""
    if isinstance(value, str):
        if "\x00" in value:
            return loc
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    if isinstance(value, dict):
        items: list[tuple[object, object]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return None
    for key, item in items:
        found = _unstorable(key, loc) or _unstorable(item, (*loc, str(key)))
        if found:
            return found
    return None


def check_text(value: object, where: str) -> None:
    """Refuse (422) text with NUL characters or lone surrogates, before it reaches the store."""
    loc = _unstorable(value, (where,))
    if loc is not None:
        field = ".".join(loc[1:]) or where
        msg = "contains a NUL character or invalid Unicode"
        detail = {"loc": list(loc), "field": field, "msg": msg, "type": "string_unicode"}
        raise ApiError(422, f"{field}: {msg}", [detail])


def check_path() -> None:
    """``before_request``: the URL's path parameters pass ``check_text`` too."""
    check_text(request.view_args or {}, "path")


def parse_body(model: type[M]) -> M:
    """The JSON body as ``model``; raise a 422 ``ApiError`` otherwise."""
    data: Any = request.get_json(silent=True)
    if not isinstance(data, dict):
        detail = {"loc": ["body"], "field": "body", "msg": "Expected a JSON object", "type": "json"}
        raise ApiError(422, "body: Expected a JSON object", [detail])
    check_text(data, "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, "body") from exc


def _validated(model: type[M], fields: dict[str, str], where: str) -> M:
    check_text(fields, where)
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _validation_error(exc, where) from exc


def parse_query(model: type[M]) -> M:
    """The query string as ``model``; raise a 422 ``ApiError`` otherwise."""
    return _validated(model, request.args.to_dict(), "query")


class ResearchListQuery(_Body):
    page: int = Field(1, ge=1, le=2**31 - 1, description="page number, from 1")
    page_size: int = Field(20, ge=1, le=100, description="items per page")
    manufacturer: str | None = Field(None, max_length=200, description="only this manufacturer")


class CyclesQuery(_Body):
    page: int = Field(1, ge=1, le=2**31 - 1, description="page number, from 1")
    page_size: int = Field(20, ge=1, le=100, description="cycles per page")
    cycle_index: int | None = Field(None, ge=0, le=2**31 - 1, description="only this cycle")
    arrays: bool = Field(
        True, description="false: the per-sample arrays come back empty (SoH and RUL plots)"
    )


class ResearchMetadata(_Body):
    """What an upload or a PATCH may say of a dataset (each optional)."""

    manufacturer: str | None = Field(None, min_length=1, max_length=200)
    chemistry: str | None = Field(None, min_length=1, max_length=100)
    nominal_capacity: float | None = Field(None, gt=0, le=100_000, description="Ah")
    eol_threshold: float | None = Field(
        None, gt=0, lt=1, description="end of life: SoH below this fraction (default 0.8)"
    )


def parse_form(model: type[M]) -> M:
    """The request's form fields as ``model``; raise a 422 ``ApiError`` otherwise."""
    return _validated(model, request.form.to_dict(), "form")
