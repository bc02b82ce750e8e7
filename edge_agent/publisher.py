"""Publishes the outbox to the broker over MQTT v5, QoS 1, through ``edge_agent.mqtt_link``.

Only a PUBACK deletes readings from the outbox. Each connection gets a fresh link (a fresh paho
client), thrown away with whatever it had in flight when the connection ends: paho would
otherwise resend its own copies after reconnecting, on top of the outbox resending everything
not yet deleted. So a batch in flight when the link died arrives at most twice, with the same
readings both times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from common.schemas import AgentStatus, Birth, State, encode
from common.timeutil import utc_now
from common.topics import TopicKind, Topics
from edge_agent.config import MqttSettings, PublishSettings
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import Acked, Connected, Lost, MqttLink, News, PublisherError
from edge_agent.outbox import Outbox

log = logging.getLogger(__name__)

EVENTS_PER_MESSAGE = 500
GOODBYE_TIMEOUT_S = 5.0  # on stop: the longest wait for the offline state's PUBACK


class Pacer:
    """Token bucket for the backlog lane: ``rate`` readings/s on average, one batch of burst.

    A batch may go whenever the bucket is not in debt; its readings are then spent at once, so
    the average holds whatever the batch sizes. Time is passed in.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def delay(self, now: float) -> float:
        """Seconds until the next batch may go; 0 means now."""
        self._refill(now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def spend(self, readings: int, now: float) -> None:
        self._refill(now)
        self._tokens -= readings

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now


@dataclass(frozen=True)
class _Sent:
    kind: TopicKind
    seq_first: int = 0
    seq_last: int = 0
    event_ids: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return self.seq_last - self.seq_first + 1


@dataclass
class _Flight:
    """One connection's sending state, replaced whole on reconnect: that is how in-flight
    messages are forgotten (whatever the outbox still holds becomes backlog again)."""

    window: int
    boundary: int  # the outbox's last seq at connect: up to it is backlog, after it live
    pacer: Pacer
    retry_delay: float
    backlog_after: int = 0
    backlog_done: bool = False
    live_after: int = 0
    next_state: float = 0.0
    sent: dict[int, _Sent] = field(default_factory=dict)  # by paho message id
    retries: deque[tuple[float, _Sent]] = field(default_factory=deque)  # refused: (when, what)
    events_busy: bool = False  # one events message at a time, or refused and waiting to retry
    broken: bool = False


class Publisher:
    """Drains the outbox to the broker and keeps the site's retained birth and state current.

    Two telemetry lanes, each in sequence order: what the outbox held when the connection came
    up (the backlog, paced at ``backlog_readings_per_s``) and what was taken since (live, sent as
    soon as ``notify()`` says so). At most ``max_in_flight`` messages await a PUBACK.
    """

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        publish: PublishSettings,
        topics: Topics,
        *,
        site_id: str,
        client_id: str,
        outbox: Outbox,
        metrics: AgentMetrics,
        birth: Callable[[], Birth | None],
        state: Callable[[], State],
    ) -> None:
        self._mqtt = mqtt_settings
        self._settings = publish
        self._site_id = site_id
        self._client_id = client_id
        self._outbox = outbox
        self._metrics = metrics
        self._birth = birth
        self._state = state
        self._topic = {kind: topics.topic(site_id, kind) for kind in TopicKind}
        self._birth_due = self._live_due = self._events_due = True
        self._news: deque[News] = deque()
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._link: MqttLink | None = None
        self._running = self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def notify(self) -> None:
        """Readings or events were just committed to the outbox: send them now."""
        self._metrics.outbox_depth.set(self._outbox.depth())
        self._metrics.outbox_dropped.set(self._outbox.dropped_total())
        self._live_due = self._events_due = True
        self._wake.set()

    def publish_birth(self) -> None:
        """The inventory changed: publish the retained birth again."""
        self._birth_due = True
        self._wake.set()

    async def run(self) -> None:
        """Connect, publish, reconnect after any loss, until ``stop()``.

        Raises ``PublisherError`` for settings that can never work; anything else is logged
        and followed by a reconnect, so the agent keeps taking readings while the broker is away.
        """
        self._running = True
        try:
            while not self._stop_requested.is_set():
                try:
                    await self._connection()
                except PublisherError:
                    raise
                except Exception:
                    log.exception("publisher failed; reconnecting")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._mqtt.reconnect_min_s):
                        await self._stop_requested.wait()
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Publish the retained ``offline`` state, disconnect cleanly, and wait for ``run``."""
        self._stop_requested.set()
        self._wake.set()
        if self._running:
            await self._finished.wait()

    def _hear(self, link: MqttLink, news: News) -> None:
        if link is self._link:  # news from an abandoned client is stale
            self._news.append(news)
            self._wake.set()

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def _connection(self) -> None:
        will = (self._topic[TopicKind.STATE], self._offline_state(with_stats=False))
        self._news.clear()
        self._link = link = MqttLink(
            self._mqtt, self._client_id, will, self._settings.max_in_flight, self._hear
        )
        link.start()
        try:
            connected = await self._until_connected()
            if connected is not None:
                flight = self._new_flight(connected.receive_maximum)
                self._set_connected(True)
                log.info("connected to %s; backlog up to seq %d", self._mqtt.host, flight.boundary)
                await self._session(flight)
        finally:
            self._set_connected(False)
            await link.close()
            self._link = None

    async def _until_connected(self) -> Connected | None:
        while not self._stop_requested.is_set():
            while self._news:
                news = self._news.popleft()
                if isinstance(news, Connected):
                    return news
            await self._wait(None)
        return None

    def _new_flight(self, receive_maximum: int) -> _Flight:
        boundary, s = self._outbox.last_seq(), self._settings
        self._birth_due = self._live_due = self._events_due = True
        return _Flight(
            window=max(1, min(s.max_in_flight, receive_maximum)),
            boundary=boundary,
            live_after=boundary,
            pacer=Pacer(s.backlog_readings_per_s, s.batch_readings, time.monotonic()),
            retry_delay=self._mqtt.reconnect_min_s,
        )

    def _set_connected(self, connected: bool) -> None:
        if self._connected and not connected and not self._stop_requested.is_set():
            log.warning("connection to the broker lost; readings wait in the outbox")
        self._connected = connected
        self._metrics.mqtt_connected.set(1 if connected else 0)

    async def _session(self, flight: _Flight) -> None:
        """Send and settle until the connection ends or ``stop()`` is called."""
        while await self._settle_news(flight):
            if self._stop_requested.is_set():
                await self._goodbye(flight)
                return
            await self._fill(flight)
            self._metrics.outbox_depth.set(self._outbox.depth())
            if flight.broken:
                return
            await self._wait(self._timer(flight, time.monotonic()))

    async def _settle_news(self, flight: _Flight) -> bool:
        """Apply every PUBACK received; False once the connection is gone."""
        while self._news:
            news = self._news.popleft()
            if isinstance(news, Lost):
                log.info("disconnected: %s", news.reason)
                return False
            if isinstance(news, Acked):
                await self._settle(flight, news)
        return True

    def _timer(self, flight: _Flight, now: float) -> float | None:
        """Seconds until something is due without news; None while the window is full."""
        if len(flight.sent) >= flight.window:
            return None
        times = [flight.next_state]
        if not flight.backlog_done:
            times.append(now + flight.pacer.delay(now))
        if flight.retries:
            times.append(flight.retries[0][0])
        return max(0.0, min(times) - now)

    async def _fill(self, flight: _Flight) -> None:
        """Send until the window is full or nothing is ready, most urgent first."""
        while len(flight.sent) < flight.window and not flight.broken:
            now = time.monotonic()
            sent = (
                self._send_control(flight, now)
                or await self._send_live(flight)
                or await self._send_events(flight)
                or await self._send_retry(flight, now)
                or await self._send_backlog(flight, now)
            )
            if not sent:
                return

    def _send(self, flight: _Flight, sent: _Sent, payload: bytes, *, retain: bool = False) -> bool:
        assert self._link is not None
        mid = self._link.publish(self._topic[sent.kind], payload, retain=retain)
        if mid is None:
            flight.broken = True
            return False
        flight.sent[mid] = sent
        return True

    def _send_control(self, flight: _Flight, now: float) -> bool:
        if self._birth_due:
            self._birth_due = False
            payload = self._build(self._birth)
            if payload is not None:
                return self._send(flight, _Sent(TopicKind.BIRTH), payload, retain=True)
        if now >= flight.next_state:
            flight.next_state = now + self._settings.state_interval_s
            payload = self._build(self._state)
            if payload is not None:
                return self._send(flight, _Sent(TopicKind.STATE), payload, retain=True)
        return False

    def _build(self, make: Callable[[], Birth | State | None]) -> bytes | None:
        """The agent's message, encoded; its failure is logged, never fatal here."""
        try:
            message = make()
        except Exception:
            log.exception("building the birth or state message failed")
            return None
        return None if message is None else encode(message)

    async def _send_live(self, flight: _Flight) -> bool:
        if not self._live_due:
            return False
        self._live_due = False  # before the await, so a notify() meanwhile is not lost
        batch = await self._outbox.batch(flight.live_after, self._settings.batch_readings)
        if batch is None:
            return False
        self._live_due = True  # there may be more
        sent = _Sent(TopicKind.TELEMETRY, batch.seq_first, batch.seq_last)
        if not self._send(flight, sent, batch.payload):
            return False
        flight.live_after = batch.seq_last
        return True

    async def _send_events(self, flight: _Flight) -> bool:
        if not self._events_due or flight.events_busy:
            return False
        self._events_due = False
        found = await self._outbox.event_batch(EVENTS_PER_MESSAGE)
        if found is None:
            return False
        ids, payload = found
        flight.events_busy = True
        return self._send(flight, _Sent(TopicKind.EVENTS, event_ids=tuple(ids)), payload)

    async def _send_retry(self, flight: _Flight, now: float) -> bool:
        """A refused message whose time has come; telemetry is read again from the outbox."""
        if not flight.retries or flight.retries[0][0] > now:
            return False
        _, refused = flight.retries.popleft()
        if refused.kind is TopicKind.EVENTS:
            flight.events_busy = False
            self._events_due = True
        elif refused.kind is TopicKind.BIRTH:
            self._birth_due = True
        else:
            batch = await self._outbox.batch(
                refused.seq_first - 1, refused.count, up_to=refused.seq_last
            )
            if batch is not None:  # else dropped meanwhile by the outbox bound
                sent = _Sent(TopicKind.TELEMETRY, batch.seq_first, batch.seq_last)
                return self._send(flight, sent, batch.payload)
        return True

    async def _send_backlog(self, flight: _Flight, now: float) -> bool:
        if flight.backlog_done or flight.pacer.delay(now) > 0:
            return False
        batch = await self._outbox.batch(
            flight.backlog_after, self._settings.batch_readings, up_to=flight.boundary
        )
        if batch is None:
            flight.backlog_done = True
            if flight.backlog_after:
                log.info("backlog up to seq %d sent", flight.boundary)
            return False
        sent = _Sent(TopicKind.TELEMETRY, batch.seq_first, batch.seq_last)
        if not self._send(flight, sent, batch.payload):
            return False
        flight.backlog_after = batch.seq_last
        flight.pacer.spend(batch.count, now)
        return True

    async def _settle(self, flight: _Flight, acked: Acked) -> None:
        sent = flight.sent.pop(acked.mid, None)
        if sent is None:
            return
        if acked.failure is not None:
            self._refused(flight, sent, acked.failure)
            return
        flight.retry_delay = self._mqtt.reconnect_min_s
        if sent.kind is TopicKind.TELEMETRY:
            await self._outbox.delete(sent.seq_first, sent.seq_last)
            self._metrics.published_readings.inc(sent.count)
        elif sent.kind is TopicKind.EVENTS:
            await self._outbox.delete_events(sent.event_ids)
            flight.events_busy = False
            self._events_due = True
        self._metrics.published_messages.labels(topic=sent.kind.value).inc()

    def _refused(self, flight: _Flight, sent: _Sent, reason: str) -> None:
        """A failed PUBACK: keep the rows and send them again later, with backoff."""
        log.warning("broker refused a %s message: %s; will retry", sent.kind.value, reason)
        if sent.kind is not TopicKind.STATE:  # the next periodic state replaces a refused one
            flight.retries.append((time.monotonic() + flight.retry_delay, sent))
            flight.retry_delay = min(2 * flight.retry_delay, self._mqtt.reconnect_max_s)

    async def _goodbye(self, flight: _Flight) -> None:
        """Clean stop: retained ``offline`` state, its PUBACK, then DISCONNECT (no will)."""
        assert self._link is not None
        payload = self._offline_state(with_stats=True)
        mid = self._link.publish(self._topic[TopicKind.STATE], payload, retain=True)
        if mid is not None:
            flight.sent[mid] = _Sent(TopicKind.STATE)
        deadline = time.monotonic() + GOODBYE_TIMEOUT_S
        while mid in flight.sent and (left := deadline - time.monotonic()) > 0:
            await self._wait(left)
            if not await self._settle_news(flight):
                return
        self._link.disconnect()
        deadline = time.monotonic() + GOODBYE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0 and await self._settle_news(flight):
            await self._wait(left)  # until paho reports the DISCONNECT written

    def _offline_state(self, *, with_stats: bool) -> bytes:
        """The will (bare: it is published long after it is set) or a clean stop's state."""
        bare = State(site_id=self._site_id, agent_id=self._outbox.agent_id, status="offline")
        if not with_stats:
            return encode(bare)
        try:
            current = self._state()
        except Exception:
            log.exception("building the state message failed")
            current = bare
        return encode(current.model_copy(update={"status": AgentStatus.OFFLINE, "ts": utc_now()}))
