"""One site's digital twin: seeded block parameters, outages and faults composed into readings.

The twin is a pure function of (location, seed, faults, t): nothing advances with wall time, so
any instant, past or future, can be asked for in any order and gives the same answer.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from common.fleet import Location
from simulators.twin import faults as fx
from simulators.twin import model
from simulators.twin.faults import DeviceCondition, Fault, FaultKind, Located, Renewal
from simulators.twin.params import END_OF_LIFE_SOH, SECONDS_PER_DAY, TwinParams
from simulators.twin.snapshot import (
    BlockInventory,
    SiteLayout,
    SiteSnapshot,
    StringStatus,
)

_CHUNK = 1024  # times per vectorised pass: keeps the working set in cache
_BLOCK_CHANNELS = (1, 2)  # noise streams: (voltage, temperature), (resistance, SoH)
_STRING_CHANNEL = 3  # (string current, string voltage)
READING_KEYS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct")


def _seed_key(seed: int, location_id: str) -> int:
    """A stable 64-bit key per (seed, site): Python's hash() differs between processes."""
    digest = hashlib.blake2b(f"{seed}:{location_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _times(times: np.ndarray | float) -> np.ndarray:
    out = np.atleast_1d(np.asarray(times, dtype=float))
    if out.ndim != 1 or not np.all(np.isfinite(out)):
        raise ValueError("times must be a 1-D array of finite Unix seconds")
    return out


def _finite(t: float) -> float:
    value = float(t)
    if not math.isfinite(value):
        raise ValueError(f"time must be finite Unix seconds, got {t!r}")
    return value


@dataclass(frozen=True)
class _State:
    """Everything derived from one version of the fault list (rebuilt only when it changes)."""

    version: int
    located: list[Located]
    renewals: list[Renewal]  # blocks replaced, in time order
    events: list[model.EventTable]  # one per UPS


@dataclass
class _Frame:
    """The true (noise-free) state of the site at n times."""

    soh: np.ndarray  # (n, K, B) fraction
    soc: np.ndarray  # (n, K, B) fraction
    temperature: np.ndarray  # (n, K, B)
    resistance: np.ndarray  # (n, K, B)
    voltage: np.ndarray  # (n, K, B)
    current: np.ndarray  # (n, K)
    on_battery: np.ndarray  # (n, K) bool
    load_a: np.ndarray  # (n, K)
    seconds_on_battery: np.ndarray  # (n, U)


class SiteTwin:
    """Seeded, deterministic model of every block of one site, with injectable faults."""

    def __init__(self, location: Location, seed: int = 0, params: TwinParams | None = None) -> None:
        self.location = location
        self.seed = seed
        self.params = params if params is not None else TwinParams.for_model(location.battery_model)
        self.layout = SiteLayout.of(location)
        spec = location.battery_model
        self._key = _seed_key(seed, location.location_id)
        block_rng, outage_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(self._key).spawn(2)
        )
        strings, blocks = self.layout.string_count, self.layout.blocks_per_string
        self.blocks = model.draw_block_params(
            block_rng, strings, blocks, location.temp_offset_c, self.params
        )
        installed = location.installed_date
        self.installed_t = datetime(
            installed.year, installed.month, installed.day, tzinfo=UTC
        ).timestamp()
        self._table = model.build_ageing_table(
            self.installed_t, float(self.blocks.mean_temp_c.mean()), self.params
        )
        self._af = model.arrhenius_factor(self.blocks.mean_temp_c, self.params.ea_over_r)
        self._rate = model.calendar_rate_per_s(
            spec.design_life_years, self.blocks.ageing_multiplier, self._af, self.params
        )
        self._grid_outages = self._draw_grid_outages(outage_rng)
        self._block_keys = [
            model.index_keys(self._key, c, strings * blocks) for c in _BLOCK_CHANNELS
        ]
        self._string_keys = model.index_keys(self._key, _STRING_CHANNEL, strings)
        self._lock = threading.Lock()
        self._faults: dict[int, Fault] = {}
        self._cleared: set[int] = set()
        self._next_id = 1
        self._version = 0
        self._state_cache: _State | None = None
        self._eol_cache: tuple[int, np.ndarray] | None = None

    def _draw_grid_outages(self, rng: np.random.Generator) -> list[tuple[float, float, float]]:
        """The site's grid outages from installation to the horizon, as (start, end, load)."""
        starts, durations = model.draw_outages(
            rng,
            self.installed_t,
            self._table.t_end,
            self.location.power_outage_frequency_per_year,
            self.params,
        )
        return [
            (float(s), float(s + d), self.params.load_current_a)
            for s, d in zip(starts, durations, strict=True)
        ]

    # ------------------------------------------------------------------ static facts

    def inventory(self) -> list[list[BlockInventory]]:
        """Nameplate of every block, [flat string][block]; serials are consecutive from one lot."""
        spec, layout = self.location.battery_model, self.layout
        year = self.location.installed_date.year

        def serial(k: int, b: int) -> int:
            return (self.blocks.serial_base + k * layout.blocks_per_string + b) % 1_000_000

        return [
            [
                BlockInventory(
                    battery_id=layout.battery_id(k, b),
                    serial_number=f"{spec.manufacturer}-{spec.model}-{year}-{serial(k, b):06d}",
                    manufacturer=spec.manufacturer,
                    model=spec.model,
                    nominal_voltage_v=spec.nominal_voltage_v,
                    nominal_capacity_ah=spec.nominal_capacity_ah,
                    installed_date=self.location.installed_date,
                    warranty_months=spec.warranty_months,
                    position=b + 1,
                )
                for b in range(layout.blocks_per_string)
            ]
            for k in range(layout.string_count)
        ]

    def mean_temperature(self) -> np.ndarray:
        """(strings, blocks) long-run mean block temperature, °C: what calendar ageing sees."""
        return self.blocks.mean_temp_c.copy()

    # ------------------------------------------------------------------ faults

    def inject(self, kind: FaultKind | str, target: str, t: float, **params: float | str) -> Fault:
        """Start a fault at ``t``; a mains outage ends by itself after its duration_s, a block
        replacement at once (ending the old block's own faults)."""
        fault_kind = fx.parse_kind(kind)
        start = _finite(t)
        located = fx.check_target(self.layout, Fault(0, fault_kind, target, start, None, {}))
        if fault_kind == FaultKind.BLOCK_REPLACED:
            soh, r0, _ = self._new_block(int(located.k), int(located.b), start)
            params = {"soh_pct": 100.0 * soh, "resistance_ohm": r0, **params}
        values = fx.validate_params(
            fault_kind, params, self.params, self.location.battery_model.cells
        )
        end = None
        if fault_kind == FaultKind.MAINS_OUTAGE:
            end = start + float(values["duration_s"])
        elif fault_kind == FaultKind.BLOCK_REPLACED:
            end = start
        with self._lock:
            fault = Fault(self._next_id, fault_kind, target, start, end, values)
            self._faults[fault.id] = fault
            if fault_kind == FaultKind.BLOCK_REPLACED:
                for ended in fx.ended_by_replacement(self._faults.values(), fault):
                    self._faults[ended.id] = ended
                    self._cleared.add(ended.id)
            self._next_id += 1
            self._version += 1
        return fault

    def _new_block(self, k: int, b: int, t: float) -> tuple[float, float, float]:
        """A replacement block's SoH (fraction), R0 and ageing-rate multiplier, drawn as the
        first blocks' were (never from a bad batch), seeded by site, place and time."""
        rng = np.random.default_rng([self._key, k, b, round(t * 1000.0)])
        p = self.params
        soh = float(rng.uniform(*p.soh_initial))
        r0 = float(p.r0_ohm * np.exp(rng.normal(0.0, p.r0_spread)))
        return soh, r0, float(rng.lognormal(0.0, p.ageing_sigma))

    def _renewals(self, located: list[Located]) -> list[Renewal]:
        renewals = []
        for item in fx.of_kind(located, FaultKind.BLOCK_REPLACED):
            fault, k, b = item.fault, int(item.k), int(item.b)
            multiplier = self._new_block(k, b, fault.start)[2]
            renewals.append(
                Renewal(
                    t=fault.start,
                    k=k,
                    b=b,
                    soh0=float(fault.params["soh_pct"]) / 100.0,
                    r0=float(fault.params["resistance_ohm"]),
                    rate_ratio=multiplier / float(self.blocks.ageing_multiplier[k, b]),
                )
            )
        return sorted(renewals, key=lambda r: r.t)

    def clear(self, fault_id: int, t: float) -> Fault:
        """End a fault at ``t`` (not before its start); its lasting effects (ageing) remain."""
        end = _finite(t)
        with self._lock:
            if fault_id not in self._faults:
                raise KeyError(f"no fault with id {fault_id}")
            return self._clear_locked(self._faults[fault_id], end)

    def clear_all(self, t: float) -> list[Fault]:
        """End every fault that has not ended by ``t``."""
        end = _finite(t)
        with self._lock:
            return [
                self._clear_locked(fault, end)
                for fault in list(self._faults.values())
                if fault.id not in self._cleared and (fault.end is None or fault.end > end)
            ]

    def _clear_locked(self, fault: Fault, t: float) -> Fault:
        if fault.id in self._cleared:
            raise ValueError(f"fault {fault.id} was already cleared at {fault.end}")
        if fault.end is not None and fault.end <= t:
            raise ValueError(f"fault {fault.id} already ended at {fault.end}")
        cleared = replace(fault, end=max(t, fault.start))
        self._faults[fault.id] = cleared
        self._cleared.add(fault.id)
        self._version += 1
        return cleared

    def faults(self, t: float | None = None) -> list[Fault]:
        """All faults ever injected (``t`` None), or those active at ``t``; in id order."""
        with self._lock:
            every = list(self._faults.values())
        return every if t is None else [f for f in every if f.active_at(_finite(t))]

    def device_condition(self, device_id: str, t: float) -> DeviceCondition:
        """Slow/silent state of a string's Modbus monitor (string ID) or a UPS's SNMP card."""
        kind = fx.target_kind_of(device_id)
        if kind == "string":
            self.layout.locate_string(device_id)
        elif kind == "ups":
            self.layout.locate_ups(device_id)
        else:
            raise ValueError(f"{device_id} is not a device: expected a string or UPS ID")
        return fx.device_condition(self.faults(), device_id, self.layout.location_id, _finite(t))

    # ------------------------------------------------------------------ derived state

    def _state(self) -> _State:
        with self._lock:
            version, faults, cached = self._version, list(self._faults.values()), self._state_cache
        if cached is not None and cached.version == version:
            return cached
        located = [fx.locate(self.layout, f) for f in faults]
        renewals = self._renewals(located)
        state = _State(version, located, renewals, self._event_tables(located, renewals))
        with self._lock:
            if self._version == version:
                self._state_cache = state
        return state

    def _event_tables(
        self, located: list[Located], renewals: list[Renewal]
    ) -> list[model.EventTable]:
        """Per UPS: grid outages plus injected mains outages, walked in time order."""
        per = self.layout.strings_per_ups
        tables = []
        for u in range(self.layout.ups_count):
            strings = slice(u * per, (u + 1) * per)
            renewed = [
                (r.t, r.k - u * per, r.b) for r in renewals if u * per <= r.k < (u + 1) * per
            ]
            intervals = list(self._grid_outages)
            intervals += [
                fx.outage_interval(item.fault)
                for item in fx.of_kind(located, FaultKind.MAINS_OUTAGE)
                if item.target_kind == "site" or item.k == strings
            ]
            merged = model.merge_intervals(intervals)
            starts = np.array([start for start, _, _ in merged], dtype=float)
            soh = self._soh_without_cycles(starts, located, renewals)[:, strings]
            nominal = self.location.battery_model.nominal_capacity_ah
            tables.append(model.build_event_table(merged, soh, nominal, self.params, renewed))
        return tables

    def _extra_rate(self, fault: Fault) -> np.ndarray:
        """Additional ageing per unit of the seasonal integral while ``fault`` is active: blocks
        running delta_c hotter (Arrhenius), or ageing ``factor`` times as fast."""
        if fault.kind == FaultKind.OVERHEATING:
            hotter = self.blocks.mean_temp_c + float(fault.params["delta_c"])
            hot = model.arrhenius_factor(hotter, self.params.ea_over_r)
            return self._rate * (hot / self._af - 1.0)
        return self._rate * (float(fault.params["factor"]) - 1.0)

    def _aged(self, times: np.ndarray, located: list[Located]) -> np.ndarray:
        """(n, K, B) capacity the first blocks lost to calendar ageing since installation,
        including time spent overheated or ageing fast."""
        aged = self._rate[None] * self._table.lookup(times)[:, None, None]
        shape = self.blocks.soh0.shape
        extra = fx.lasting_ageing_loss(located, times, self._table.lookup, self._extra_rate, shape)
        return aged if extra is None else aged + extra

    def _soh_without_cycles(
        self, times: np.ndarray, located: list[Located], renewals: list[Renewal]
    ) -> np.ndarray:
        """(n, K, B) true SoH from calendar ageing, less any capacity lost reversibly.

        A replaced block starts at its own SoH and ages from its renewal on, at its own rate,
        under the conditions its place has seen since (heat, a string's fast ageing)."""
        aged = self._aged(times, located)
        soh0 = self._initial(times, renewals, "soh0")
        if renewals:
            then = self._aged(np.array([r.t for r in renewals]), located)
            raw, aged = aged, aged.copy()
            for j, r in enumerate(renewals):
                at = times >= r.t
                aged[at, r.k, r.b] = r.rate_ratio * (raw[at, r.k, r.b] - then[j, r.k, r.b])
        soh = soh0 - aged
        lost = fx.capacity_loss(located, times, self.blocks.soh0.shape)
        return soh if lost is None else soh - lost

    def _initial(self, times: np.ndarray, renewals: list[Renewal], name: str) -> np.ndarray:
        """(n, K, B) each block's ``soh0`` or ``r0`` at ``times``: a replaced block's own."""
        first = getattr(self.blocks, name)
        values = np.broadcast_to(first, (len(times), *first.shape))
        if not renewals:
            return values
        values = values.copy()
        for r in renewals:
            values[times >= r.t, r.k, r.b] = getattr(r, name)
        return values

    def _renewal_bases(
        self, table: model.EventTable, u: int, times: np.ndarray, renewals: list[Renewal]
    ) -> np.ndarray:
        """Renewal bases to take off UPS ``u``'s cumulative cycle loss at ``times``: a new block
        carries only the outages since it was put in."""
        per = self.layout.strings_per_ups
        mine = [replace(r, k=r.k - u * per) for r in renewals if u * per <= r.k < (u + 1) * per]
        if not mine:
            return np.zeros(1)
        at = model.cycle_loss_at(table, np.array([r.t for r in mine]))
        return fx.renewed_base(at, times, mine)

    # ------------------------------------------------------------------ truth

    def true_soh(self, times: np.ndarray) -> np.ndarray:
        """Ground-truth SoH fraction, (n, strings, blocks), without measurement noise."""
        times = _times(times)
        state = self._state()
        return self._chunked(times, lambda chunk: self._true_soh(state, chunk))

    def _true_soh(self, state: _State, times: np.ndarray) -> np.ndarray:
        soh = self._soh_without_cycles(times, state.located, state.renewals)
        per = self.layout.strings_per_ups
        for u, table in enumerate(state.events):
            loss = model.cycle_loss_at(table, times)
            loss -= self._renewal_bases(table, u, times, state.renewals)
            soh[:, u * per : (u + 1) * per] -= loss
        return soh

    def end_of_life_time(self) -> np.ndarray:
        """(strings, blocks) Unix time true SoH first reaches 80 %; inf if not within the horizon.
        A replaced block's is its latest replacement's.

        Searched on a daily grid and interpolated within the day, given the faults injected so far.
        """
        state = self._state()
        cached = self._eol_cache
        if cached is not None and cached[0] == state.version:
            return cached[1].copy()
        grid = self.installed_t + SECONDS_PER_DAY * np.arange(len(self._table.increments) + 1)
        soh = self._chunked(grid, lambda chunk: self._true_soh(state, chunk))
        below = soh <= END_OF_LIFE_SOH
        for r in state.renewals:  # the block there now: from its own installation on
            below[grid < r.t, r.k, r.b] = False
        j = below.argmax(axis=0)
        before = np.maximum(j - 1, 0)
        s_before = np.take_along_axis(soh, before[None], axis=0)[0]
        s_at = np.take_along_axis(soh, j[None], axis=0)[0]
        drop = s_before - s_at
        frac = np.divide(s_before - END_OF_LIFE_SOH, drop, out=np.zeros_like(drop), where=drop > 0)
        eol = grid[before] + np.clip(frac, 0.0, 1.0) * (grid[j] - grid[before])
        eol = np.where(below.any(axis=0), eol, np.inf)
        self._eol_cache = (state.version, eol)
        return eol.copy()

    # ------------------------------------------------------------------ readings

    def readings(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """Measured values at many times: block arrays (n, K, B), string_current (n, K)."""
        times = _times(times)
        state = self._state()
        n, k, b = len(times), self.layout.string_count, self.layout.blocks_per_string
        out = {key: np.empty((n, k, b)) for key in READING_KEYS}
        out["string_current"] = np.empty((n, k))
        for lo in range(0, n, _CHUNK):
            chunk = times[lo : lo + _CHUNK]
            measured = self._measure(self._frame(state, chunk), chunk, state)
            for key, array in out.items():
                array[lo : lo + len(chunk)] = measured[key]
        return out

    def snapshot(self, t: float) -> SiteSnapshot:
        """Every reading of the site at one instant, shaped for the Modbus and SNMP servers."""
        times = _times(_finite(t))
        state = self._state()
        frame = self._frame(state, times)
        measured = self._measure(frame, times, state)
        ups_count, per = self.layout.ups_count, self.layout.strings_per_ups
        status = np.where(
            frame.on_battery[0],
            StringStatus.DISCHARGING,
            np.where((frame.soc[0] < 1.0).any(axis=1), StringStatus.RECHARGING, StringStatus.FLOAT),
        ).astype(np.int8)
        capacity = self.location.battery_model.nominal_capacity_ah * frame.soh[0]
        remaining_ah = (frame.soc[0] * capacity).min(axis=1).reshape(ups_count, per).mean(axis=1)
        load = np.where(frame.on_battery[0], frame.load_a[0], self.params.load_current_a)
        ups_load = load.reshape(ups_count, per).max(axis=1)
        return SiteSnapshot(
            t=float(times[0]),
            voltage=measured["voltage"][0],
            temperature=measured["temperature"][0],
            internal_resistance=measured["internal_resistance"][0],
            soc_pct=measured["soc_pct"][0],
            soh_pct=measured["soh_pct"][0],
            string_current=measured["string_current"][0],
            string_voltage=measured["string_voltage"][0],
            string_status=status,
            ups_seconds_on_battery=frame.seconds_on_battery[0],
            ups_minutes_remaining=60.0 * remaining_ah / ups_load,
            ups_charge_pct=100.0 * frame.soc[0].reshape(ups_count, -1).mean(axis=1),
        )

    @staticmethod
    def _chunked(times: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if len(times) <= _CHUNK:
            return fn(times)
        return np.concatenate([fn(times[lo : lo + _CHUNK]) for lo in range(0, len(times), _CHUNK)])

    def _frame(self, state: _State, times: np.ndarray) -> _Frame:
        """The true state of every block at ``times`` (one chunk)."""
        p, per = self.params, self.layout.strings_per_ups
        n, (k, b) = len(times), self.blocks.soh0.shape
        soh = self._soh_without_cycles(times, state.located, state.renewals)
        soc, load, heating = np.empty((n, k, b)), np.empty((n, k)), np.empty((n, k))
        on = np.empty((n, k), dtype=bool)
        on_seconds = np.empty((n, self.layout.ups_count))
        for u, table in enumerate(state.events):
            outage = model.outage_state(table, times, p)
            strings = slice(u * per, (u + 1) * per)
            soh[:, strings] -= outage.cycle_loss - self._renewal_bases(
                table, u, times, state.renewals
            )
            soc[:, strings] = outage.soc
            on[:, strings] = outage.on_battery[:, None]
            load[:, strings] = outage.load_a[:, None]
            heating[:, strings] = outage.heating_w_to_c[:, None]
            on_seconds[:, u] = outage.seconds_on_battery
        soh0 = self._initial(times, state.renewals, "soh0")
        resistance = model.internal_resistance(
            self._initial(times, state.renewals, "r0"), soh0, soh, p.r_ageing_slope
        )
        fx.apply_resistance_jump(resistance, state.located, times)
        r_eff = resistance * p.r_effective_factor
        season = model.seasonal_offset(times, p.seasonal_amplitude_c, p.seasonal_peak_day)
        room = self.blocks.mean_temp_c[None] + season[:, None, None]
        temperature = room + heating[:, :, None] * r_eff
        fx.add_overheating(temperature, state.located, times)
        voltage, current = self._electrical(
            state,
            times,
            soc=soc,
            soh=soh,
            aged=soh0 - soh,
            temperature=temperature,
            r_eff=r_eff,
            on=on,
            load=load,
        )
        return _Frame(soh, soc, temperature, resistance, voltage, current, on, load, on_seconds)

    def _electrical(
        self,
        state: _State,
        times: np.ndarray,
        *,
        soc: np.ndarray,
        soh: np.ndarray,
        aged: np.ndarray,
        temperature: np.ndarray,
        r_eff: np.ndarray,
        on: np.ndarray,
        load: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Block voltages and string current: float, recharge or discharge, with shorted cells
        and overcharge."""
        p, spec, blocks = self.params, self.location.battery_model, self.layout.blocks_per_string
        shape = self.blocks.soh0.shape
        shorts = fx.shorted_cells(state.located, times, shape)
        drop = None
        if shorts is not None:
            shorts = np.minimum(shorts, spec.cells - 1)
            drop = shorts * p.shorted_cell_drop_v
        high_blocks, high_strings = fx.overcharge(state.located, times, shape)
        if high_blocks is not None:
            drop = (0.0 if drop is None else drop) - high_blocks * spec.cells
        string_temp = temperature.mean(axis=2)  # the charger's compensation probe
        setpoint = model.string_setpoint(string_temp, spec.cells, blocks, p)
        if high_strings is not None:
            setpoint = setpoint + high_strings * spec.cells * blocks
        voltage = model.float_block_voltages(setpoint, self.blocks.float_spread_v, drop)
        deficit = 1.0 - soc
        boost = np.minimum(deficit / p.recharge_boost_full_deficit, 1.0)
        voltage += p.recharge_boost_v_per_cell * spec.cells * boost
        capacity = spec.nominal_capacity_ah * soh
        recharge = (capacity * deficit).mean(axis=2) * 3600.0 / p.recharge_tau_s
        current = recharge + model.float_current(string_temp, aged.mean(axis=2), p)
        if on.any():
            cells = spec.cells if shorts is None else spec.cells - shorts
            discharge = model.discharge_voltage(soc, load[:, :, None], r_eff, cells, p)
            voltage = np.where(on[:, :, None], discharge, voltage)
            current = np.where(on, -load, current)
        return voltage, current

    def _measure(self, frame: _Frame, times: np.ndarray, state: _State) -> dict[str, np.ndarray]:
        """Add measurement noise (a pure function of seed, sensor and time) and sensor dropouts."""
        p, shape = self.params, frame.soh.shape
        keys = model.time_keys(times)
        noise_v, noise_t = model.normal_pair(self._block_keys[0], keys)
        noise_r, noise_s = model.normal_pair(self._block_keys[1], keys)
        noise_i, noise_sv = model.normal_pair(self._string_keys, keys)
        out = {
            "voltage": frame.voltage + p.noise_voltage_v * noise_v.reshape(shape),
            "temperature": frame.temperature + p.noise_temperature_c * noise_t.reshape(shape),
            "internal_resistance": frame.resistance
            * (1.0 + p.noise_resistance_rel * noise_r.reshape(shape)),
            "soc_pct": 100.0 * frame.soc,
            "soh_pct": 100.0 * frame.soh + p.noise_soh_pct * noise_s.reshape(shape),
        }
        fx.apply_dropout([out[key] for key in READING_KEYS], state.located, times)
        out["string_current"] = frame.current + p.noise_current_a * noise_i
        out["string_voltage"] = frame.voltage.sum(axis=2) + p.noise_string_voltage_v * noise_sv
        return out
