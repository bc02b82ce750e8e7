"""The battery physics as pure numpy functions: ageing, temperature, voltage, outages, noise.

Nothing here knows about IDs, faults or locks; ``site.py`` composes these pieces. Every function is
deterministic in its inputs, so the twin is a pure function of (location, seed, faults, time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulators.twin.params import (
    KELVIN,
    REFERENCE_TEMP_C,
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    TwinParams,
)

# Unix time of 2000-01-01T00:00Z: the seasonal sinusoid's year starts here.
_YEAR_ORIGIN = 946_684_800.0
# Sentinel "event" before any outage, finite so differences stay finite (no inf - inf).
NO_EVENT_TIME = -1.0e15


# --------------------------------------------------------------------------- temperature, ageing


def arrhenius_factor(temp_c: np.ndarray | float, ea_over_r: float) -> np.ndarray:
    """Ageing-rate multiplier relative to 25 °C: exp(Ea/R · (1/298.15 − 1/T))."""
    temp_k = np.asarray(temp_c, dtype=float) + KELVIN
    return np.exp(ea_over_r * (1.0 / (REFERENCE_TEMP_C + KELVIN) - 1.0 / temp_k))


def seasonal_offset(times: np.ndarray, amplitude_c: float, peak_day: float) -> np.ndarray:
    """Yearly room-temperature swing around the mean, hottest on ``peak_day`` of the year."""
    phase = (np.asarray(times, dtype=float) - _YEAR_ORIGIN) / SECONDS_PER_YEAR - peak_day / 365.2425
    return amplitude_c * np.cos(2.0 * math.pi * phase)


def position_profile(blocks: int) -> np.ndarray:
    """0 at the string ends, 1 in the middle: blocks with neighbours on both sides run hotter."""
    return np.sin(math.pi * (np.arange(blocks) + 0.5) / blocks)


@dataclass(frozen=True)
class AgeingTable:
    """Cumulative seasonal ageing integral C(t) = ∫ exp(β·s(τ)) dτ from installation, in seconds.

    One table per site: a block's calendar loss is rate_b · C(t), so SoH at any time is one cheap
    lookup instead of a per-block integration. Linear between daily points, linear extrapolation
    past the horizon, 0 before installation; the lookup is non-decreasing even in floating point.
    """

    t0: float
    step: float
    cumulative: np.ndarray  # (n + 1,)
    increments: np.ndarray  # (n,)
    mean_rate: float  # C per second past the horizon

    @property
    def t_end(self) -> float:
        return self.t0 + self.step * len(self.increments)

    def lookup(self, times: np.ndarray) -> np.ndarray:
        times = np.asarray(times, dtype=float)
        n = len(self.increments)
        x = (times - self.t0) / self.step
        j = np.clip(np.floor(x), 0, n - 1).astype(np.intp)
        frac = np.clip(x - j, 0.0, 1.0)
        inside = np.minimum(self.cumulative[j] + frac * self.increments[j], self.cumulative[j + 1])
        after = self.cumulative[-1] + np.maximum(times - self.t_end, 0.0) * self.mean_rate
        return np.where(x <= 0, 0.0, np.where(times <= self.t_end, inside, after))


def build_ageing_table(t0: float, mean_temp_c: float, params: TwinParams) -> AgeingTable:
    """Integrate the seasonal Arrhenius swing once per site on a daily grid.

    The exponent is linearised around the mean: AF(T̄ + s) ≈ AF(T̄) · exp(β s), β = Ea/R / T̄².
    """
    beta = params.ea_over_r / (mean_temp_c + KELVIN) ** 2
    days = math.ceil(params.horizon_years * SECONDS_PER_YEAR / SECONDS_PER_DAY)
    grid = t0 + SECONDS_PER_DAY * np.arange(days + 1)
    rate = np.exp(
        beta * seasonal_offset(grid, params.seasonal_amplitude_c, params.seasonal_peak_day)
    )
    increments = 0.5 * (rate[:-1] + rate[1:]) * SECONDS_PER_DAY
    cumulative = np.concatenate([[0.0], np.cumsum(increments)])
    mean_rate = float(cumulative[-1] / (grid[-1] - t0))
    return AgeingTable(float(t0), SECONDS_PER_DAY, cumulative, increments, mean_rate)


def calendar_rate_per_s(
    design_life_years: float, multiplier: np.ndarray, af: np.ndarray, params: TwinParams
) -> np.ndarray:
    """Capacity fraction lost per (seasonally weighted) second at each block's mean temperature."""
    base = params.calendar_loss_at_design_life / (design_life_years * SECONDS_PER_YEAR)
    return base * multiplier * af


