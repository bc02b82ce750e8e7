"""Runs simulated sites: builds each site's live twin and serves it until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Protocol

from common.fleet import Fleet
from simulators.clock import SimClock
from simulators.control import ControlServer
from simulators.live import LiveSite
from simulators.modbus_server import serve_modbus
from simulators.snmp_agent import SnmpCredentials, serve_snmp
from simulators.twin import SiteTwin

log = logging.getLogger(__name__)


class _Server(Protocol):
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class SitePlan:
    """Where one site is served; a port of None means that protocol is not served."""

    site_id: str
    modbus_port: int | None = None
    snmp_port: int | None = None


@dataclass
class RunOptions:
    host: str = "127.0.0.1"
    seed: int = 0
    time_scale: float = 1.0
    start: float | None = None  # simulated Unix time at start-up; None: the wall clock's now
    control_port: int | None = None
    snmp: SnmpCredentials = field(default_factory=SnmpCredentials)


def build_sites(fleet: Fleet, plans: list[SitePlan], options: RunOptions) -> dict[str, LiveSite]:
    """One live twin per site, all on one simulated clock; seeds differ per site."""
    clock = SimClock(time_scale=options.time_scale, epoch=options.start)
    return {
        plan.site_id: LiveSite(SiteTwin(fleet.get(plan.site_id), seed=options.seed + i), clock)
        for i, plan in enumerate(plans)
    }


async def serve_sites(fleet: Fleet, plans: list[SitePlan], options: RunOptions) -> None:
    """Serve every planned site until SIGINT or SIGTERM, then stop every server cleanly."""
    sites = build_sites(fleet, plans, options)
    servers: list[_Server] = []
    control: ControlServer | None = None
    try:
        for plan in plans:
            live = sites[plan.site_id]
            if plan.modbus_port is not None:
                server = await serve_modbus(live, options.host, plan.modbus_port)
                servers.append(server)
                log.info("%s Modbus TCP on %s:%d", plan.site_id, options.host, server.port)
            if plan.snmp_port is not None:
                agent = await serve_snmp(live, options.host, plan.snmp_port, options.snmp)
                servers.append(agent)
                log.info("%s SNMP on udp %s:%d", plan.site_id, options.host, agent.port)
        if options.control_port is not None:
            control = ControlServer(sites, options.host, options.control_port)
            control.start()
            log.info("control API on http://%s:%d", options.host, control.port)
        await _until_signalled()
    finally:
        if control is not None:
            control.stop()
        for server in reversed(servers):
            await server.stop()
        log.info("stopped")


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
