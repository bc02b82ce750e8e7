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
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.settings import MqttSettings
from common.mqtt_tls import TlsConfigError, configure_tls
from common.topics import TopicKind, Topics

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


class MqttError(Exception):
    """The broker connection could not be set up."""


def _new_client(settings: MqttSettings, **options: object) -> mqtt.Client:
    """A paho client of the settings' protocol (MQTT v5 unless "3.1.1"), credentials and TLS."""
    if settings.protocol == "3.1.1":
        # A persistent session needs a client id; the readiness probe's stays throwaway.
        persistent = bool(options.get("client_id"))
        options = {"protocol": mqtt.MQTTv311, "clean_session": not persistent, **options}
    else:
        options = {"protocol": mqtt.MQTTv5, **options}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **options)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls.enabled:
        try:
            configure_tls(client, settings.tls)
        except TlsConfigError as exc:
            raise MqttError(str(exc)) from exc
    return client


@dataclass(frozen=True)
class Inbound:
    """One received message; call ``ack`` once it is safely stored (or quarantined)."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = field(repr=False, compare=False)


def subscriptions(topics: Topics, group: str | None) -> list[str]:
    """Shared telemetry and events for a ``group`` of workers; plain ones without (MQTT 3.1.1)."""
    if group is None:
        return [topics.all_sites(kind) for kind in TopicKind]
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
        self._v5 = settings.protocol == "5"
        group = settings.shared_group if self._v5 else None
        self._filters = subscriptions(Topics(settings.topic_prefix), group)
        self._generation = 0
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self._failure: str | None = None
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers).

        The client is built here, not in ``__init__``, so that unusable TLS files surface as
        ``MqttError`` where the callers already handle a failed start."""
        self._client = _new_client(
            self._settings, client_id=self._settings.client_id, manual_ack=True
        )
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        session: dict[str, object] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._settings.session_expiry_s
            session = {"clean_start": False, "properties": props}
        try:
            self._client.connect_async(
                self._settings.host,
                self._settings.port,
                keepalive=self._settings.keepalive_s,
                **session,
            )
        except (OSError, ValueError) as exc:
            raise MqttError(f"cannot connect to {self._settings.host}: {exc}") from exc
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; unacknowledged messages stay queued at the broker for the next start."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:  # noqa: ANN001
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        self._failure = None
        log.info("connected to %s:%s", self._settings.host, self._settings.port)
        client.subscribe([(f, 1) for f in self._filters])

    def _on_connect_fail(self, _client, _userdata) -> None:  # noqa: ANN001
        # Paho calls this while handling the connect's OSError and passes no reason: take it
        # from there. Logged once per distinct reason; paho retries with backoff.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):
            failure = f"TLS handshake failed ({exc}); check mqtt.tls"
        else:
            failure = f"unreachable ({exc})"
        if failure != self._failure:
            self._failure = failure
            log.error(
                "cannot connect to the broker %s:%s: %s",
                self._settings.host,
                self._settings.port,
                failure,
            )

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
    """None if the broker accepts a connection within ``timeout_s``, else the reason.

    A clean, throwaway session (broker-assigned client id): it must not take over ingest's.
    """
    try:
        client = _new_client(settings)
    except MqttError as exc:
        return str(exc)
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
