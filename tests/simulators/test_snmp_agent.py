"""The SNMP agent simulator, refereed by net-snmp's tools, NUT's snmp-ups and pysnmp's manager.

The agent serves a real twin on a frozen simulated clock, so what the tools read can be compared
exactly with ``live.snapshot()``; tests that need time to pass move the clock by hand.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common import snmp_oids as so
from common.fleet import demo_fleet_path, load_fleet
from simulators.clock import SimClock
from simulators.live import LiveSite
from simulators.snmp_agent import SnmpCredentials, SnmpSimulator, SnmpSimulatorError, serve_snmp
from simulators.twin import SiteTwin

T = TypeVar("T")
SITE = "DC-CNX-01"
UPS1, UPS2 = f"{SITE}-UPS-01", f"{SITE}-UPS-02"
MIB_DIR = Path(so.__file__).with_name("data")
V3 = ["-v3", "-l", "authPriv", "-u", "brm", "-a", "SHA", "-A", "brm-auth-key", "-x", "AES"]
V3_PRIV = ["-X", "brm-priv-key"]
SYS_NAME = so.format_oid(so.SYS_NAME.instance())
BATTERY_GROUP = so.format_oid(so.UPS_BATTERY)

pytestmark = pytest.mark.integration


class Wall:
    """A wall clock the test moves by hand, so the twin only changes when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        time.sleep(0.1)  # past LiveSite's snapshot cache


