"""Ingest as a program runs it: its own engine, the service and the broker connection, until
told to stop (``battery-central ingest`` in its own process, ``run`` in a thread of the server)."""

from __future__ import annotations

import threading

from central.db.engine import make_engine, make_session_factory
from central.ingest.mqtt import IngestConnection
from central.ingest.service import IngestService, IngestStats
from central.live_events import LiveEvents, NoLiveEvents
from central.settings import CentralSettings
from common.topics import Topics


def describe(stats: IngestStats) -> str:
    """The counts that ``ingest`` and ``run`` report when ingest stops."""
    return (
        f"{stats.messages} messages, {stats.readings_inserted} readings stored, "
        f"{stats.readings_duplicate} duplicates, {stats.quarantined} quarantined"
    )


class IngestLoop:
    """Ingest as ``battery-central ingest`` runs it: its own engine, the service, the broker;
    ``events``: where live events go (``central.live_events.live_events_for``; None: nowhere)."""

    def __init__(self, settings: CentralSettings, *, events: LiveEvents | None = None) -> None:
        self._engine = make_engine(settings.database_url)
        self._service = IngestService(
            make_session_factory(self._engine),
            Topics(settings.mqtt.topic_prefix),
            settings.ingest,
            events=NoLiveEvents() if events is None else events,
            alerts=settings.alerts,
            rul_refresh_s=settings.ingest.rul_refresh_s,
        )
        self._connection = IngestConnection(settings.mqtt, self._service.inbox.put)

    @property
    def stats(self) -> IngestStats:
        return self._service.stats

    def run(self, stop: threading.Event) -> None:
        """Connect and store what arrives until ``stop`` is set; then disconnect, release."""
        try:
            self._connection.start()
            self._service.run(stop)
        finally:
            self._connection.stop()
            self._engine.dispose()
