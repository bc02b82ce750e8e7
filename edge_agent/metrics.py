"""The agent's Prometheus metrics, declared once as a table and passed to whoever updates them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    """One registry per agent, so tests can run several agents in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings_taken = Counter(
            "brm_agent_readings_taken", "Readings committed to the outbox", ["device"], registry=r
        )
        self.polls = Counter(
            "brm_agent_polls", "Polls by outcome (ok, failed)", ["device", "outcome"], registry=r
        )
        self.poll_seconds = Histogram(
            "brm_agent_poll_seconds", "Time one poll of a device takes", ["device"], registry=r
        )
        self.device_up = Gauge(
            "brm_agent_device_up", "1 while the device answers, else 0", ["device"], registry=r
        )
        self.invalid_values = Counter(
            "brm_agent_invalid_values", "Values that became null", ["device", "field"], registry=r
        )
        self.outbox_depth = Gauge(
            "brm_agent_outbox_readings", "Readings waiting in the outbox", registry=r
        )
        self.outbox_dropped = Gauge(
            "brm_agent_outbox_dropped_readings",
            "Readings dropped (oldest first) because the outbox was full, since it was created",
            registry=r,
        )
        self.published_readings = Counter(
            "brm_agent_published_readings", "Readings acknowledged by the broker", registry=r
        )
        self.published_messages = Counter(
            "brm_agent_published_messages",
            "Messages acknowledged by the broker",
            ["topic"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "brm_agent_mqtt_connected", "1 while connected to the broker", registry=r
        )
