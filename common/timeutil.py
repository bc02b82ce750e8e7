"""UTC time helpers: every timestamp on the wire is RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is refused rather than guessed at."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def to_rfc3339(value: datetime) -> str:
    """``2025-11-30T08:00:00.123Z``: milliseconds, always UTC, always ``Z``."""
    utc = ensure_utc(value)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset and return it in UTC."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string, got {type(text).__name__}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}") from exc
    return ensure_utc(parsed)


def from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_unix(value: datetime) -> float:
    return ensure_utc(value).timestamp()


def truncate_ms(value: datetime) -> datetime:
    """Drop sub-millisecond digits so a reading's identity survives a JSON round trip."""
    utc = ensure_utc(value)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)
