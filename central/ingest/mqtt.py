"""The one module that speaks paho-mqtt: a persistent MQTT v5 session with manual acknowledgement.

Ingest keeps a fixed client id, no clean start and a long session expiry, so what sites publish
while it is down waits at the broker. Telemetry and events come through a shared subscription
(several workers split them); birth and state are plain subscriptions because the broker never
sends retained messages to shared subscribers, and a worker must learn every site's inventory.

A message is acknowledged (PUBACK) only when ``Inbound.ack`` is called, after its rows are
committed. An acknowledgement is dropped if the connection it came on has since been replaced:
the broker redelivers such a message on the new connection, and ingest stores it idempotently.

``probe_broker`` answers the API's readiness check with a throwaway connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.settings import MqttSettings
from common.topics import TopicKind, Topics

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


class MqttError(Exception):
    """The broker connection could not be set up."""


@dataclass(frozen=True)
class Inbound:
    """One received message; call ``ack`` once it is safely stored (or quarantined)."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = field(repr=False, compare=False)


def subscriptions(topics: Topics, group: str) -> list[str]:
    return [
        topics.shared(group, TopicKind.TELEMETRY),
        topics.shared(group, TopicKind.EVENTS),
        topics.all_sites(TopicKind.BIRTH),
        topics.all_sites(TopicKind.STATE),
    ]


class IngestConnection:
    """A paho client delivering each message to ``deliver`` from its network thread."""

    def __init__(self, settings: MqttSettings, deliver: Callable[[Inbound], None]) -> None:
        self._settings = settings
        self._deliver = deliver
        self._filters = subscriptions(Topics(settings.topic_prefix), settings.shared_group)
        self._generation = 0
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers)."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._settings.session_expiry_s
        try:
            self._client.connect_async(
                self._settings.host,
                self._settings.port,
                keepalive=self._settings.keepalive_s,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise MqttError(f"cannot connect to {self._settings.host}: {exc}") from exc
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; unacknowledged messages stay queued at the broker for the next start."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:  # noqa: ANN001
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        log.info("connected to %s:%s", self._settings.host, self._settings.port)
        client.subscribe([(f, 1) for f in self._filters])

    def _on_disconnect(self, _client, _userdata, _flags, reason, _props) -> None:  # noqa: ANN001
        self.subscribed.clear()
        if reason.is_failure:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_subscribe(self, _client, _userdata, _mid, reasons, _props) -> None:  # noqa: ANN001
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", self._filters, refused)
        else:
            self.subscribed.set()

    def _on_message(self, _client, _userdata, message) -> None:  # noqa: ANN001
        with self._lock:
            generation = self._generation
        mid, qos = message.mid, message.qos

        def ack() -> None:
            with self._lock:
                current = generation == self._generation
            if current and qos > 0:
                self._client.ack(mid, qos)

        self._deliver(Inbound(message.topic, bytes(message.payload), ack))


def probe_broker(settings: MqttSettings, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the broker accepts an MQTT v5 connection within ``timeout_s``, else the reason.

    A clean, throwaway session (broker-assigned client id): it must not take over ingest's.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    client.connect_timeout = timeout_s
    answers: list[str | None] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(
        str(reason) if reason.is_failure else None
    )
    deadline = time.monotonic() + timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=10)
        while not answers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"no answer within {timeout_s:g} s"
            code = client.loop(timeout=min(remaining, 0.1))
            if code != mqtt.MQTT_ERR_SUCCESS and not answers:
                return f"connection lost: {mqtt.error_string(code)}"
        return answers[0]
    except (OSError, ValueError) as exc:
        return f"cannot connect to {settings.host}:{settings.port}: {exc}"
    finally:
        client.disconnect()