def cycle_loss(dod: np.ndarray, params: TwinParams) -> np.ndarray:
    """Capacity lost by one discharge of depth ``dod`` (Wöhler curve: 0.2 · DoD^k / N100)."""
    depth = np.clip(dod, 0.0, 1.0)
    return params.cycle_loss_at_n100 * depth**params.cycle_exponent / params.cycle_n100


def internal_resistance(
    r0: np.ndarray, soh0: np.ndarray, soh: np.ndarray, slope: float
) -> np.ndarray:
    """Ohmic resistance rises as capacity fades: R = R0 · (1 + slope · (SoH0 − SoH))."""
    return r0 * (1.0 + slope * (soh0 - soh))


# --------------------------------------------------------------------------- block parameters


@dataclass(frozen=True)
class BlockParams:
    """The seeded, per-block constants of one site; all arrays (strings, blocks)."""

    soh0: np.ndarray
    ageing_multiplier: np.ndarray
    weak: np.ndarray
    mean_temp_c: np.ndarray
    r0: np.ndarray
    float_spread_v: np.ndarray
    serial_base: int


def draw_block_params(
    rng: np.random.Generator, strings: int, blocks: int, temp_offset_c: float, params: TwinParams
) -> BlockParams:
    """Draw every block's manufacturing and placement spread once, from the site's seed."""
    shape = (strings, blocks)
    soh0 = rng.uniform(*params.soh_initial, size=shape)
    multiplier = rng.lognormal(0.0, params.ageing_sigma, size=shape)
    weak = np.zeros(strings * blocks, dtype=bool)
    weak[rng.permutation(strings * blocks)[: round(params.weak_fraction * strings * blocks)]] = True
    weak = weak.reshape(shape)
    multiplier = np.where(
        weak, multiplier * rng.uniform(*params.weak_multiplier, size=shape), multiplier
    )
    mean_temp = (
        params.room_temp_c
        + temp_offset_c
        + params.float_heating_c
        + params.position_gradient_c * position_profile(blocks)[None, :]
        + rng.normal(0.0, params.block_temp_sigma_c, size=shape)
    )
    r0 = params.r0_ohm * np.exp(rng.normal(0.0, params.r0_spread, size=shape))
    spread = rng.normal(0.0, params.block_float_sigma_v, size=shape)
    spread -= spread.mean(axis=1, keepdims=True)  # the charger holds the string total
    serial_base = int(rng.integers(1, 900_000))
    return BlockParams(soh0, multiplier, weak, mean_temp, r0, spread, serial_base)


# --------------------------------------------------------------------------- voltage and current


def string_setpoint(temp_c: np.ndarray, cells: int, blocks: int, params: TwinParams) -> np.ndarray:
    """Temperature-compensated float voltage the charger holds across the whole string."""
    per_cell = params.float_v_per_cell + params.temp_comp_v_per_c_per_cell * (
        np.asarray(temp_c) - REFERENCE_TEMP_C
    )
    return blocks * cells * per_cell


def float_block_voltages(
    setpoint: np.ndarray, spread: np.ndarray, drop: np.ndarray | None
) -> np.ndarray:
    """Block voltages on float, (n, strings, blocks): spread around setpoint/N summing to it.

    A block with shorted cells is ``drop`` volts low and the rest of the string shares the
    difference, because the charger still holds the string total.
    """
    blocks = spread.shape[-1]
    volts = setpoint[..., None] / blocks + spread
    if drop is None:
        return volts
    if blocks == 1:
        return volts - drop
    total = drop.sum(axis=-1, keepdims=True)
    return volts - drop + (total - drop) / (blocks - 1)


def open_circuit_voltage(
    soc: np.ndarray, cells: np.ndarray | int, params: TwinParams
) -> np.ndarray:
    """Rest voltage of a block from its state of charge (linear VRLA approximation)."""
    return cells * (params.ocv_empty_v_per_cell + params.ocv_span_v_per_cell * soc)


