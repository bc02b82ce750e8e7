"""``/api/v1/locations``: the fleet's sites with their statistics, and each site's batteries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import jwt_required

from central.api import responses
from central.api.auth import current_active_user
from central.api.batteries import battery_page
from central.api.errors import ApiError
from central.api.extensions import db
from central.api.openapi import operation
from central.api.schemas import LocationsQuery, Page, parse_query
from central.db import queries
from central.db.models import Location
from central.db.queries import LocationStats
from common.timeutil import utc_now

bp = Blueprint("locations", __name__, url_prefix="/api/v1/locations")

LOCATION_PARAM = {"location_id": "DC-CNX-01"}


def location_item(location: Location, stats: LocationStats | None) -> dict[str, Any]:
    """The reference's location object; the statistics only when asked for."""
    item: dict[str, Any] = {
        "location_id": location.location_id,
        "name": location.name,
        "region": location.region,
        "city": location.city,
        "country": location.country,
        "latitude": location.latitude,
        "longitude": location.longitude,
        "temp_offset_c": location.temp_offset_c,
        "humidity_offset_pct": location.humidity_offset_pct,
        "power_outage_frequency_per_year": location.power_outage_frequency_per_year,
    }
    if stats is not None:
        item.update(
            total_batteries=stats.total_batteries,
            active_batteries=stats.active_batteries,
            critical_batteries=stats.critical_batteries,
            average_soh=stats.average_soh,
            active_alerts=stats.active_alerts,
        )
    return item


def _stats(location_id: str | None = None) -> dict[str, LocationStats]:
    window = timedelta(seconds=current_app.config["BRM_ACTIVE_WITHIN_S"])
    return queries.location_stats(db.session, utc_now() - window, location_id)


def _get_location(location_id: str) -> Location:
    location = db.session.get(Location, location_id)
    if location is None:
        raise ApiError(404, f"Location {location_id} not found")
    return location


@bp.get("")
@jwt_required()
@operation(
    summary="List locations with battery statistics",
    tag="locations",
    response=responses.LocationList,
    query=LocationsQuery,
    description=(
        "`active_batteries` counts batteries that reported within the server's active window "
        "(api.active_within_s); `critical_batteries` those whose status is critical."
    ),
)
def list_locations() -> ResponseReturnValue:
    current_active_user()
    query = parse_query(LocationsQuery)
    locations = queries.list_locations(db.session)
    stats = _stats() if query.include_stats else None
    items = [
        location_item(loc, None if stats is None else stats.get(loc.location_id, LocationStats()))
        for loc in locations
    ]
    return jsonify(locations=items, total=len(items))


@bp.get("/<location_id>")
@jwt_required()
@operation(
    summary="Location detail with statistics",
    tag="locations",
    response=responses.Location,
    path_params=LOCATION_PARAM,
)
def get_location(location_id: str) -> ResponseReturnValue:
    current_active_user()
    location = _get_location(location_id)
    stats = _stats(location_id).get(location_id, LocationStats())
    return jsonify(location_item(location, stats))


@bp.get("/<location_id>/batteries")
@jwt_required()
@operation(
    summary="Batteries of one location",
    tag="locations",
    response=responses.BatteryList,
    query=Page,
    path_params=LOCATION_PARAM,
)
def location_batteries(location_id: str) -> ResponseReturnValue:
    current_active_user()
    query = parse_query(Page)
    _get_location(location_id)
    return battery_page(db.session, location_id, query.skip, query.limit)
