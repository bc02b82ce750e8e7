"""``/api/v1/research/batteries``: the research reference's battery datasets from ``.mat`` files.

Mounted under ``/research`` because the fleet API owns ``/api/v1/batteries``. Every role may
read; uploading, editing and deleting take an engineer or an admin.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import jwt_required
from sqlalchemy import delete, func, select
from sqlalchemy.orm import defer

from central.api import responses
from central.api.auth import current_active_user, require_engineer
from central.api.errors import ApiError
from central.api.extensions import db
from central.api.openapi import operation
from central.api.schemas import (
    CyclesQuery,
    ResearchListQuery,
    ResearchMetadata,
    check_text,
    parse_body,
    parse_form,
    parse_query,
)
from central.api.uploads import uploaded_file
from central.db.models import ResearchBattery, ResearchCycle
from central.research import early_life
from central.research.cells import InvalidMatFileError
from central.research.store import UploadMetadata, relabel, unpack
from central.research.worker import ParseLimits, store_in_child
from central.wire_format import timestamp

log = logging.getLogger(__name__)
T = TypeVar("T")
bp = Blueprint("research", __name__, url_prefix="/api/v1/research/batteries")

BATTERY_PARAM = {"battery_id": "1"}
INVALID_FILE = "Unable to parse .mat file"
MAX_ID = 2**31 - 1


def battery_json(battery: ResearchBattery) -> dict[str, Any]:
    """The reference's battery object, then what this server adds."""
    return {
        "id": battery.id,
        "filename": battery.filename,
        "total_cycles": battery.total_cycles,
        "nominal_capacity": battery.nominal_capacity,
        "manufacturer": battery.manufacturer,
        "chemistry": battery.chemistry,
        "created_at": timestamp(battery.created_at),
        "updated_at": timestamp(battery.updated_at),
        "cell_label": battery.cell_label,
        "cell_index": battery.cell_index,
        "layout": battery.layout,
        "eol_threshold": battery.eol_threshold,
        "stated_cycle_life": battery.stated_cycle_life,
        "upload_id": battery.upload_id,
    }


def _cycle_json(cycle: ResearchCycle, grid: bytes | None, arrays: bool = True) -> dict[str, Any]:
    """The reference's cycle; without ``arrays`` its arrays are empty (and never loaded)."""
    if arrays:
        voltage = cycle.voltage if cycle.voltage is not None else grid
        blobs = (voltage, cycle.current, cycle.temperature, cycle.time_s, cycle.discharge_capacity)
        series = [unpack(blob).tolist() for blob in blobs]
    else:
        series = [[], [], [], [], []]
    voltage_v, current, temperature, time_s, discharge_capacity = series
    return {
        "id": cycle.id,
        "battery_id": cycle.battery_id,
        "cycle_index": cycle.cycle_index,
        "voltage": voltage_v,
        "current": current,
        "temperature": temperature,
        "soh": cycle.soh,
        "rul": cycle.rul,
        "capacity_ah": cycle.capacity_ah,
        "time": time_s,
        "discharge_capacity": discharge_capacity,
        "ambient_temperature": cycle.ambient_temperature,
    }


