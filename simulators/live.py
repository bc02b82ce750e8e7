"""A site twin running on the wall clock: what the Modbus and SNMP servers read from.

Servers answer thousands of requests a second; a snapshot of the whole site is computed at most
once per ``refresh_s`` of wall time and shared by all of them, so a read costs a lookup.
"""

from __future__ import annotations

import threading
import time

from simulators.clock import SimClock
from simulators.twin import DeviceCondition, Fault, FaultKind, SiteTwin
from simulators.twin.snapshot import BlockInventory, SiteLayout, SiteSnapshot


class LiveSite:
    """One simulated site as its devices would present it now."""

    def __init__(self, twin: SiteTwin, clock: SimClock, refresh_s: float = 0.05) -> None:
        self.twin = twin
        self.clock = clock
        self.layout: SiteLayout = twin.layout
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: SiteSnapshot | None = None
        self._cached_at = float("-inf")
        self._inventory = twin.inventory()

    def snapshot(self) -> SiteSnapshot:
        wall = time.monotonic()
        with self._lock:
            if self._cached is None or wall - self._cached_at >= self._refresh_s:
                self._cached = self.twin.snapshot(self.clock.now())
                self._cached_at = wall
            return self._cached

    def inventory(self) -> list[list[BlockInventory]]:
        return self._inventory

    def device_condition(self, device_id: str) -> DeviceCondition:
        return self.twin.device_condition(device_id, self.clock.now())

    def faults(self) -> list[Fault]:
        """Faults active now."""
        return self.twin.faults(self.clock.now())

    def inject(
        self,
        kind: FaultKind | str,
        target: str,
        *,
        start: float | None = None,
        **params: float | str,
    ) -> Fault:
        """Start a fault now, or at ``start`` in the past: a fault already present for a while
        (a block that has run hot for a year) puts its history into the twin's past as well."""
        now = self.clock.now()
        if start is not None and not start <= now:
            raise ValueError(f"fault start {start!r} is not a time before now ({now:.0f})")
        fault = self.twin.inject(kind, target, now if start is None else start, **params)
        self._invalidate()
        return fault

    def clear(self, fault_id: int) -> Fault:
        fault = self.twin.clear(fault_id, self.clock.now())
        self._invalidate()
        return fault

    def clear_all(self) -> list[Fault]:
        cleared = self.twin.clear_all(self.clock.now())
        self._invalidate()
        return cleared

    def _invalidate(self) -> None:
        with self._lock:
            self._cached = None
