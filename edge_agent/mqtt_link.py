"""The paho-mqtt adapter: one MQTT v5 connection; the only edge_agent module that imports paho.

Paho's callbacks run in its network thread; the link turns each into a small message (``News``)
handed to the event loop, and paho's and ssl's errors into ``PublisherError``, so the publisher
deals in plain values and never sees the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes

from common.mqtt_tls import TlsConfigError, TlsSettings, configure_tls
from edge_agent.config import MqttSettings

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")
_paho_log.addFilter(  # paho 2.2 logs this as an error when its thread ends after our DISCONNECT
    lambda record: not record.getMessage().startswith("Client is not connected")
)

NO_RECEIVE_MAXIMUM = 65_535  # what MQTT v5 means when CONNACK names no Receive Maximum


class PublisherError(Exception):
    """MQTT settings that cannot work (a TLS file missing or unreadable)."""


class Connected(NamedTuple):
    receive_maximum: int


class Lost(NamedTuple):
    reason: str


class Acked(NamedTuple):
    mid: int
    failure: str | None  # the PUBACK's reason code when it is a failure (0x80 and above)


News = Connected | Lost | Acked


def _configure_tls(client: mqtt.Client, tls: TlsSettings) -> None:
    try:
        configure_tls(client, tls)
    except TlsConfigError as exc:
        raise PublisherError(str(exc)) from exc


class MqttLink:
    """One paho client and its network thread (``loop_start``) for one connection.

    Paho's callbacks run in its thread; each becomes a ``News`` handed to the event loop with
    ``call_soon_threadsafe``. Paho retries the connection with backoff until it succeeds.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        will: tuple[str, bytes],
        max_in_flight: int,
        tell: Callable[[MqttLink, News], None],
    ) -> None:
        self._settings = settings
        self._v5 = settings.protocol == "5"
        self._client = client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
        )
        client.suppress_exceptions = True  # a callback error is logged, never kills the thread
        client.enable_logger(_paho_log)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls.enabled:
            _configure_tls(client, settings.tls)
        client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        client.max_inflight_messages_set(max_in_flight)
        loop = asyncio.get_running_loop()
        self._unreachable_logged = False

        def post(news: News) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody listens
                loop.call_soon_threadsafe(tell, self, news)

        client.on_connect = lambda _c, _u, _f, reason, props: self._on_connect(post, reason, props)
        client.on_connect_fail = lambda _c, _u: self._on_connect_fail()
        client.on_disconnect = lambda _c, _u, _f, reason, _p: post(Lost(str(reason)))
        client.on_publish = lambda _c, _u, mid, reason, _p: post(
            Acked(mid, str(reason) if reason.is_failure else None)
        )

    def _on_connect(
        self, post: Callable[[News], None], reason: mqtt.ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._settings.host, reason)
        else:
            post(Connected(getattr(props, "ReceiveMaximum", NO_RECEIVE_MAXIMUM)))

    def _on_connect_fail(self) -> None:
        if not self._unreachable_logged:  # once per link; paho keeps retrying with backoff
            self._unreachable_logged = True
            log.warning("broker %s:%d unreachable", self._settings.host, self._settings.port)

    def start(self) -> None:
        s = self._settings
        if self._v5:
            self._client.connect_async(s.host, s.port, s.keepalive_s, clean_start=True)
        else:  # paho refuses clean_start on 3.1.1; a clean session is its default there
            self._client.connect_async(s.host, s.port, s.keepalive_s)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """Hand paho one QoS 1 message; its message id, or None if paho did not take it."""
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except Exception:  # the library boundary: log it, the caller reconnects
            log.exception("paho refused a message for %s", topic)
            return None
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.info("message for %s not sent: %s", topic, mqtt.error_string(info.rc))
            return None
        return info.mid

    def disconnect(self, *, will: bool = False) -> None:
        """Send DISCONNECT: normal (the broker discards the will) or asking for the will."""
        name = "Disconnect with will message" if will else "Normal disconnection"
        with contextlib.suppress(Exception):
            self._client.disconnect(reasoncode=mqtt.ReasonCode(PacketTypes.DISCONNECT, name))

    async def close(self) -> None:
        """Stop paho's thread. A connection still up (no clean stop) asks for the will, so the
        retained state says ``offline`` rather than a stale ``online``."""
        self.disconnect(will=True)
        await asyncio.to_thread(self._client.loop_stop)