def _page(
    model: type[T],
    where: list[Any],
    order: Any,
    page: int,
    page_size: int,
    *,
    options: Sequence[Any] = (),
) -> tuple[Sequence[T], dict[str, int]]:
    """One page of ``model`` rows and the reference's ``meta`` (a page past the last is empty);
    ``options``: the ORM's loader options (columns left unloaded)."""
    total = db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0
    rows = db.session.scalars(
        select(model)
        .options(*options)
        .where(*where)
        .order_by(order)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    meta = {
        "page": page,
        "page_size": page_size,
        "total": total,
        "total_pages": math.ceil(total / page_size),
    }
    return rows, meta


def _get_battery(battery_id: str) -> ResearchBattery:
    known = battery_id.isascii() and battery_id.isdigit() and int(battery_id) <= MAX_ID
    battery = db.session.get(ResearchBattery, int(battery_id)) if known else None
    if battery is None:
        raise ApiError(404, f"Battery with ID {battery_id} not found")
    return battery


@bp.get("")
@jwt_required()
@operation(
    summary="List research battery datasets",
    tag="research",
    response=responses.ResearchBatteryList,
    query=ResearchListQuery,
    description="Oldest first. A page past the last gives an empty `items`.",
)
def list_batteries() -> ResponseReturnValue:
    current_active_user()
    query = parse_query(ResearchListQuery)
    where = []
    if query.manufacturer is not None:
        where.append(ResearchBattery.manufacturer == query.manufacturer)
    rows, meta = _page(ResearchBattery, where, ResearchBattery.id, query.page, query.page_size)
    return jsonify(items=[battery_json(b) for b in rows], meta=meta)


@bp.post("")
@jwt_required()
@operation(
    summary="Upload a .mat file of battery cycling data",
    tag="research",
    response=responses.ResearchUpload,
    status=201,
    form=ResearchMetadata,
    files=("file",),
    errors=(400, 403, 413),
    description=(
        "MATLAB v4/v5/v7 and v7.3 (HDF5) files; layouts: NASA Ames PCoE, Severson et al. 2019 "
        "batch files, and the generic layout of the README. A file of several cells creates one "
        "dataset per cell: the body is the first, with all of them in `cells`. At most "
        "`research.max_upload_bytes` (100 MB; 413 beyond). A file that cannot be used is a 400 "
        "`INVALID_FILE_FORMAT` whose details say why; nothing of it is stored."
    ),
)
def upload_battery() -> ResponseReturnValue:
    user = require_engineer()
    settings = current_app.config["BRM_RESEARCH"]
    path, filename = uploaded_file("file", settings.max_upload_bytes)
    check_text(filename, "file")
    form = parse_form(ResearchMetadata)
    meta = UploadMetadata(
        filename=filename,
        manufacturer=form.manufacturer,
        chemistry=form.chemistry,
        nominal_capacity=form.nominal_capacity,
        eol_threshold=form.eol_threshold,
        uploaded_by=user.user_id,
    )
    upload_id = str(uuid.uuid4())
    limits = ParseLimits(
        memory_bytes=settings.parse_memory_bytes,
        timeout_s=settings.parse_timeout_s,
        max_decompressed_bytes=settings.max_decompressed_bytes,
        default_eol_threshold=settings.eol_threshold,
    )
    try:
        report = store_in_child(db.session, path, meta, upload_id, limits)
    except InvalidMatFileError as exc:
        db.session.rollback()
        log.info("upload %s (%s) refused: %s", upload_id, filename, "; ".join(exc.issues))
        details = [{"field": "file", "issue": issue} for issue in exc.issues]
        raise ApiError(400, INVALID_FILE, details, code="INVALID_FILE_FORMAT") from exc
    db.session.commit()
    batteries = db.session.scalars(
        select(ResearchBattery)
        .where(ResearchBattery.upload_id == upload_id)
        .order_by(ResearchBattery.cell_index)
    ).all()
    log.info(
        "upload %s (%s): %d cells read in %.2f s (reader memory +%.0f MiB) and stored",
        upload_id,
        filename,
        len(batteries),
        report.seconds,
        report.rss_growth_bytes / 1024**2,
        extra={"reader_rss_growth_bytes": report.rss_growth_bytes},
    )
    items = [battery_json(b) for b in batteries]
    return jsonify({**items[0], "cells": items}), 201


@bp.get("/<battery_id>")
@jwt_required()
@operation(
    summary="One research battery dataset",
    tag="research",
    response=responses.ResearchBattery,
    path_params=BATTERY_PARAM,
)
def get_battery(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    return jsonify(battery_json(_get_battery(battery_id)))


@bp.patch("/<battery_id>")
@jwt_required()
@operation(
    summary="Update a dataset's metadata",
    tag="research",
    response=responses.ResearchBattery,
    body=ResearchMetadata,
    errors=(403,),
    path_params=BATTERY_PARAM,
    description=(
        "Only the fields given change; `manufacturer` and `chemistry` may be null. A new "
        "`nominal_capacity` or `eol_threshold` relabels every cycle's `soh` and `rul`."
    ),
)
def update_battery(battery_id: str) -> ResponseReturnValue:
    require_engineer()
    body = parse_body(ResearchMetadata)
    battery = _get_battery(battery_id)
    for name in ("nominal_capacity", "eol_threshold"):
        if name in body.model_fields_set and getattr(body, name) is None:
            detail = {"loc": ["body", name], "field": name, "msg": "may not be null"}
            raise ApiError(422, f"{name}: may not be null", [{**detail, "type": "none"}])
    changes = body.model_dump(include=body.model_fields_set)
    relabelled = any(
        name in changes and changes[name] != getattr(battery, name)
        for name in ("nominal_capacity", "eol_threshold")
    )
    for name, value in changes.items():
        setattr(battery, name, value)
    db.session.flush()
    if relabelled:
        relabel(db.session, battery)
    db.session.commit()
    return jsonify(battery_json(battery))


@bp.delete("/<battery_id>")
@jwt_required()
@operation(
    summary="Delete a dataset and its cycles",
    tag="research",
    response=None,
    status=204,
    errors=(403,),
    path_params=BATTERY_PARAM,
)
def delete_battery(battery_id: str) -> ResponseReturnValue:
    require_engineer()
    battery = _get_battery(battery_id)
    db.session.execute(delete(ResearchCycle).where(ResearchCycle.battery_id == battery.id))
    db.session.delete(battery)
    db.session.commit()
    return "", 204


@bp.get("/<battery_id>/cycles")
@jwt_required()
@operation(
    summary="A dataset's cycles with their arrays, SoH and RUL label",
    tag="research",
    response=responses.ResearchCycleList,
    query=CyclesQuery,
    path_params=BATTERY_PARAM,
    description=(
        "Ordered by `cycle_index`. `soh` = discharge capacity / nominal capacity; `rul` = cycles "
        "left until SoH first falls below the dataset's `eol_threshold` (null where the cell "
        "never reached it). Severson cells carry `discharge_capacity` on the voltage grid. "
        "`arrays=false` (beyond the reference) leaves every array empty: a plot of SoH and RUL "
        "per cycle gets a page in a few kB instead of megabytes."
    ),
)
def list_cycles(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    query = parse_query(CyclesQuery)
    battery = _get_battery(battery_id)
    where = [ResearchCycle.battery_id == battery.id]
    if query.cycle_index is not None:
        where.append(ResearchCycle.cycle_index == query.cycle_index)
    blobs = (
        ResearchCycle.voltage,
        ResearchCycle.current,
        ResearchCycle.temperature,
        ResearchCycle.time_s,
        ResearchCycle.discharge_capacity,
    )
    options = () if query.arrays else [defer(column) for column in blobs]
    order = ResearchCycle.cycle_index
    rows, meta = _page(ResearchCycle, where, order, query.page, query.page_size, options=options)
    return jsonify(
        items=[_cycle_json(c, battery.voltage_grid, query.arrays) for c in rows], meta=meta
    )


def _actual_cycle_life(battery: ResearchBattery) -> int | None:
    """The file's stated life at this threshold, else the first cycle labelled end of life."""
    if battery.stated_cycle_life is not None and (
        battery.stated_life_threshold == battery.eol_threshold
    ):
        return battery.stated_cycle_life
    return db.session.scalar(
        select(func.min(ResearchCycle.cycle_index)).where(
            ResearchCycle.battery_id == battery.id, ResearchCycle.rul == 0
        )
    )


@bp.get("/<battery_id>/prediction")
@jwt_required()
@operation(
    summary="Early-life prediction of cycle life from the first 100 cycles",
    tag="research",
    response=responses.EarlyLifePrediction,
    path_params=BATTERY_PARAM,
    description=(
        "Features in the manner of Severson et al. 2019 (ΔQ(V) between cycles 100 and 10 on the "
        "dataset's voltage grid, early capacity and fade) into the linear model fitted by "
        "`scripts/fit_early_life.py`. A dataset without 100 cycles, or without discharge "
        "capacity curves at cycles 10 and 100, is a 422 saying which."
    ),
)
def predict_cycle_life(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    battery = _get_battery(battery_id)
    last = early_life.LAST_CYCLE
    capacities = dict(
        db.session.execute(
            select(ResearchCycle.cycle_index, ResearchCycle.capacity_ah).where(
                ResearchCycle.battery_id == battery.id,
                ResearchCycle.cycle_index <= last,
                ResearchCycle.capacity_ah.is_not(None),
            )
        ).all()
    )
    curves = {
        index: unpack(blob)
        for index, blob in db.session.execute(
            select(ResearchCycle.cycle_index, ResearchCycle.discharge_capacity).where(
                ResearchCycle.battery_id == battery.id,
                ResearchCycle.cycle_index.in_(early_life.CURVE_CYCLES),
                ResearchCycle.discharge_capacity.is_not(None),
            )
        )
    }
    try:
        values = early_life.features(curves, capacities, unpack(battery.voltage_grid))
    except early_life.EarlyLifeInputError as exc:
        detail = {"loc": ["path", "battery_id"], "field": "battery_id", "msg": str(exc)}
        raise ApiError(422, str(exc), [{**detail, "type": "early_life"}]) from exc
    prediction = early_life.predict(values)
    actual = _actual_cycle_life(battery)
    low, high = prediction.interval
    return jsonify(
        battery_id=battery.id,
        model=prediction.model,
        as_of_cycle=last,
        predicted_cycle_life=prediction.cycle_life,
        predicted_rul=max(prediction.cycle_life - last, 0.0),
        interval={"low": low, "high": high, "level": prediction.interval_level},
        features=prediction.features,
        actual_cycle_life=actual,
        error_cycles=None if actual is None else prediction.cycle_life - actual,
    )