class AgentThread:
    """The agent on its own event loop in a thread, as the command-line tools need."""

    def __init__(self, live: LiveSite, credentials: SnmpCredentials | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = serve_snmp(live, "127.0.0.1", 0, credentials or SnmpCredentials())
        self.agent: SnmpSimulator = self.call(start)
        self.target = f"127.0.0.1:{self.agent.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.agent.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def live(wall: Wall) -> LiveSite:
    twin = SiteTwin(load_fleet(demo_fleet_path()).get(SITE), seed=1)
    return LiveSite(twin, SimClock(epoch=1_800_000_000.0, wall=wall))


@pytest.fixture
def agent(live: LiveSite) -> Iterator[AgentThread]:
    if shutil.which("snmpget") is None:
        pytest.fail("net-snmp's tools are not installed (.ci/run installs package snmp)")
    running = AgentThread(live)
    yield running
    running.close()


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def values_of(output: str) -> dict[str, str]:
    """``-Oq`` output (``name value`` per line) as a dict, quotes stripped."""
    pairs = (line.split(" ", 1) for line in output.splitlines() if " " in line)
    return {name.lstrip("."): value.strip().strip('"') for name, value in pairs}


def snmp(tool: str, target: str, *args: str, version: tuple[str, ...] = ()) -> dict[str, str]:
    """Run a net-snmp tool with numeric, quick output and return what it printed."""
    done = run(tool, *(version or ("-v2c", "-c", "public")), "-OnqeUt", target, *args)
    assert done.returncode == 0, done.stderr
    return values_of(done.stdout)


def ups_expected(live: LiveSite, ups: int) -> dict[so.Oid, int | None]:
    """What the UPS-MIB battery group must say, straight from the twin's snapshot."""
    snap = live.snapshot()
    rows = slice(3 * ups, 3 * ups + 3)
    readings = so.UpsReadings.of_strings(
        seconds_on_battery=float(snap.ups_seconds_on_battery[ups]),
        minutes_remaining=float(snap.ups_minutes_remaining[ups]),
        charge_pct=float(snap.ups_charge_pct[ups]),
        string_voltages=snap.string_voltage[rows].tolist(),
        string_currents=snap.string_current[rows].tolist(),
        block_temperatures=snap.temperature[rows].ravel().tolist(),
        on_battery=bool((snap.string_status[rows] == 1).any()),
    )
    return so.ups_live_values(readings)


def base_mib_dir(tmp_path: Path) -> Path:
    """A directory with SNMPv2-SMI/-TC/-CONF: the system's, else minimal stand-ins.

    Debian ships net-snmp without the IETF MIBs (snmp-mibs-downloader fetches them), so a
    machine may lack them; the stand-ins define only what BRM-BATTERY-MIB imports.
    """
    candidates = [Path(p) for p in ("/usr/share/snmp/mibs/ietf", "/var/lib/snmp/mibs/ietf")]
    candidates += sorted(Path("/usr/lib/erlang/lib").glob("snmp-*/mibs"))  # erlang-snmp's copy
    for directory in candidates:
        if any(directory.glob("SNMPv2-SMI*")) and any(directory.glob("SNMPv2-TC*")):
            return directory
    (tmp_path / "SNMPv2-SMI.txt").write_text(
        "SNMPv2-SMI DEFINITIONS ::= BEGIN\n"
        "org OBJECT IDENTIFIER ::= { iso 3 }\ndod OBJECT IDENTIFIER ::= { org 6 }\n"
        "internet OBJECT IDENTIFIER ::= { dod 1 }\nprivate OBJECT IDENTIFIER ::= { internet 4 }\n"
        "enterprises OBJECT IDENTIFIER ::= { private 1 }\nEND\n"
    )
    (tmp_path / "SNMPv2-TC.txt").write_text(
        "SNMPv2-TC DEFINITIONS ::= BEGIN\nDisplayString ::= TEXTUAL-CONVENTION\n"
        '    DISPLAY-HINT "255a"\n    STATUS current\n    DESCRIPTION "NVT ASCII text."\n'
        "    SYNTAX OCTET STRING (SIZE (0..255))\nEND\n"
    )
    (tmp_path / "SNMPv2-CONF.txt").write_text("SNMPv2-CONF DEFINITIONS ::= BEGIN\nEND\n")
    return tmp_path


# ---------------------------------------------------------------------------------------------
# What is served


def test_mib_loads_in_net_snmp(tmp_path: Path) -> None:
    mibs = f"{base_mib_dir(tmp_path)}:{MIB_DIR}"
    done = run("snmptranslate", "-M", mibs, "-m", "BRM-BATTERY-MIB", "-Tp")
    assert done.returncode == 0
    assert done.stderr == ""
    for name in ("brmBatteryTable(1)", "brmBatterySoh(11)", "brmStringCurrent(4)"):
        assert name in done.stdout
    done = run(
        "snmptranslate",
        "-M",
        mibs,
        "-m",
        "BRM-BATTERY-MIB",
        "-On",
        "BRM-BATTERY-MIB::brmBatteryVoltage",
    )
    assert done.stdout.strip() == "." + so.format_oid(so.BRM_BATTERY_VOLTAGE.oid)


def test_v2c_walk_of_the_battery_group(agent: AgentThread, live: LiveSite) -> None:
    got = snmp("snmpwalk", agent.target, BATTERY_GROUP)
    expected = ups_expected(live, 0)
    assert len(got) == 7
    for oid, value in got.items():
        assert int(value) == expected[so.parse_oid(oid)], so.object_of(so.parse_oid(oid))
    voltage = int(got[so.format_oid(so.UPS_BATTERY_VOLTAGE.instance())])
    assert 4860 - 100 <= voltage <= 4860 + 100  # 36 blocks on float, 0.1 V
    assert got[so.format_oid(so.UPS_CHARGE_REMAINING.instance())] == "100"
    assert got[so.format_oid(so.UPS_BATTERY_STATUS.instance())] == "2"  # batteryNormal


def test_system_and_ident_groups_name_the_card(agent: AgentThread) -> None:
    got = snmp("snmpwalk", agent.target, "1.3.6.1.2.1.1")
    assert got[SYS_NAME] == UPS1
    sys_object_id = got[so.format_oid(so.SYS_OBJECT_ID.instance())]
    assert so.parse_oid(sys_object_id) == so.BRM_SIMULATOR_AGENT
    assert int(got[so.format_oid(so.SYS_UPTIME.instance())]) >= 0
    ident = snmp("snmpwalk", agent.target, so.format_oid(so.UPS_IDENT))
    assert ident[so.format_oid(so.UPS_IDENT_NAME.instance())] == UPS1
    assert ident[so.format_oid(so.UPS_IDENT_MANUFACTURER.instance())] == "BRM Simulator"


def test_battery_table_walk_with_the_mib_matches_the_twin(
    agent: AgentThread, live: LiveSite, tmp_path: Path
) -> None:
    mibs = f"{base_mib_dir(tmp_path)}:{MIB_DIR}"
    done = run(
        "snmpbulkwalk", "-v2c", "-c", "public@2", "-M", mibs, "-m", "BRM-BATTERY-MIB",
        "-OqeUs", agent.target, "BRM-BATTERY-MIB::brmBatteryTable",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    got = values_of(done.stdout)
    ids = {name: value for name, value in got.items() if name.startswith("brmBatteryId.")}
    assert len(ids) == 3 * 36  # one row per block of UPS 2
    snap, inventory = live.snapshot(), live.inventory()
    for s in range(3):
        for b in range(36):
            k, index = 3 + s, f"{s + 1}.{b + 1}"
            assert got[f"brmBatteryId.{index}"] == inventory[k][b].battery_id
            assert got[f"brmBatterySerial.{index}"] == inventory[k][b].serial_number
            assert int(got[f"brmBatteryVoltage.{index}"]) == round(snap.voltage[k, b] * 1000)
            assert int(got[f"brmBatteryTemperature.{index}"]) == round(snap.temperature[k, b] * 10)
            ohms = int(got[f"brmBatteryResistance.{index}"]) / 1e6
            assert ohms == pytest.approx(snap.internal_resistance[k, b], abs=1e-6)
            assert int(got[f"brmBatterySoh.{index}"]) / 10 == pytest.approx(
                snap.soh_pct[k, b], abs=0.05
            )
            assert got[f"brmBatteryReadingState.{index}"] == "1"  # complete


def test_string_table(agent: AgentThread, live: LiveSite) -> None:
    got = snmp("snmpwalk", agent.target, so.format_oid(so.BRM_STRING_TABLE))
    snap = live.snapshot()
    for s in range(3):
        assert got[so.format_oid(so.BRM_STRING_ID.instance(s + 1))] == live.layout.string_id(s)
        voltage = int(got[so.format_oid(so.BRM_STRING_VOLTAGE.instance(s + 1))])
        assert voltage == round(snap.string_voltage[s] * 1000)
        assert got[so.format_oid(so.BRM_STRING_STATE.instance(s + 1))] == "1"  # float


def test_getbulk_walks_everything_and_getnext_ends_the_view(agent: AgentThread) -> None:
    walked = snmp("snmpwalk", agent.target, "1.3")
    bulk = snmp("snmpbulkwalk", agent.target, "-Cr30", "1.3")
    uptime = so.format_oid(so.SYS_UPTIME.instance())
    assert int(bulk.pop(uptime)) >= int(walked.pop(uptime))  # the one value that moves by itself
    assert bulk == walked
    assert len(walked) == 6 + 6 + 7 + 3 + 4 + 5 + 108 * 17 + 3 * 6
    last = max(walked, key=so.parse_oid)
    done = run("snmpgetnext", "-v2c", "-c", "public", "-OnqeU", agent.target, last)
    assert "No more variables left in this MIB View" in done.stdout


def test_get_of_what_is_not_served(agent: AgentThread) -> None:
    got = snmp("snmpget", agent.target, f"{SYS_NAME[:-1]}1", "1.3.6.1.2.1.99.0")
    assert got[f"{SYS_NAME[:-1]}1"].startswith("No Such Instance")
    assert got["1.3.6.1.2.1.99.0"].startswith("No Such Object")
    done = run("snmpset", "-v2c", "-c", "public", agent.target, SYS_NAME, "s", "hacked")
    assert done.returncode != 0
    assert "notWritable" in done.stdout + done.stderr


def test_values_follow_the_twin_and_a_missing_sensor_is_no_such_instance(
    agent: AgentThread, live: LiveSite
) -> None:
    index = (2, 5)
    voltage = so.format_oid(so.BRM_BATTERY_VOLTAGE.instance(*index))
    state = so.format_oid(so.BRM_BATTERY_READING_STATE.instance(*index))
    missing = so.format_oid(so.BRM_BATTERY_MISSING.instance(*index))
    assert snmp("snmpget", agent.target, voltage, state)[state] == "1"
    live.inject("sensor_dropout", f"BAT-{SITE}-UPS-01-STR-02-005", mode="nan")
    got = snmp("snmpget", agent.target, voltage, state, missing)
    assert got[voltage].startswith("No Such Instance")
    assert got[state] == "3"  # unavailable
    assert so.decode_bits(bytes.fromhex(got[missing])) == {0, 1, 2, 3, 4}
    walked = snmp("snmpwalk", agent.target, so.format_oid(so.BRM_BATTERY_VOLTAGE.oid))
    assert voltage not in walked
    assert len(walked) == 3 * 36 - 1  # a walk skips the missing reading


def test_a_garbage_sensor_serves_impossible_values_as_a_complete_row(
    agent: AgentThread, live: LiveSite
) -> None:
    index = (3, 36)
    columns = [*so.BATTERY_READING_OBJECTS.values(), so.BRM_BATTERY_READING_STATE]
    oids = [so.format_oid(obj.instance(*index)) for obj in columns]
    missing = so.format_oid(so.BRM_BATTERY_MISSING.instance(*index))
    live.inject("sensor_dropout", f"BAT-{SITE}-UPS-01-STR-03-036", mode="garbage")
    got = snmp("snmpget", agent.target, *oids, missing)
    assert [got[oid] for oid in oids] == ["65534", "32767", "65534000", "65534", "65534", "1"]
    assert so.decode_bits(bytes.fromhex(got[missing])) == set()
    assert so.BRM_BATTERY_VOLTAGE.decode(int(got[oids[0]])) == 65.534  # V, impossible
    walked = snmp("snmpwalk", agent.target, so.format_oid(so.BRM_BATTERY_TEMPERATURE.oid))
    assert len(walked) == 3 * 36  # served, unlike a missing reading


def test_mains_outage_shows_on_battery(agent: AgentThread, live: LiveSite, wall: Wall) -> None:
    live.inject("mains_outage", UPS1, duration_s=600)
    wall.advance(30)
    got = snmp("snmpwalk", agent.target, BATTERY_GROUP)
    got |= snmp("snmpget", agent.target, so.format_oid(so.UPS_OUTPUT_SOURCE.instance()))
    assert got[so.format_oid(so.UPS_OUTPUT_SOURCE.instance())] == "5"  # battery
    assert got[so.format_oid(so.UPS_SECONDS_ON_BATTERY.instance())] == "30"
    assert int(got[so.format_oid(so.UPS_BATTERY_CURRENT.instance())]) < 0
    expected = ups_expected(live, 0)
    assert (
        int(got[so.format_oid(so.UPS_BATTERY_CURRENT.instance())])
        == expected[so.UPS_BATTERY_CURRENT.instance()]
    )
    other = snmp("snmpget", agent.target, so.format_oid(so.UPS_OUTPUT_SOURCE.instance()),
                 version=("-v2c", "-c", "public@2"))  # fmt: skip
    assert other[so.format_oid(so.UPS_OUTPUT_SOURCE.instance())] == "3"  # UPS 2 still on mains


# ---------------------------------------------------------------------------------------------
# Contexts and credentials


def test_v3_auth_priv_reads_ups_2(agent: AgentThread, live: LiveSite) -> None:
    voltage = so.format_oid(so.UPS_BATTERY_VOLTAGE.instance())
    args = (SYS_NAME, voltage)
    got = snmp("snmpget", agent.target, "-n", "ups-02", *args, version=(*V3, *V3_PRIV))
    assert got[SYS_NAME] == UPS2
    assert int(got[voltage]) == ups_expected(live, 1)[so.UPS_BATTERY_VOLTAGE.instance()]
    default = snmp("snmpget", agent.target, SYS_NAME, version=(*V3, *V3_PRIV))
    assert default[SYS_NAME] == UPS1  # the empty context is UPS 1


@pytest.mark.parametrize(
    "credentials",
    [
        ["-A", "wrong-auth-key", "-x", "AES", "-X", "brm-priv-key"],
        ["-A", "brm-auth-key", "-x", "AES", "-X", "wrong-priv-key"],
        ["-u", "mallory", "-A", "brm-auth-key", "-x", "AES", "-X", "brm-priv-key"],
        ["-l", "authNoPriv", "-A", "brm-auth-key"],
        ["-l", "noAuthNoPriv"],
    ],
    ids=["wrong-auth-key", "wrong-priv-key", "unknown-user", "no-privacy", "no-auth"],
)
def test_v3_without_the_right_credentials_gets_no_data(
    agent: AgentThread, credentials: list[str]
) -> None:
    base = ["-v3", "-l", "authPriv", "-u", "brm", "-a", "SHA"]
    done = run("snmpget", *base, *credentials, "-r", "0", "-t", "1", "-n", "ups-02",
               agent.target, SYS_NAME)  # fmt: skip
    assert done.returncode != 0
    assert UPS2 not in done.stdout
    assert done.stdout == ""


def test_unknown_context_is_reported(agent: AgentThread) -> None:
    done = run("snmpget", *V3, *V3_PRIV, "-r", "0", "-t", "2", "-n", "ups-03",
               agent.target, SYS_NAME)  # fmt: skip
    assert done.returncode != 0
    assert "context" in done.stderr.lower()  # a Report, not a timeout
    assert agent.agent.stats["unknown_context"] == 1


def test_community_indexing_selects_the_ups(agent: AgentThread) -> None:
    for community, name in (("public", UPS1), ("public@1", UPS1), ("public@2", UPS2)):
        got = snmp("snmpget", agent.target, SYS_NAME, version=("-v2c", "-c", community))
        assert got[SYS_NAME] == name
    v1 = snmp("snmpget", agent.target, SYS_NAME, version=("-v1", "-c", "public@2"))
    assert v1[SYS_NAME] == UPS2
    for wrong in ("private", "public@3", "PUBLIC"):
        done = run("snmpget", "-v2c", "-c", wrong, "-r", "0", "-t", "1", agent.target, SYS_NAME)
        assert done.returncode != 0
        assert "Timeout" in done.stderr


def test_configured_credentials_replace_the_defaults(live: LiveSite) -> None:
    credentials = SnmpCredentials(
        community="s3cret", v3_user="ops", v3_auth_key="ops-auth-key", v3_priv_key="ops-priv-key",
        v3_auth_protocol="SHA-256", v3_priv_protocol="AES-256",
    )  # fmt: skip
    running = AgentThread(live, credentials)
    try:
        assert snmp("snmpget", running.target, SYS_NAME, version=("-v2c", "-c", "s3cret@2"))
        v3 = ["-v3", "-l", "authPriv", "-u", "ops", "-a", "SHA-256", "-A", "ops-auth-key"]
        v3 += ["-x", "AES-256", "-X", "ops-priv-key", "-n", "ups-02"]
        assert snmp("snmpget", running.target, SYS_NAME, version=tuple(v3))[SYS_NAME] == UPS2
        done = run(
            "snmpget", "-v2c", "-c", "public", "-r", "0", "-t", "1", running.target, SYS_NAME
        )
        assert done.returncode != 0
    finally:
        running.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"v3_auth_key": "short"}, "8 characters"),
        ({"v3_auth_protocol": "SHA-1024"}, "auth protocol"),
        ({"v3_priv_protocol": "DES"}, "privacy protocol"),
        ({"community": ""}, "must not be empty"),
    ],
)
def test_bad_credentials_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(SnmpSimulatorError, match=message):
        SnmpCredentials(**fields)  # type: ignore[arg-type]


