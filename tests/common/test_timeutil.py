from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.timeutil import from_unix, parse_rfc3339, to_rfc3339, to_unix, truncate_ms


def test_rfc3339_has_milliseconds_and_z():
    value = datetime(2025, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)
    assert to_rfc3339(value) == "2025-11-30T08:00:00.123Z"


def test_other_offsets_become_utc():
    bangkok = timezone(timedelta(hours=7))
    assert to_rfc3339(datetime(2025, 11, 30, 15, 0, tzinfo=bangkok)) == "2025-11-30T08:00:00.000Z"
    assert parse_rfc3339("2025-11-30T15:00:00+07:00") == datetime(2025, 11, 30, 8, tzinfo=UTC)


def test_naive_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        to_rfc3339(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        parse_rfc3339("2025-11-30T08:00:00")


@pytest.mark.parametrize("bad", ["yesterday", "", "2025-13-01T00:00:00Z", 5])
def test_garbage_is_refused(bad):
    with pytest.raises(ValueError):
        parse_rfc3339(bad)


def test_unix_round_trip_and_truncation():
    value = from_unix(1_764_489_600.1234567)
    assert to_unix(truncate_ms(value)) == pytest.approx(1_764_489_600.123, abs=1e-6)
    assert parse_rfc3339(to_rfc3339(value)) == truncate_ms(value)
