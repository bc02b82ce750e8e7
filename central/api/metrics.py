"""``/metrics``: what central counts, for Prometheus.

Two kinds of figures. The API's own refusals (every error envelope, by endpoint, status and
code: a refused upload shows as ``research.upload_battery`` 400 ``INVALID_FILE_FORMAT``) are
counted in this process. What ingest counts durably lives in the store and is read at scrape time,
so it survives restarts and is the same whichever process ingested: gaps, missing readings and
duplicates per agent (outbox sequence numbers), quarantined messages, and each site's latest agent
state.

Prometheus scrapes without a user login; with ``api.metrics_token`` set, a scrape must send it as
a bearer token (``authorization.credentials`` in the scrape config).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from central.api.errors import ERROR_CODE_KEY, ApiError
from central.api.extensions import db
from central.db.models import AgentSequence, QuarantinedMessage, SiteState

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

_KEY = "brm_metrics"
TOKEN_KEY = "BRM_METRICS_TOKEN"


class ApiMetrics:
    """The process's own counters, one set per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.errors = Counter(
            "brm_api_errors",
            "Requests answered with an error envelope",
            ["endpoint", "status", "code"],
            registry=self.registry,
        )

    def count(self, response: Response) -> Response:
        """``after_request``: count an error response by the code its envelope carries."""
        if response.status_code >= 400:
            code = g.get(ERROR_CODE_KEY, "none")
            self.errors.labels(request.endpoint or "none", str(response.status_code), code).inc()
        return response


class StoreCollector(Collector):
    """Reads ingest's durable counts from the store at each scrape."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("brm_store_up", "1 if the store answered this scrape")
        try:
            families = self._families()
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            db.session.rollback()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        session = db.session
        agent = ["agent_id", "site_id"]
        gaps = CounterMetricFamily(
            "brm_agent_sequence_gaps", "Jumps in an agent's outbox sequence", labels=agent
        )
        missing = CounterMetricFamily(
            "brm_agent_missing_readings", "Readings the sequence gaps skipped", labels=agent
        )
        duplicates = CounterMetricFamily(
            "brm_agent_duplicate_readings", "Redelivered readings already stored", labels=agent
        )
        for row in session.scalars(select(AgentSequence)):
            labels = [row.agent_id, row.site_id]
            gaps.add_metric(labels, row.gaps)
            missing.add_metric(labels, row.missing_readings)
            duplicates.add_metric(labels, row.duplicates)
        quarantined = GaugeMetricFamily(
            "brm_quarantined_messages", "Messages kept in quarantine (refused by ingest)"
        )
        quarantined.add_metric([], session.scalar(select(func.count(QuarantinedMessage.id))))
        site = ["site_id"]
        online = GaugeMetricFamily(
            "brm_site_online", "1 if the site's agent last said online", labels=site
        )
        buffered = GaugeMetricFamily(
            "brm_site_outbox_depth", "Readings waiting in the agent's outbox", labels=site
        )
        dropped = GaugeMetricFamily(
            "brm_site_dropped_readings", "Readings the agent's full outbox dropped", labels=site
        )
        down = GaugeMetricFamily("brm_site_devices_down", "Devices not answering", labels=site)
        for state in session.scalars(select(SiteState)):
            online.add_metric([state.site_id], int(state.status == "online"))
            for family, value in (
                (buffered, state.buffer_depth),
                (dropped, state.dropped_count),
                (down, state.devices_down),
            ):
                if value is not None:
                    family.add_metric([state.site_id], value)
        session.rollback()  # read only: end the transaction the scrape opened
        return [gaps, missing, duplicates, quarantined, online, buffered, dropped, down]


def init_metrics(app: Flask) -> None:
    metrics = ApiMetrics()
    app.extensions[_KEY] = metrics
    app.after_request(metrics.count)


@bp.get("/metrics")
def scrape() -> ResponseReturnValue:
    token: str | None = current_app.config.get(TOKEN_KEY)
    if token is not None:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "A valid metrics token is required")
    metrics: ApiMetrics = current_app.extensions[_KEY]
    store = CollectorRegistry()
    store.register(StoreCollector())
    body = generate_latest(metrics.registry) + generate_latest(store)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