def discharge_voltage(
    soc: np.ndarray, load_a: np.ndarray, r_eff: np.ndarray, cells: np.ndarray, params: TwinParams
) -> np.ndarray:
    """Block voltage under load, never below end of discharge (the UPS cuts off there)."""
    volts = open_circuit_voltage(soc, cells, params) - load_a * r_eff
    return np.maximum(volts, cells * params.end_of_discharge_v_per_cell)


def float_current(temp_c: np.ndarray, aged: np.ndarray, params: TwinParams) -> np.ndarray:
    """Float current doubles per 10 °C (like every side reaction) and grows with age."""
    return (
        params.float_current_a
        * 2.0 ** ((temp_c - REFERENCE_TEMP_C) / 10.0)
        * (1.0 + params.float_current_age_gain * np.maximum(aged, 0.0))
    )


# --------------------------------------------------------------------------- outages


def draw_outages(
    rng: np.random.Generator, t0: float, t_end: float, per_year: float, params: TwinParams
) -> tuple[np.ndarray, np.ndarray]:
    """Grid outages as a Poisson process: (start times, durations in s), sorted by start."""
    expected = per_year * (t_end - t0) / SECONDS_PER_YEAR
    count = int(rng.poisson(expected)) if expected > 0 else 0
    starts = np.sort(rng.uniform(t0, t_end, size=count))
    durations = params.outage_median_s * rng.lognormal(0.0, params.outage_sigma, size=count)
    return starts, durations


def merge_intervals(
    intervals: list[tuple[float, float, float]],
) -> list[tuple[float, float, float]]:
    """Merge overlapping (start, end, load) outages of one UPS; overlaps take the larger load."""
    merged: list[tuple[float, float, float]] = []
    for start, end, load in sorted(intervals):
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), max(last[2], load))
        else:
            merged.append((start, end, load))
    return merged


@dataclass(frozen=True)
class EventTable:
    """Outages of one UPS with the state of its blocks at each; row 0 is a 'no outage yet' sentinel.

    Block arrays are (events + 1, strings of this UPS, blocks).
    """

    starts: np.ndarray
    ends: np.ndarray
    loads: np.ndarray
    capacity_ah: np.ndarray  # capacity during the outage (nominal × SoH at its start)
    soc_start: np.ndarray
    soc_end: np.ndarray
    loss_before: np.ndarray  # cumulative cycle loss before this outage ends
    loss_after: np.ndarray  # ... and once it has ended


def recovered_deficit(deficit: np.ndarray, elapsed: np.ndarray, params: TwinParams) -> np.ndarray:
    """Missing charge after ``elapsed`` s of recharge: exponential, snapped to 0 once done."""
    left = deficit * np.exp(-np.maximum(elapsed, 0.0) / params.recharge_tau_s)
    return np.where(left < params.recharge_done_deficit, 0.0, left)


def build_event_table(
    intervals: list[tuple[float, float, float]],
    soh_at_starts: np.ndarray,
    nominal_ah: float,
    params: TwinParams,
    renewals: Sequence[tuple[float, int, int]] = (),
) -> EventTable:
    """Walk one UPS's outages in order: each drains SoC and, at its end, costs cycle life.

    ``soh_at_starts`` (outages, strings, blocks) is the SoH without cycle losses at each start,
    so the depth of each discharge follows the capacity the blocks have left at that time.
    ``renewals`` (time, string of this UPS, block), in time order, are blocks replaced: the
    cycle loss columns stay cumulative, but a new block's capacity counts only its own losses.
    """
    full = np.ones(soh_at_starts.shape[1:])
    cap, soc_a, soc_b, loss_b, loss_a = [full * nominal_ah], [full], [full], [0 * full], [0 * full]
    base = 0 * full  # each block's cumulative loss when it was put in
    previous_end = NO_EVENT_TIME
    pending = iter(renewals)
    renewal = next(pending, None)
    for (start, end, load), soh in zip(intervals, soh_at_starts, strict=True):
        while renewal is not None and renewal[0] <= start:
            t, k, b = renewal
            base[k, b] = (loss_b[-1] if t < previous_end else loss_a[-1])[k, b]
            renewal = next(pending, None)
        capacity = nominal_ah * (soh - (loss_a[-1] - base))
        soc_start = 1.0 - recovered_deficit(
            1.0 - soc_b[-1], np.asarray(start - previous_end), params
        )
        soc_end = np.maximum(soc_start - load * (end - start) / 3600.0 / capacity, 0.0)
        cap.append(capacity)
        soc_a.append(soc_start)
        soc_b.append(soc_end)
        loss_b.append(loss_a[-1])
        loss_a.append(loss_a[-1] + cycle_loss(soc_start - soc_end, params))
        previous_end = end
    rows = [(NO_EVENT_TIME, NO_EVENT_TIME, 0.0), *intervals]
    starts, ends, loads = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    return EventTable(
        starts,
        ends,
        loads,
        np.stack(cap),
        np.stack(soc_a),
        np.stack(soc_b),
        np.stack(loss_b),
        np.stack(loss_a),
    )


