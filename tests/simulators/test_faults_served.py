"""Each fault, injected into a running ``battery-sim site``, shows in what the standard tools
read, and clears again. mbpoll and snmpget are the referees; the map decodes what they print."""

import time

import pytest

from common import snmp_oids as so
from common.registercodec import decode_registers
from common.registermap import FieldKey, load_register_map
from tests.conftest import SimulatedSite
from tests.referees import mbpoll, snmpget_v2c
from tests.support import READING_TOLERANCE

pytestmark = pytest.mark.integration

MAP = load_register_map()
BLOCKS = 36
UNIT, BLOCK = 2, 9  # STR-DC-CNX-01-UPS-01-02, position 10
BAT = "BAT-DC-CNX-01-UPS-01-STR-02-010"
FIELDS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct")
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"


def read_block(site, block=BLOCK, unit=UNIT) -> dict:
    start = MAP.address("voltage", block)
    poll = mbpoll(site.modbus_port, unit, start, len(FIELDS))
    assert poll.returncode == 0, poll.stderr
    decoded = decode_registers(MAP, start, poll.ints(start, len(FIELDS)), BLOCKS)
    return {name: decoded[FieldKey(name, block)] for name in FIELDS}


def read_header(site, unit: int) -> dict:
    start, count = 0, MAP.address("string_status") + 1
    poll = mbpoll(site.modbus_port, unit, start, count)
    assert poll.returncode == 0, poll.stderr
    return {
        key.name: value
        for key, value in decode_registers(MAP, start, poll.ints(start, count), BLOCKS).items()
    }


def output_source(site, community: str) -> int:
    value = snmpget_v2c(site.snmp_port, community, UPS_OUTPUT_SOURCE, retries=1)
    assert value is not None, f"no SNMP answer for community {community}"
    return int(value)


def snmp_value(site, community: str, obj: so.MibObject, *index: int) -> float:
    value = snmpget_v2c(site.snmp_port, community, so.format_oid(obj.instance(*index)), retries=1)
    assert value is not None, f"no SNMP answer for {obj.name} of community {community}"
    return obj.decode(int(value))


def ups_battery_voltage(site, community: str) -> float:
    return snmp_value(site, community, so.UPS_BATTERY_VOLTAGE)


def snmp_block_voltage(site, string: int, position: int) -> float:
    """brmBatteryVoltage of a block of UPS 02 (its string number there, position)."""
    return snmp_value(site, "public@2", so.BRM_BATTERY_VOLTAGE, string, position)


def snmp_block_soh(site, string: int, position: int) -> float:
    return snmp_value(site, "public@2", so.BRM_BATTERY_SOH, string, position)


def test_overheating(simulated_site):
    before = read_block(simulated_site)["temperature"]
    fault = simulated_site.inject("overheating", BAT, delta_c=20)
    assert read_block(simulated_site)["temperature"] == pytest.approx(before + 20, abs=1.0)
    simulated_site.request(f"/sites/DC-CNX-01/faults/{fault['id']}", "DELETE")
    assert read_block(simulated_site)["temperature"] == pytest.approx(before, abs=1.0)


def test_shorted_cell_drops_one_cell_and_the_others_take_it_up(simulated_site):
    before, neighbour = read_block(simulated_site), read_block(simulated_site, BLOCK + 1)
    simulated_site.inject("shorted_cell", BAT)
    during = read_block(simulated_site)
    assert 1.9 < before["voltage"] - during["voltage"] < 2.5
    rise = read_block(simulated_site, BLOCK + 1)["voltage"] - neighbour["voltage"]
    assert 0.03 < rise < 0.12  # the charger holds the string: 35 blocks share ~2.2 V
    simulated_site.clear_all()
    assert read_block(simulated_site)["voltage"] == pytest.approx(before["voltage"], abs=0.05)


def test_resistance_jump(simulated_site):
    before = read_block(simulated_site)["internal_resistance"]
    assert 0.003 < before < 0.008
    simulated_site.inject("resistance_jump", BAT, factor=1.6)
    assert read_block(simulated_site)["internal_resistance"] == pytest.approx(
        1.6 * before, rel=0.04
    )
    simulated_site.clear_all()
    assert read_block(simulated_site)["internal_resistance"] == pytest.approx(before, rel=0.04)


def test_sensor_dropout_reads_not_available_then_returns(simulated_site):
    simulated_site.inject("sensor_dropout", BAT)
    assert read_block(simulated_site) == dict.fromkeys(FIELDS)
    assert all(v is not None for v in read_block(simulated_site, BLOCK - 1).values())
    simulated_site.clear_all()
    assert all(v is not None for v in read_block(simulated_site).values())


