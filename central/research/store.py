"""Storing parsed research files, and relabelling a dataset when its metadata changes.

A file is stored in the caller's transaction, cell by cell: a cell's cycles are gathered (its
labels need every cycle's SoH first), labelled, and inserted in one executemany; only one cell's
arrays are in memory at a time. Anything raised part way (a file that turns out corrupt in its
fifth cell) leaves the caller to roll the whole file back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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
    threshold = meta.eol_threshold if meta.eol_threshold is not None else default_eol_threshold
    batteries = []
    with open_research_file(path, max_decompressed_bytes=max_decompressed_bytes) as cells:
        for position, cell in enumerate(cells, start=1):
            battery = _battery(
                cell,
                meta,
                upload_id=upload_id,
                digest=digest,
                position=position,
                threshold=threshold,
            )
            session.add(battery)
            session.flush()
            cycles = list(cell.cycles())
            battery.total_cycles = len(cycles)
            rows = _cycle_rows(battery, cycles)
            if rows:
                session.execute(insert(ResearchCycle), rows)
            batteries.append(battery)
    return batteries


def _battery(
    cell: ParsedCell,
    meta: UploadMetadata,
    *,
    upload_id: str,
    digest: str,
    position: int,
    threshold: float,
) -> ResearchBattery:
    nominal = meta.nominal_capacity
    if nominal is None:
        nominal = cell.nominal_capacity_ah
    if nominal is None:
        raise InvalidMatFileError(
            "Unable to parse .mat file",
            [f"cell {cell.label}: no nominal capacity in the file; give nominal_capacity"],
        )
    return ResearchBattery(
        upload_id=upload_id,
        filename=meta.filename,
        file_sha256=digest,
        cell_label=cell.label,
        cell_index=position,
        layout=cell.layout.value,
        total_cycles=cell.cycle_count,
        nominal_capacity=nominal,
        manufacturer=meta.manufacturer if meta.manufacturer is not None else cell.manufacturer,
        chemistry=meta.chemistry if meta.chemistry is not None else cell.chemistry,
        eol_threshold=threshold,
        stated_cycle_life=cell.stated_cycle_life,
        stated_life_threshold=cell.stated_life_threshold,
        voltage_grid=None if cell.voltage_grid is None else pack(cell.voltage_grid),
        uploaded_by=meta.uploaded_by,
    )


def _cycle_rows(battery: ResearchBattery, cycles: Sequence[ParsedCycle]) -> list[dict[str, Any]]:
    soh = [state_of_health(c.capacity_ah, battery.nominal_capacity) for c in cycles]
    ruls = _labels(battery, [c.index for c in cycles], soh)
    grid = battery.voltage_grid
    return [
        {
            "battery_id": battery.id,
            "cycle_index": cycle.index,
            "capacity_ah": cycle.capacity_ah,
            "soh": health,
            "rul": rul,
            "ambient_temperature": cycle.ambient_temperature_c,
            # A cycle on the battery's voltage grid keeps its voltage there, once.
            "voltage": None
            if grid is not None and pack(cycle.voltage) == grid
            else pack(cycle.voltage),
            "current": pack(cycle.current),
            "temperature": pack(cycle.temperature),
            "time_s": pack(cycle.time_s),
            "discharge_capacity": None if cycle.qdlin is None else pack(cycle.qdlin),
        }
        for cycle, health, rul in zip(cycles, soh, ruls, strict=True)
    ]


def _labels(
    battery: ResearchBattery, indices: Sequence[int], soh: Sequence[float | None]
) -> list[int | None]:
    return rul_labels(
        indices,
        soh,
        battery.eol_threshold,
        stated_cycle_life=battery.stated_cycle_life,
        stated_threshold=battery.stated_life_threshold,
    )


def relabel(session: Session, battery: ResearchBattery) -> None:
    """Recompute every cycle's SoH and RUL after the nominal capacity or threshold changed."""
    rows: Iterable[tuple[int, int, float | None]] = session.execute(
        select(ResearchCycle.id, ResearchCycle.cycle_index, ResearchCycle.capacity_ah)
        .where(ResearchCycle.battery_id == battery.id)
        .order_by(ResearchCycle.cycle_index)
    ).all()
    ids, indices, capacities = zip(*rows, strict=True) if rows else ((), (), ())
    soh = [state_of_health(c, battery.nominal_capacity) for c in capacities]
    ruls = _labels(battery, indices, soh)
    if ids:
        session.execute(
            update(ResearchCycle),
            [{"id": i, "soh": s, "rul": r} for i, s, r in zip(ids, soh, ruls, strict=True)],
        )