@dataclass(frozen=True)
class OutageState:
    """What one UPS's blocks are doing at each time: per time (n,) or per block (n, S, B)."""

    on_battery: np.ndarray  # (n,) bool
    seconds_on_battery: np.ndarray  # (n,)
    load_a: np.ndarray  # (n,) load of the present (or latest) outage
    soc: np.ndarray  # (n, S, B)
    cycle_loss: np.ndarray  # (n, S, B)
    heating_w_to_c: np.ndarray  # (n,) ΔT per ohm of R_eff: load² · R_th · thermal shape


def cycle_loss_at(table: EventTable, times: np.ndarray) -> np.ndarray:
    """(n, S, B) cumulative cycle loss at ``times``: an outage's cost counts once it has ended."""
    idx = np.searchsorted(table.starts, times, side="right") - 1
    on = (times < table.ends[idx])[:, None, None]
    return np.where(on, table.loss_before[idx], table.loss_after[idx])


def outage_state(table: EventTable, times: np.ndarray, params: TwinParams) -> OutageState:
    """Look up each time's latest outage and derive SoC, cycle loss and I²R heating from it."""
    idx = np.searchsorted(table.starts, times, side="right") - 1
    start, end, load = table.starts[idx], table.ends[idx], table.loads[idx]
    on = times < end
    on_s = np.where(on, times - start, 0.0)
    drained = table.soc_start[idx] - (load * on_s / 3600.0)[:, None, None] / table.capacity_ah[idx]
    deficit = recovered_deficit(1.0 - table.soc_end[idx], (times - end)[:, None, None], params)
    soc = np.where(on[:, None, None], np.maximum(drained, 0.0), 1.0 - deficit)
    loss = np.where(on[:, None, None], table.loss_before[idx], table.loss_after[idx])
    tau = params.thermal_time_constant_s
    heated_for = np.minimum(times, end) - start
    shape = -np.expm1(-heated_for / tau) * np.exp(-np.maximum(times - end, 0.0) / tau)
    heating = load**2 * params.thermal_resistance_k_per_w * shape
    return OutageState(on, on_s, load, soc, loss, heating)


# --------------------------------------------------------------------------- measurement noise

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_32 = 4294967296.0


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Counter-based hash (SplitMix64 finaliser) of a uint64 array; wraps modulo 2**64."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def time_keys(times: np.ndarray) -> np.ndarray:
    """Integer milliseconds: noise keyed on them does not depend on how times are batched."""
    return np.round(np.asarray(times, dtype=float) * 1000.0).astype(np.int64).view(np.uint64)


def index_keys(seed_key: int, channel: int, count: int) -> np.ndarray:
    """Hash of (seed, channel, sensor index) for ``count`` sensors."""
    base = np.uint64(seed_key & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(channel * 0x100000001B3)
    return splitmix64(np.arange(count, dtype=np.uint64) + base)


def normal_pair(index_key: np.ndarray, time_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normals per (time, sensor) by Box–Muller: shape (n, sensors)."""
    h = splitmix64(splitmix64(time_key)[:, None] ^ index_key[None, :])
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 1.0) / _TWO_POW_32  # (0, 1]
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) / _TWO_POW_32  # [0, 1)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    return radius * np.cos(angle), radius * np.sin(angle)