def test_a_port_in_use_is_a_clear_error(agent: AgentThread, live: LiveSite) -> None:
    with pytest.raises(SnmpSimulatorError, match="cannot bind"):
        agent.call(serve_snmp(live, "127.0.0.1", agent.agent.port))


# ---------------------------------------------------------------------------------------------
# Device conditions


def test_slow_card_answers_late_without_holding_up_the_other(
    agent: AgentThread, live: LiveSite
) -> None:
    live.inject("slow_response", UPS2, delay_s=2.0)
    started = time.monotonic()
    command = ["snmpget", "-v2c", "-c", "public@2", "-r", "0", "-t", "6", "-OnqeU"]
    slow = subprocess.Popen(
        [*command, agent.target, SYS_NAME],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fast = snmp("snmpget", agent.target, SYS_NAME)
        assert slow.poll() is None  # UPS 1 answered while UPS 2 is still thinking
        out, err = slow.communicate(timeout=20)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert fast[SYS_NAME] == UPS1
    assert values_of(out)[SYS_NAME] == UPS2, err
    assert time.monotonic() - started >= 2.0
    assert agent.agent.stats["delayed"] == 1


def test_silent_card_times_out_while_the_other_answers(agent: AgentThread, live: LiveSite) -> None:
    live.inject("no_response", UPS2)
    for version in (["-v2c", "-c", "public@2"], [*V3, *V3_PRIV, "-n", "ups-02"]):
        done = run("snmpget", *version, "-r", "0", "-t", "1", agent.target, SYS_NAME)
        assert done.returncode != 0
        assert "Timeout" in done.stderr
        assert snmp("snmpget", agent.target, SYS_NAME)[SYS_NAME] == UPS1
    assert agent.agent.stats["silent"] == 2


# ---------------------------------------------------------------------------------------------
# Other clients


def nut_dump(target: str, statepath: Path) -> dict[str, str]:
    if not Path("/lib/nut/snmp-ups").exists():
        pytest.fail("NUT's snmp-ups is not installed (.ci/run installs package nut-snmp)")
    done = subprocess.run(
        ["/lib/nut/snmp-ups", "-s", "test", "-x", f"port={target}", "-x", "community=public",
         "-x", "snmp_version=v2c", "-x", "mibs=ietf", "-d", "1", "-u", "root"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"NUT_STATEPATH": str(statepath), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(re.findall(r"^([a-z][\w.]*): (.*)$", done.stdout, re.M))


@pytest.mark.parametrize("outage", [False, True], ids=["on-mains", "mains-outage"])
def test_nut_reads_the_ups(
    agent: AgentThread, live: LiveSite, wall: Wall, tmp_path: Path, outage: bool
) -> None:
    if outage:
        live.inject("mains_outage", UPS1, duration_s=600)
        wall.advance(60)
    dump = nut_dump(agent.target, tmp_path)
    expected = ups_expected(live, 0)
    assert float(dump["battery.charge"]) == expected[so.UPS_CHARGE_REMAINING.instance()]
    voltage = expected[so.UPS_BATTERY_VOLTAGE.instance()]
    assert voltage is not None
    assert float(dump["battery.voltage"]) == pytest.approx(voltage / 10)
    minutes = expected[so.UPS_MINUTES_REMAINING.instance()]
    assert minutes is not None
    assert float(dump["battery.runtime"]) == minutes * 60
    assert dump["ups.status"] == ("OB" if outage else "OL")
    assert dump["ups.mfr"] == "BRM Simulator"


def test_pysnmp_manager_reads_and_decodes_the_battery_table(
    agent: AgentThread, live: LiveSite
) -> None:
    rows = agent.call(_walk_battery_table(agent.agent.port))
    assert len(rows) == 3 * 36
    snap = live.snapshot()
    for (s, b), columns in rows.items():
        decoded = so.decode_battery_row(columns)
        k = 3 + s - 1
        assert decoded["voltage"] == pytest.approx(snap.voltage[k, b - 1], abs=0.0005)
        assert decoded["soc_pct"] == pytest.approx(snap.soc_pct[k, b - 1], abs=0.05)
        temperature = decoded["temperature"]
        assert temperature is not None
        assert math.isclose(temperature, snap.temperature[k, b - 1], abs_tol=0.05)


async def _walk_battery_table(port: int) -> dict[tuple[int, ...], dict[int, Any]]:
    """What the edge agent does: a v3 authPriv GETBULK walk of context ups-02."""
    from pysnmp.hlapi.v3arch.asyncio import (
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        UsmUserData,
        bulk_walk_cmd,
        usmAesCfb128Protocol,
        usmHMACSHAAuthProtocol,
    )

    protocols = {"authProtocol": usmHMACSHAAuthProtocol, "privProtocol": usmAesCfb128Protocol}
    user = UsmUserData("brm", "brm-auth-key", "brm-priv-key", **protocols)
    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=2, retries=1)
    rows: dict[tuple[int, ...], dict[int, Any]] = {}
    table = ObjectType(ObjectIdentity(so.format_oid(so.BRM_BATTERY_TABLE)))
    walk = bulk_walk_cmd(engine, user, target, ContextData(contextName=b"ups-02"), 0, 50, table,
                         lexicographicMode=False)  # fmt: skip
    async for error_indication, error_status, _, var_binds in walk:
        assert error_indication is None
        assert not error_status
        for name, value in var_binds:
            split = so.split_row_oid(tuple(name), so.BRM_BATTERY_ENTRY)
            assert split is not None
            column, index = split
            rows.setdefault(index, {})[column] = _raw(column, value)
    engine.close_dispatcher()
    return rows


def _raw(column: int, value: Any) -> int | bytes | str:
    """A pysnmp value as the plain raw value ``decode_battery_row`` takes."""
    obj = so.CATALOGUE[(*so.BRM_BATTERY_ENTRY, column)]
    if obj.syntax == so.Syntax.BITS:
        return bytes(value)
    return str(value) if obj.syntax == so.Syntax.OCTETS else int(value)
