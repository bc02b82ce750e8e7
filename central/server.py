"""The API's production server (gunicorn), with or without the ingest loop in its worker.

The server runs one ``gthread`` worker: a Socket.IO session lives in the process that accepted
it. More servers (or workers) need ``api.socketio_message_queue`` (Redis) and sticky sessions at
the load balancer. ``battery-central run`` adds ingest in a thread of that worker: gunicorn forks
the worker from its arbiter, so ingest starts there (``post_worker_init``), once per worker.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker

from central.api import ApiConfigError, create_app
from central.api.live import disconnect_all
from central.ingest.loop import IngestLoop, describe
from central.ingest.mqtt import MqttError
from central.live_events import live_events_for
from central.runtime import settle_garbage_collector
from central.settings import CentralSettings

INGEST_STOP_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)


class BackgroundIngest:
    """An ``IngestLoop`` in a thread of this process, emitting through the app's Socket.IO (so
    after the app is loaded: gunicorn's ``post_worker_init``)."""

    def __init__(self, settings: CentralSettings) -> None:
        self._loop = IngestLoop(settings, events=live_events_for(settings, in_server=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Let the batch in hand finish, then disconnect."""
        self._stop.set()
        self._thread.join(INGEST_STOP_TIMEOUT_S)
        log.info("ingest stopped: %s", describe(self._loop.stats))

    def _run(self) -> None:
        try:
            self._loop.run(self._stop)
        except MqttError:
            log.exception("ingest could not start")


class LiveWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker, stopping gracefully on SIGTERM, SIGINT and SIGQUIT alike.

    Socket.IO connections are closed as the stop begins: each websocket occupies a request thread
    until it closes and would hold the graceful stop for the whole ``graceful_timeout``. SIGQUIT
    (what the arbiter sends on Ctrl-C) is not gthread's quick stop, which shuts the thread pool
    down inside the signal handler and deadlocks if the signal lands while the main thread holds
    the pool's lock (seen in tests). So the handlers only set flags; a thread does the closing.
    """

    def init_process(self) -> None:
        self._stopping = threading.Event()
        closer = threading.Thread(target=self._close_live, name="socketio-close", daemon=True)
        closer.start()
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._stopping.set()

    def handle_quit(self, sig: int, frame: Any) -> None:
        self.handle_exit(sig, frame)

    def _close_live(self) -> None:
        self._stopping.wait()
        disconnect_all()


class ApiServer(BaseApplication):
    """gunicorn serving ``create_app(settings)``, with ingest in its worker if ``with_ingest``."""

    def __init__(
        self,
        settings: CentralSettings,
        *,
        host: str,
        port: int,
        threads: int,
        with_ingest: bool,
    ) -> None:
        self._settings = settings
        self._with_ingest = with_ingest
        self._ingest: BackgroundIngest | None = None
        self._options: dict[str, Any] = {
            "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
            "workers": 1,
            "worker_class": LiveWorker,
            "threads": threads,
            # Every open websocket holds a connection (and a thread) for its whole life.
            "worker_connections": threads + 100,
            "accesslog": "-",
            "control_socket_disable": True,  # a fixed path in $HOME: servers would collide
            "post_worker_init": self._post_worker_init,
            "worker_exit": self._worker_exit,
        }
        super().__init__(prog="battery-central")

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        try:
            return create_app(self._settings)
        except ApiConfigError as exc:
            # gunicorn prints this one line and stops, instead of a worker traceback.
            raise AppImportError(f"battery-central: {exc}") from exc

    def _post_worker_init(self, _worker: Worker) -> None:
        settle_garbage_collector()
        if self._with_ingest:
            self._ingest = BackgroundIngest(self._settings)
            self._ingest.start()
            log.info("ingest started in the worker")

    def _worker_exit(self, _arbiter: Arbiter, _worker: Worker) -> None:
        if self._ingest is not None:
            self._ingest.stop()
            self._ingest = None
