"""Simulated time for the simulators: wall time, optionally sped up so the twin ages in a demo."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class SimClock:
    """Simulated Unix seconds = epoch + time_scale · (wall() − wall at start).

    The wall function is injectable so tests can drive time by hand. Changing ``time_scale``
    re-anchors the clock at the present instant, so simulated time never jumps.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        epoch: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall
        self._lock = threading.Lock()
        self._scale = _check_scale(time_scale)
        self._wall_at_start = wall()
        self._epoch = self._wall_at_start if epoch is None else _check_epoch(epoch)

    def now(self) -> float:
        """The current simulated time in Unix seconds."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> float:
        return self._epoch + self._scale * (self._wall() - self._wall_at_start)

    @property
    def time_scale(self) -> float:
        return self._scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        scale = _check_scale(value)
        with self._lock:
            self._epoch = self._now_locked()
            self._wall_at_start = self._wall()
            self._scale = scale

    @property
    def epoch(self) -> float:
        """Simulated time at the last anchor (construction or the last change of time_scale)."""
        return self._epoch


def _check_scale(value: float) -> float:
    scale = float(value)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"time_scale must be a finite number > 0, got {value!r}")
    return scale


def _check_epoch(value: float) -> float:
    epoch = float(value)
    if not math.isfinite(epoch):
        raise ValueError(f"epoch must be finite Unix seconds, got {value!r}")
    return epoch
