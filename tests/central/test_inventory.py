"""Inventory: locations from the demo fleet file, UPS units, strings and batteries from births."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import func, select

from central.db.inventory import (
    Changes,
    UnknownLocationError,
    load_fleet_locations,
    upsert_birth,
)
from central.db.models import Battery, BatteryString, Location, UpsUnit
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from tests.central.fleet_support import demo_birth

SITE = "DC-CNX-01"


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_load_fleet_locations_twice_keeps_nine(session):
    fleet = load_fleet(demo_fleet_path())
    assert load_fleet_locations(session, fleet) == Changes(created=9)
    session.commit()
    assert load_fleet_locations(session, fleet) == Changes(unchanged=9)
    session.commit()
    assert _count(session, Location) == 9
    cnx = session.get(Location, SITE)
    assert (cnx.name, cnx.latitude, cnx.created_at.tzinfo) == (
        "Chiang Mai Data Center",
        18.7883,
        UTC,
    )


def test_birth_creates_the_site_inventory_once(session):
    load_fleet_locations(session, load_fleet(demo_fleet_path()))
    first = upsert_birth(session, demo_birth())
    session.commit()
    assert (first.ups.created, first.strings.created, first.batteries.created) == (2, 6, 216)
    stamp = session.get(Battery, ids.battery_id(SITE, 1, 1, 1)).updated_at
    session.expunge_all()
    second = upsert_birth(session, demo_birth())
    session.commit()
    assert second.ups == Changes(unchanged=2)
    assert second.strings == Changes(unchanged=6)
    assert second.batteries == Changes(unchanged=216)
    assert session.get(Battery, ids.battery_id(SITE, 1, 1, 1)).updated_at == stamp
    assert (_count(session, UpsUnit), _count(session, BatteryString)) == (2, 6)
    assert _count(session, Battery) == 216


def test_changed_serial_number_updates_the_battery(session):
    load_fleet_locations(session, load_fleet(demo_fleet_path()))
    upsert_birth(session, demo_birth())
    session.commit()
    changed = upsert_birth(session, demo_birth(serial_suffix="-R"))
    session.commit()
    assert changed.batteries == Changes(updated=216)
    session.expunge_all()
    battery = session.get(Battery, ids.battery_id(SITE, 2, 3, 36))
    assert battery.serial_number == "CSB-23036-R"
    assert battery.string_id == ids.string_id(SITE, 2, 3)
    assert battery.updated_at >= battery.created_at


def test_birth_of_an_unknown_site_is_refused(session):
    with pytest.raises(UnknownLocationError, match=SITE):
        upsert_birth(session, demo_birth())
