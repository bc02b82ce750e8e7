"""The shared fixtures give real, private servers."""

import threading

import numpy as np
import paho.mqtt.client as mqtt
import psycopg2
import pytest

pytestmark = pytest.mark.integration


def test_broker_delivers_and_survives_a_restart(mqtt_broker):
    received: list[bytes] = []
    arrived = threading.Event()

    def on_message(_client, _userdata, message):
        received.append(message.payload)
        arrived.set()

    sub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-sub", protocol=mqtt.MQTTv5
    )
    sub.on_message = on_message
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.subscribe("fixture/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-pub", protocol=mqtt.MQTTv5
    )
    pub.connect(mqtt_broker.host, mqtt_broker.port)
    pub.loop_start()
    try:
        pub.publish("fixture/a", b"one", qos=1).wait_for_publish(5)
        assert arrived.wait(5)
        assert received == [b"one"]
    finally:
        for client in (pub, sub):
            client.loop_stop()
            client.disconnect()

    mqtt_broker.stop()
    mqtt_broker.start()
    again = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-again")
    assert again.connect(mqtt_broker.host, mqtt_broker.port) == mqtt.MQTT_ERR_SUCCESS
    again.disconnect()


def test_database_is_fresh_and_writable(pg_database_url):
    with psycopg2.connect(pg_database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cursor.fetchone() == (0,)
        cursor.execute("CREATE TABLE probe (id int)")
        cursor.execute("INSERT INTO probe VALUES (1)")
        cursor.execute("SELECT current_database(), count(*) FROM probe")
        name, count = cursor.fetchone()
    assert name.startswith("brm_test_")
    assert count == 1


def test_the_quiet_start_is_quiet():
    """Live tests start their sites at QUIET_START; no seeded grid outage may be near it."""
    from common.fleet import demo_fleet_path, load_fleet
    from simulators.twin import SiteTwin
    from tests.support import QUIET_EPOCH

    fleet = load_fleet(demo_fleet_path())
    for site, seed in (("DC-CNX-01", 0), ("DC-CNX-01", 1), ("DC-CNX-01", 2), ("DC-BKK-01", 1)):
        twin = SiteTwin(fleet.get(site), seed=seed)
        times = QUIET_EPOCH + np.arange(-2 * 86_400, 86_400, 60.0)  # recharge, then a day
        assert (twin.readings(times)["string_current"] < 1.0).all(), (site, seed)
        snapshot = twin.snapshot(QUIET_EPOCH)
        assert (snapshot.string_status == 0).all(), (site, seed)
        assert (snapshot.soc_pct == 100).all(), (site, seed)
