"""Storing parsed research files, and relabelling a dataset when its metadata changes.

A cell becomes a :class:`CellRecord` where the file is read (its cycles packed one by one, then
labelled: the labels need every cycle's SoH first), and its rows are inserted where the store is,
in the caller's transaction: only one cell's arrays are in memory at a time. Anything raised part
way (a file that turns out corrupt in its fifth cell) leaves the caller to roll the whole file
back. The server reads uploads in a child process and inserts in its own (see :mod:`worker`);
:func:`store_file` does both in one process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from central.db.models import ResearchBattery, ResearchCycle
from central.research.cells import InvalidMatFileError, ParsedCell, ParsedCycle
from central.research.labels import rul_labels, state_of_health
from central.research.parse import open_research_file

_F64 = np.dtype("<f8")
_HASH_CHUNK = 1024 * 1024


def pack(values: np.ndarray) -> bytes:
    """A 1-D array as float64 little-endian bytes: compact, exact, readable by any client."""
    return np.ascontiguousarray(values, dtype=_F64).ravel().tobytes()


def unpack(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=_F64)


@dataclass(frozen=True)
class UploadMetadata:
    """What the uploader said of the file; ``None`` leaves each to the layout's defaults."""

    filename: str
    manufacturer: str | None = None
    chemistry: str | None = None
    nominal_capacity: float | None = None
    eol_threshold: float | None = None
    uploaded_by: str | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# The packed arrays of a cycle (``None`` where it has none), in the order they travel.
CYCLE_BLOBS = ("voltage", "current", "temperature", "time_s", "discharge_capacity")


@dataclass(frozen=True)
class CellRecord:
    """One cell's rows: ``battery``, the ResearchBattery columns the file gives (all but the
    upload's own: id, file name, digest, uploader); ``cycles``, ResearchCycle rows but for
    ``battery_id``, their arrays packed."""

    battery: dict[str, Any]
    cycles: list[dict[str, Any]]


def cell_record(
    cell: ParsedCell, meta: UploadMetadata, *, position: int, default_eol_threshold: float
) -> CellRecord:
    """The rows of one parsed cell, its cycles read (lazily, from the open file) and labelled.

    Raises ``InvalidMatFileError`` for a cell without a nominal capacity (none in the file and
    none given) and whatever reading its cycles raises.
    """
    nominal = meta.nominal_capacity
    if nominal is None:
        nominal = cell.nominal_capacity_ah
    if nominal is None:
        raise InvalidMatFileError(
            "Unable to parse .mat file",
            [f"cell {cell.label}: no nominal capacity in the file; give nominal_capacity"],
        )
    threshold = meta.eol_threshold if meta.eol_threshold is not None else default_eol_threshold
    grid = None if cell.voltage_grid is None else pack(cell.voltage_grid)
    cycles = [_cycle_row(cycle, nominal, grid) for cycle in cell.cycles()]
    ruls = rul_labels(
        [row["cycle_index"] for row in cycles],
        [row["soh"] for row in cycles],
        threshold,
        stated_cycle_life=cell.stated_cycle_life,
        stated_threshold=cell.stated_life_threshold,
    )
    for row, rul in zip(cycles, ruls, strict=True):
        row["rul"] = rul
    battery = {
        "cell_label": cell.label,
        "cell_index": position,
        "layout": cell.layout.value,
        "total_cycles": len(cycles),
        "nominal_capacity": nominal,
        "manufacturer": meta.manufacturer if meta.manufacturer is not None else cell.manufacturer,
        "chemistry": meta.chemistry if meta.chemistry is not None else cell.chemistry,
        "eol_threshold": threshold,
        "stated_cycle_life": cell.stated_cycle_life,
        "stated_life_threshold": cell.stated_life_threshold,
        "voltage_grid": grid,
    }
    return CellRecord(battery, cycles)


def _cycle_row(cycle: ParsedCycle, nominal: float, grid: bytes | None) -> dict[str, Any]:
    """One cycle packed as it is read: its numpy arrays are dropped before the next is read."""
    voltage = pack(cycle.voltage)
    return {
        "cycle_index": cycle.index,
        "capacity_ah": cycle.capacity_ah,
        "soh": state_of_health(cycle.capacity_ah, nominal),
        "ambient_temperature": cycle.ambient_temperature_c,
        # A cycle on the battery's voltage grid keeps its voltage there, once.
        "voltage": None if grid is not None and voltage == grid else voltage,
        "current": pack(cycle.current),
        "temperature": pack(cycle.temperature),
        "time_s": pack(cycle.time_s),
        "discharge_capacity": None if cycle.qdlin is None else pack(cycle.qdlin),
    }


def add_battery(
    session: Session, fields: dict[str, Any], meta: UploadMetadata, *, upload_id: str, digest: str
) -> ResearchBattery:
    """Insert one cell's battery row (``CellRecord.battery``) in the caller's transaction."""
    battery = ResearchBattery(
        **fields,
        upload_id=upload_id,
        filename=meta.filename,
        file_sha256=digest,
        uploaded_by=meta.uploaded_by,
    )
    session.add(battery)
    session.flush()
    return battery


def add_cycles(session: Session, battery: ResearchBattery, rows: list[dict[str, Any]]) -> None:
    """Insert cycle rows (``CellRecord.cycles``, or a run of them) of ``battery``."""
    if rows:
        session.execute(insert(ResearchCycle), [{**row, "battery_id": battery.id} for row in rows])


def store_file(
    session: Session,
    path: Path,
    meta: UploadMetadata,
    *,
    upload_id: str,
    default_eol_threshold: float,
    max_decompressed_bytes: int,
) -> list[ResearchBattery]:
    """Parse ``path`` and add one research battery per cell, with its cycles, to ``session``.

    Raises ``InvalidMatFileError`` (from the parser) for a file it cannot use; the caller then
    rolls back. ``upload_id`` marks every cell of the file.
    """
    digest = file_sha256(path)
    batteries = []
    with open_research_file(path, max_decompressed_bytes=max_decompressed_bytes) as cells:
        for position, cell in enumerate(cells, start=1):
            record = cell_record(
                cell, meta, position=position, default_eol_threshold=default_eol_threshold
            )
            battery = add_battery(session, record.battery, meta, upload_id=upload_id, digest=digest)
            add_cycles(session, battery, record.cycles)
            batteries.append(battery)
    return batteries


def relabel(session: Session, battery: ResearchBattery) -> None:
    """Recompute every cycle's SoH and RUL after the nominal capacity or threshold changed."""
    rows: Iterable[tuple[int, int, float | None]] = session.execute(
        select(ResearchCycle.id, ResearchCycle.cycle_index, ResearchCycle.capacity_ah)
        .where(ResearchCycle.battery_id == battery.id)
        .order_by(ResearchCycle.cycle_index)
    ).all()
    ids, indices, capacities = zip(*rows, strict=True) if rows else ((), (), ())
    soh = [state_of_health(c, battery.nominal_capacity) for c in capacities]
    ruls = rul_labels(
        indices,
        soh,
        battery.eol_threshold,
        stated_cycle_life=battery.stated_cycle_life,
        stated_threshold=battery.stated_life_threshold,
    )
    if ids:
        session.execute(
            update(ResearchCycle),
            [{"id": i, "soh": s, "rul": r} for i, s, r in zip(ids, soh, ruls, strict=True)],
        )