def test_no_response_silences_one_monitor_until_cleared(simulated_site):
    simulated_site.inject("no_response", "STR-DC-CNX-01-UPS-01-02")
    start = MAP.address("voltage", 0)
    assert mbpoll(simulated_site.modbus_port, UNIT, start, 5, timeout=1.0).returncode != 0
    assert mbpoll(simulated_site.modbus_port, 1, start, 5, timeout=1.0).returncode == 0
    simulated_site.clear_all()
    assert mbpoll(simulated_site.modbus_port, UNIT, start, 5, timeout=1.0).returncode == 0


def test_overcharge_of_a_block_and_of_a_ups_charger(simulated_site):
    """Over Modbus, one block floating high within its string's unchanged total; over SNMP, a UPS
    whose charger is set too high: its battery voltage and every one of its blocks up."""
    before, string_before = read_block(simulated_site), read_header(simulated_site, UNIT)
    ups_before = ups_battery_voltage(simulated_site, "public@2")
    snmp_block = snmp_block_voltage(simulated_site, 3, 7)
    simulated_site.inject("overcharge", BAT, delta_v_per_cell=0.2)
    simulated_site.inject("overcharge", "DC-CNX-01-UPS-02", delta_v_per_cell=0.1)
    tolerance = READING_TOLERANCE["voltage"]
    assert read_block(simulated_site)["voltage"] == pytest.approx(
        before["voltage"] + 1.2, abs=tolerance
    )
    # The charger still holds the string's total: the other 35 blocks gave way.
    string_voltage = read_header(simulated_site, UNIT)["string_voltage"]
    assert string_voltage == pytest.approx(string_before["string_voltage"], abs=0.5)
    assert ups_battery_voltage(simulated_site, "public@2") == pytest.approx(
        ups_before + 36 * 0.6, abs=0.5
    )
    assert snmp_block_voltage(simulated_site, 3, 7) == pytest.approx(
        snmp_block + 0.6, abs=tolerance
    )
    simulated_site.clear_all()
    assert read_block(simulated_site)["voltage"] == pytest.approx(before["voltage"], abs=tolerance)
    assert ups_battery_voltage(simulated_site, "public@2") == pytest.approx(ups_before, abs=0.5)


def test_capacity_loss_lowers_the_soh_both_protocols_serve_until_cleared(simulated_site):
    before = read_block(simulated_site)
    snmp_before = snmp_block_soh(simulated_site, 2, 30)
    simulated_site.inject("capacity_loss", BAT, soh_drop_pct=10)
    simulated_site.inject("capacity_loss", "BAT-DC-CNX-01-UPS-02-STR-02-030", soh_drop_pct=15)
    tolerance = READING_TOLERANCE["soh_pct"]
    during = read_block(simulated_site)
    assert during["soh_pct"] == pytest.approx(before["soh_pct"] - 10, abs=tolerance)
    assert during["internal_resistance"] > 1.15 * before["internal_resistance"]  # R follows SoH
    assert snmp_block_soh(simulated_site, 2, 30) == pytest.approx(snmp_before - 15, abs=tolerance)
    simulated_site.clear_all()
    after = read_block(simulated_site)
    assert after["soh_pct"] == pytest.approx(before["soh_pct"], abs=tolerance)
    assert after["internal_resistance"] == pytest.approx(before["internal_resistance"], rel=0.04)
    assert snmp_block_soh(simulated_site, 2, 30) == pytest.approx(snmp_before, abs=tolerance)


@pytest.fixture
def fast_site(tmp_path):
    """A site at --time-scale 60: a second on the wall is a minute of discharge."""
    site = SimulatedSite("DC-CNX-01", tmp_path, time_scale=60.0)
    site.start()
    yield site
    site.stop()


def test_mains_outage_discharges_then_recharges(fast_site):
    simulated_site = fast_site
    assert read_header(simulated_site, 1)["string_status"] == 0
    assert output_source(simulated_site, "public") == 3
    on_float = read_block(simulated_site, unit=1)["voltage"]
    simulated_site.inject("mains_outage", "DC-CNX-01-UPS-01", duration_s=3600, load_a=100)
    header = read_header(simulated_site, 1)
    assert header["string_status"] == 1
    assert header["string_current"] == pytest.approx(-100, abs=2)
    assert read_block(simulated_site, unit=1)["voltage"] < on_float - 0.8  # sags under load
    assert output_source(simulated_site, "public") == 5  # UPS 1 on battery
    assert output_source(simulated_site, "public@2") == 3  # UPS 2 still on mains
    assert read_header(simulated_site, 4)["string_status"] == 0
    time.sleep(2.0)  # two simulated minutes at 100 A: 1.4 % of the charge drawn
    assert read_block(simulated_site, unit=1)["soc_pct"] < 99.5
    simulated_site.clear_all()
    header = read_header(simulated_site, 1)
    assert header["string_status"] == 2  # recharging
    assert header["string_current"] > 0
    assert output_source(simulated_site, "public") == 3
