"""The status word of a battery, and the check that keeps unstorable text out of the store."""

from __future__ import annotations

import pytest

from central.api.errors import ApiError
from central.api.schemas import check_text
from central.battery_status import Status, battery_status, worst_severity


@pytest.mark.parametrize(
    ("has_reading", "soh", "alert", "expected"),
    [
        (True, 95.0, None, Status.HEALTHY),
        (True, 95.0, "info", Status.HEALTHY),
        (True, 85.0, None, Status.HEALTHY),  # the band's edge is still healthy
        (True, 84.9, None, Status.WARNING),
        (True, 80.0, None, Status.WARNING),
        (True, 79.9, None, Status.CRITICAL),
        (True, 95.0, "warning", Status.WARNING),
        (True, 95.0, "critical", Status.CRITICAL),
        (True, 82.0, "critical", Status.CRITICAL),
        (True, None, None, Status.HEALTHY),  # a reading without SoH says nothing against it
        (False, None, None, Status.UNKNOWN),
        (False, None, "critical", Status.CRITICAL),
    ],
)
def test_battery_status(has_reading, soh, alert, expected) -> None:
    assert battery_status(has_reading, soh, alert) is expected


def test_worst_severity() -> None:
    assert worst_severity([]) is None
    assert worst_severity(["info", "critical", "warning"]) == "critical"
    assert worst_severity(["info", "warning"]) == "warning"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"username": "a\x00b"}, "username"),
        ({"nested": {"deep": ["ok", "bad\ud800"]}}, "nested.deep.1"),
        ({"bad\x00key": 1}, "body"),
    ],
)
def test_unstorable_text_is_refused_with_its_field(value, field) -> None:
    with pytest.raises(ApiError) as caught:
        check_text(value, "body")
    assert caught.value.status == 422
    assert caught.value.details[0]["field"] == field


def test_ordinary_text_passes() -> None:
    check_text({"name": "Chiang Mai °C ✓", "n": [1, 2.5, None, True]}, "body")
