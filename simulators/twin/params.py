"""The twin's physics constants, each with the reason it has the value it has.

Nameplate values (voltage, capacity, cells, design life) come from ``BatteryModelSpec``; this module
holds everything else the model needs, so one ``TwinParams`` describes one battery model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from common.fleet import BatteryModelSpec

GAS_CONSTANT_J_MOL_K = 8.314462618
KELVIN = 273.15
REFERENCE_TEMP_C = 25.0
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_YEAR = 365.2425 * SECONDS_PER_DAY
END_OF_LIFE_SOH = 0.80  # IEEE 1188: replace at 80 % of rated capacity


def activation_energy_for_halving(delta_c: float = 10.0, at_c: float = REFERENCE_TEMP_C) -> float:
    """Ea (J/mol) making life halve every ``delta_c`` above ``at_c`` (the VRLA rule of thumb)."""
    t1, t2 = at_c + KELVIN, at_c + delta_c + KELVIN
    return math.log(2.0) * GAS_CONSTANT_J_MOL_K / (1.0 / t1 - 1.0 / t2)


_SIGNED_FIELDS = frozenset({"temp_comp_v_per_c_per_cell"})
_POSITIVE_FIELDS = (
    "load_current_a",
    "recharge_tau_s",
    "thermal_time_constant_s",
    "outage_median_s",
    "cycle_n100",
    "r0_ohm",
    "float_v_per_cell",
    "horizon_years",
    "recharge_boost_full_deficit",
)


@dataclass(frozen=True)
class TwinParams:
    """Model constants for one battery model (defaults: a 12 V 120 Ah VRLA monobloc)."""

    # --- temperature ---
    room_temp_c: float = 24.0  # design battery-room temperature; sites add their temp_offset_c
    position_gradient_c: float = 1.0  # middle of a string runs warmer (neighbours on both sides)
    block_temp_sigma_c: float = 0.3  # airflow differs block to block
    float_heating_c: float = 0.3  # float current dissipates a little heat
    seasonal_amplitude_c: float = 1.5  # cooling never fully cancels the outdoor season
    seasonal_peak_day: float = 105.0  # mid-April: the hottest month in Thailand
    thermal_resistance_k_per_w: float = 0.1  # block to room; 135 W of I²R settles ~13 °C up
    thermal_time_constant_s: float = 3_000.0  # ~30 kJ/K heat capacity of a 35 kg block x 0.1 K/W

    # --- calendar ageing ---
    activation_energy_j_mol: float = activation_energy_for_halving()  # ≈ 52.9 kJ/mol
    calendar_loss_at_design_life: float = 0.20  # end of life = 80 % capacity at design life, 25 °C
    ageing_sigma: float = 0.10  # lognormal block-to-block spread of the ageing rate
    weak_fraction: float = 0.02  # a few blocks per site come from a bad batch
    weak_multiplier: tuple[float, float] = (2.0, 3.0)  # they age 2–3x faster
    soh_initial: tuple[float, float] = (0.99, 1.02)  # new blocks test at 99–102 % of rating
    horizon_years: float = 30.0  # the cumulative ageing table covers this span from installation

    # --- outages and cycle ageing ---
    load_current_a: float = 100.0  # per string: ~43 kW at 432 V nominal
    outage_median_s: float = 240.0  # most grid outages last a few minutes
    outage_sigma: float = 0.8  # lognormal spread: a long outage now and then
    cycle_loss_at_n100: float = 0.20  # N100 full cycles use up the 20 % to end of life
    cycle_n100: float = 250.0  # typical VRLA full-depth cycle life
    cycle_exponent: float = 1.5  # Wöhler exponent: shallow discharges cost little

    # --- resistance ---
    r0_ohm: float = 0.0045  # fleet reference value for a new 120 Ah block
    r0_spread: float = 0.05  # manufacturing spread
    r_ageing_slope: float = 2.5  # R rises ~50 % by the time 20 % capacity is lost
    r_effective_factor: float = 3.0  # polarisation makes the discharge drop a few times ohmic
    resistance_jump_factor: float = 1.6  # default RESISTANCE_JUMP: past the +50 % replace line

    # --- voltage and current ---
    float_v_per_cell: float = 2.25  # at 25 °C
    temp_comp_v_per_c_per_cell: float = -0.003  # charger temperature compensation
    block_float_sigma_v: float = 0.06  # float voltages spread block to block
    shorted_cell_drop_v: float = 2.2  # a shorted cell shows as ~2.2 V low on float
    ocv_empty_v_per_cell: float = 1.95  # OCV(SoC) = cells · (1.95 + 0.19 · SoC)
    ocv_span_v_per_cell: float = 0.19  # full OCV 2.14 V/cell = 12.84 V per block
    end_of_discharge_v_per_cell: float = 1.75  # 10.5 V per block
    recharge_tau_s: float = 3.0 * 3600.0  # SoC recovers exponentially after an outage
    recharge_done_deficit: float = 0.002  # below 0.2 % missing the charger is back on float
    recharge_boost_v_per_cell: float = 0.05  # recharging sits a little above float ...
    recharge_boost_full_deficit: float = 0.05  # ... fully while >= 5 % of the charge is missing
    float_current_a: float = 0.15  # float current of a new block at 25 °C
    float_current_age_gain: float = 5.0  # +100 % float current at 20 % capacity lost

    # --- measurement noise (readings only, never the truth) ---
    noise_voltage_v: float = 0.005
    noise_temperature_c: float = 0.1
    noise_resistance_rel: float = 0.01
    noise_soh_pct: float = 0.3
    noise_current_a: float = 0.05
    noise_string_voltage_v: float = 0.05

    def __post_init__(self) -> None:
        """Reject constants that would make the physics meaningless (NaN, negative rates)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            signed = field.name in _SIGNED_FIELDS
            if any(not math.isfinite(v) or (v < 0 and not signed) for v in values):
                raise ValueError(f"TwinParams.{field.name} must be finite and >= 0, got {value!r}")
        for name in _POSITIVE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"TwinParams.{name} must be > 0")
        for low, high in (self.weak_multiplier, self.soh_initial):
            if low > high:
                raise ValueError(f"range ({low}, {high}) is reversed")

    @classmethod
    def for_model(cls, spec: BatteryModelSpec, **overrides: Any) -> TwinParams:
        """Defaults scaled to a block model: resistance falls as capacity rises."""
        r0 = cls.r0_ohm * 120.0 / spec.nominal_capacity_ah * spec.cells / 6.0
        return dataclasses.replace(cls(), r0_ohm=r0, **overrides)

    @property
    def ea_over_r(self) -> float:
        """Ea/R in kelvin, the Arrhenius slope."""
        return self.activation_energy_j_mol / GAS_CONSTANT_J_MOL_K
