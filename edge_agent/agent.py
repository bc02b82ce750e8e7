"""One site's agent: pollers commit readings to the outbox; the publisher drains it."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import Sequence

from common.ids import parse_string_id, ups_id
from common.schemas import Birth, Event, Reading, State, StringInfo, UpsInfo
from common.timeutil import utc_now
from common.topics import Topics
from edge_agent.config import AgentSettings, ModbusDevice, SnmpDevice
from edge_agent.drivers.base import Driver
from edge_agent.http import MetricsServer
from edge_agent.metrics import AgentMetrics
from edge_agent.outbox import Outbox, OutboxError
from edge_agent.poller import Poller, Schedule, SinkError, Sinks
from edge_agent.publisher import Publisher

log = logging.getLogger(__name__)


def driver_for(device: ModbusDevice | SnmpDevice) -> Driver:
    if isinstance(device, ModbusDevice):
        from edge_agent.drivers.modbus import ModbusDriver

        return ModbusDriver(device)
    from edge_agent.drivers.snmp import SnmpDriver

    return SnmpDriver(device)


def assemble_birth(site_id: str, agent_id: str, inventory: dict[str, list[StringInfo]]) -> Birth:
    """The site's inventory from every device's strings, grouped by UPS, in ID order."""
    by_ups: dict[str, dict[str, StringInfo]] = {}
    for strings in inventory.values():
        for string in strings:
            location, ups, _ = parse_string_id(string.string_id)
            by_ups.setdefault(ups_id(location, ups), {})[string.string_id] = string
    return Birth(
        site_id=site_id,
        agent_id=agent_id,
        ts=utc_now(),
        ups=[
            UpsInfo(ups_id=u, strings=[strings[s] for s in sorted(strings)])
            for u, strings in sorted(by_ups.items())
        ],
    )


class Agent:
    """Wires pollers, outbox, publisher and the metrics endpoint for one site."""

    def __init__(self, settings: AgentSettings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox
        self.metrics = AgentMetrics()
        self.inventory: dict[str, list[StringInfo]] = {}
        self.publisher = Publisher(
            mqtt_settings=settings.mqtt,
            publish=settings.publish,
            topics=Topics(settings.mqtt.topic_prefix),
            site_id=settings.site_id,
            client_id=settings.client_id,
            outbox=outbox,
            metrics=self.metrics,
            birth=self.birth,
            state=self.state,
        )
        sinks = Sinks(self._take_readings, self._take_events, self._take_inventory)
        count = len(settings.devices)
        self.pollers = [
            Poller(
                driver_for(device),
                Schedule(
                    device.interval_s,
                    device.timeout_s,
                    device.max_backoff_s,
                    start_delay_s=device.interval_s * i / count,
                ),
                sinks,
                self.metrics,
            )
            for i, device in enumerate(settings.devices)
        ]

    async def _take_readings(self, readings: Sequence[Reading]) -> None:
        try:
            await self.outbox.append(readings)
        except (OutboxError, sqlite3.Error, OSError) as exc:
            raise SinkError(f"outbox {self.outbox.path}: {exc}") from exc
        self.publisher.notify()

    async def _take_events(self, events: Sequence[Event]) -> None:
        try:
            await self.outbox.append_events(events)
        except (OutboxError, sqlite3.Error, OSError) as exc:
            raise SinkError(f"outbox {self.outbox.path}: {exc}") from exc
        self.publisher.notify()

    async def _take_inventory(self, device_id: str, strings: list[StringInfo]) -> None:
        if self.inventory.get(device_id) != strings:
            self.inventory[device_id] = strings
            self.publisher.publish_birth()

    def birth(self) -> Birth | None:
        if not self.inventory:
            return None
        return assemble_birth(self.settings.site_id, self.settings.agent_id, self.inventory)

    def state(self) -> State:
        down = [p.device_id for p in self.pollers if p.available is False]
        return State(
            site_id=self.settings.site_id,
            agent_id=self.settings.agent_id,
            status="online",
            ts=utc_now(),
            buffer_depth=self.outbox.depth(),
            dropped_count=self.outbox.dropped_total(),
            devices_up=sum(p.available is True for p in self.pollers),
            devices_down=len(down),
            unavailable_devices=down,
        )

    def health(self) -> dict[str, object]:
        devices = {
            p.device_id: {"available": p.available, "last_error": p.last_error}
            for p in self.pollers
        }
        healthy = self.publisher.connected and all(p.available is not False for p in self.pollers)
        return {
            "status": "ok" if healthy else "degraded",
            "site_id": self.settings.site_id,
            "mqtt_connected": self.publisher.connected,
            "outbox_readings": self.outbox.depth(),
            "outbox_dropped": self.outbox.dropped_total(),
            "devices": devices,
        }

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop``; False if a part died on its own (the caller exits non-zero so
        the service manager restarts the agent; the outbox keeps every reading meanwhile)."""
        http = None
        if self.settings.http.enabled:
            http = MetricsServer(
                self.settings.http.host, self.settings.http.port, self.metrics.registry, self.health
            )
            http.start()
            log.info("metrics on http://%s:%d/metrics", self.settings.http.host, http.port)
        parts = [asyncio.create_task(p.run(), name=p.device_id) for p in self.pollers]
        parts.append(asyncio.create_task(self.publisher.run(), name="publisher"))
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *parts], return_when=asyncio.FIRST_COMPLETED)
            died = [task for task in parts if task in done]
            for task in died:
                log.critical("%s stopped on its own", task.get_name(), exc_info=task.exception())
            return not died
        finally:
            for task in parts[:-1]:
                task.cancel()
            await asyncio.gather(*parts[:-1], return_exceptions=True)
            await self.publisher.stop()
            parts[-1].cancel()
            stopping.cancel()
            await asyncio.gather(parts[-1], stopping, return_exceptions=True)
            if http is not None:
                http.stop()


async def run_agent(settings: AgentSettings) -> bool:
    """Run until SIGINT or SIGTERM; a clean stop leaves nothing unsent in doubt. False when a
    part of the agent died on its own."""
    outbox = await Outbox.open(
        settings.outbox.path, settings.site_id, settings.agent_id, settings.outbox.max_readings
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info(
            "agent %s for %s: %d devices, outbox %s holding %d readings",
            settings.agent_id,
            settings.site_id,
            len(settings.devices),
            settings.outbox.path,
            outbox.depth(),
        )
        return await Agent(settings, outbox).run(stop)
    finally:
        await outbox.close()
        log.info("stopped")
