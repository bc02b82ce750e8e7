"""An MQTT v5 client for the broker tests: credentials, TLS, and what the broker answered.

``tests.mqtt_capture.Capture`` records messages of an open broker; these tests need the reason
codes of a secured one (CONNACK, PUBACK) and bounded waits for each, so they have their own.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

WAIT_S = 10.0


class Client:
    """One connection; ``messages`` queues (topic, payload) as they arrive.

    paho's automatic reconnection is off, so that a connection the broker closes stays closed
    for the test to see (two clients with one id would otherwise take turns throwing each other
    off).
    """

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        ca_file: Path | None = None,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.port = port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[ReasonCode | None] = queue.Queue()
        self.disconnected = threading.Event()
        self._acks: dict[int, ReasonCode] = {}
        self._acked = threading.Condition()
        self._subacks: queue.Queue[list[str]] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))  # verifies the name 127.0.0.1 too
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda _c, _u, _m, reasons, _p: self._subacks.put(
            [str(r) for r in reasons]
        )
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_disconnect(self, _client, _userdata, _flags, _reason, _props) -> None:
        self.disconnected.set()
        self.connack.put(None)  # wakes a connect() waiting for a CONNACK that will not come

    def _on_publish(self, _client, _userdata, mid, reason, _props) -> None:
        with self._acked:
            self._acks[mid] = reason
            self._acked.notify_all()

    def connect(self) -> ReasonCode | None:
        """Connect and wait for the CONNACK: its reason code, or None if the connection was
        closed without one."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        try:
            return self.connack.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {WAIT_S} s") from None

    def connected(self) -> Client:
        """``connect``, requiring success."""
        reason = self.connect()
        assert reason is not None, "the broker closed the connection without a CONNACK"
        assert not reason.is_failure, f"the broker refused the connection: {reason}"
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish with QoS 1 and wait for the PUBACK: its reason code (``Success``, ``No
        matching subscribers`` and ``Not authorized`` are what these tests see)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        deadline = time.monotonic() + WAIT_S
        with self._acked:
            while info.mid not in self._acks:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no PUBACK for {topic} within {WAIT_S} s"
                self._acked.wait(remaining)
            return self._acks.pop(info.mid)

    def subscribe(self, topic: str) -> list[str]:
        """Subscribe with QoS 1; the SUBACK's reasons."""
        self.client.subscribe(topic, qos=1)
        try:
            return self._subacks.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no SUBACK for {topic} within {WAIT_S} s") from None

    def disconnect_with_will(self) -> None:
        """MQTT v5 DISCONNECT asking the broker to publish the will, as the agent does when it
        dies without a clean stop; waits until the connection is closed."""
        self.client.disconnect(
            reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        )
        assert self.disconnected.wait(WAIT_S), "the connection did not close"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        leftover = self.client.socket()
        if leftover is not None:  # paho's thread stopped before it closed the connection
            leftover.close()
