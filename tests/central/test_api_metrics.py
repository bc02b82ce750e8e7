"""``/metrics``: refused requests counted by endpoint, status and code; ingest's durable counts
read from the store at each scrape (SQLite and PostgreSQL); the optional scrape token; a store
that does not answer."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from central.api.extensions import db
from central.api.metrics import TOKEN_KEY
from central.db.models import AgentSequence, QuarantinedMessage, SiteState
from central.settings import ResearchSettings
from common.timeutil import utc_now
from tests.central.api_support import add_user, assert_error, logged_in, make_app
from tests.support import free_tcp_port


def scrape(client: FlaskClient, **headers: str) -> dict[tuple[str, tuple], float]:
    """The scrape's samples as {(name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def errors(samples: dict, endpoint: str, status: int, code: str) -> float:
    labels = (("code", code), ("endpoint", endpoint), ("status", str(status)))
    return samples.get(("brm_api_errors_total", labels), 0.0)


@pytest.fixture
def app(migrated_url: str, tmp_path: Path) -> Iterator[Flask]:
    add_user(migrated_url, "engineer1", "engineer")
    research = ResearchSettings(upload_dir=tmp_path)
    app = make_app(migrated_url, BRM_RESEARCH=research, BRM_RESEARCH_UPLOAD_DIR=tmp_path)
    yield app
    db.engine(app).dispose()


def test_refused_requests_are_counted(client: FlaskClient) -> None:
    engineer = logged_in(client)("engineer1")
    before = scrape(client)
    assert errors(before, "batteries.get_battery", 404, "RESOURCE_NOT_FOUND") == 0
    for _ in range(2):
        client.get("/api/v1/batteries/BAT-NOPE", headers=engineer)
    client.get("/api/v1/batteries?limit=0", headers=engineer)
    client.get("/api/v1/batteries")
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(b"a,b\n1,2\n"), "x.mat")})
    refused = client.post(
        "/api/v1/research/batteries",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=engineer,
    )
    assert_error(refused, 400, refused.get_json()["detail"], "INVALID_FILE_FORMAT")
    after = scrape(client)
    assert errors(after, "batteries.get_battery", 404, "RESOURCE_NOT_FOUND") == 2
    assert errors(after, "batteries.list_batteries", 422, "VALIDATION_ERROR") == 1
    assert errors(after, "batteries.list_batteries", 401, "UNAUTHORIZED") == 1
    assert errors(after, "research.upload_battery", 400, "INVALID_FILE_FORMAT") == 1
    assert errors(after, "none", 404, "RESOURCE_NOT_FOUND") == 0
    client.get("/no/such/page")
    assert errors(scrape(client), "none", 404, "RESOURCE_NOT_FOUND") == 1


def test_ingest_counts_come_from_the_store(app: Flask, client: FlaskClient) -> None:
    samples = scrape(client)
    assert samples[("brm_store_up", ())] == 1
    assert samples[("brm_quarantined_messages", ())] == 0
    now = utc_now()
    with app.app_context():
        db.session.execute(
            insert(AgentSequence),
            [
                {
                    "agent_id": "agent-cnx",
                    "site_id": "DC-CNX-01",
                    "highest_seq": 900,
                    "gaps": 3,
                    "missing_readings": 40,
                    "duplicates": 216,
                    "updated_at": now,
                }
            ],
        )
        db.session.execute(
            insert(SiteState),
            [
                {
                    "site_id": "DC-CNX-01",
                    "agent_id": "agent-cnx",
                    "status": "online",
                    "buffer_depth": 12,
                    "dropped_count": 5,
                    "devices_up": 2,
                    "devices_down": 1,
                    "received_at": now,
                },
                {"site_id": "DC-BKK-01", "agent_id": "agent-bkk", "status": "offline"},
            ],
        )
        db.session.execute(
            insert(QuarantinedMessage),
            [{"topic": "brm/v1/x/telemetry", "reason": "r", "payload": b"{"}] * 2,
        )
        db.session.commit()
    samples = scrape(client)
    agent = (("agent_id", "agent-cnx"), ("site_id", "DC-CNX-01"))
    assert samples[("brm_agent_sequence_gaps_total", agent)] == 3
    assert samples[("brm_agent_missing_readings_total", agent)] == 40
    assert samples[("brm_agent_duplicate_readings_total", agent)] == 216
    assert samples[("brm_quarantined_messages", ())] == 2
    cnx, bkk = (("site_id", "DC-CNX-01"),), (("site_id", "DC-BKK-01"),)
    assert (samples[("brm_site_online", cnx)], samples[("brm_site_online", bkk)]) == (1, 0)
    assert samples[("brm_site_outbox_depth", cnx)] == 12
    assert samples[("brm_site_dropped_readings", cnx)] == 5
    assert samples[("brm_site_devices_down", cnx)] == 1
    assert ("brm_site_outbox_depth", bkk) not in samples  # the offline state carries no stats


def test_a_scrape_token_when_configured(migrated_url: str) -> None:
    app = make_app(migrated_url, **{TOKEN_KEY: "s3cret-scrape-token"})
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.get("/metrics", headers=headers)
            assert_error(response, 401, "A valid metrics token is required", "UNAUTHORIZED")
        assert scrape(client, Authorization="Bearer s3cret-scrape-token")[("brm_store_up", ())]
    finally:
        db.engine(app).dispose()


def test_a_store_that_does_not_answer_still_gives_a_scrape() -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_tcp_port()}/test?connect_timeout=2"
    app = make_app(url)
    try:
        samples = scrape(app.test_client())
        assert samples[("brm_store_up", ())] == 0
        assert not any(name.startswith("brm_agent") for name, _ in samples)
    finally:
        db.engine(app).dispose()
