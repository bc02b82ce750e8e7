"""Uploads are read by a child process and stored by the server: what the server sees when that
child crashes, runs out of time, or succeeds, on a real forkserver and a real SQLite store."""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from functools import partial
from multiprocessing import forkserver
from pathlib import Path

import pytest
from sqlalchemy import func, select

from central import migrations
from central.db.engine import make_engine, make_session_factory
from central.db.models import ResearchBattery, ResearchCycle
from central.research import worker
from central.research.cells import InvalidMatFileError
from central.research.parse import open_research_file
from central.research.store import UploadMetadata, cell_record
from central.research.worker import ParseLimits, store_in_child
from tests.support import SHARED_DATA

DATA = SHARED_DATA
SEVERSON = DATA / "severson" / "severson_train_v73.mat"
NASA = DATA / "nasa_pcoe" / "B0025.mat"


def limits(**changes: float) -> ParseLimits:
    values = {
        "memory_bytes": 2 * 1024**3,
        "timeout_s": 120.0,
        "max_decompressed_bytes": 512 * 1024**2,
        "default_eol_threshold": 0.8,
        **changes,
    }
    return ParseLimits(**values)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'central.sqlite3'}"
    migrations.upgrade(url)
    return url


def counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return (
                session.scalar(select(func.count()).select_from(ResearchBattery)),
                session.scalar(select(func.count()).select_from(ResearchCycle)),
            )
    finally:
        engine.dispose()


def store(url: str, path: Path, meta: UploadMetadata, upload_id: str, limits: ParseLimits):
    """As the server does: the child's cells into one transaction, committed if it read them all."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            return store_in_child(session, path, meta, upload_id, limits)
    finally:
        engine.dispose()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_stored_upload_reports_its_cost(url: str) -> None:
    """The call returns once the child has answered; the child then ends on its own."""
    upload_id = str(uuid.uuid4())
    report = store(url, NASA, UploadMetadata(filename=NASA.name), upload_id, limits())
    assert report.seconds > 0 and report.rss_growth_bytes > 0
    assert counts(url)[0] == 1
    server_pid = forkserver._forkserver._forkserver_pid
    deadline = time.monotonic() + 30
    while children_of(server_pid):
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.01)


def test_children_do_not_run_the_servers_main_module_again(url: str, tmp_path: Path) -> None:
    """The stdlib would re-run the parent's ``__main__`` in each child (for the server, the
    ``battery-central`` script and the whole app with it) before the job starts."""
    marker = tmp_path / "main-ran-in-a-child"
    server = tmp_path / "server.py"
    server.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path

            if __name__ != "__main__":
                Path({str(marker)!r}).touch()
            else:
                from central.db.engine import make_engine, make_session_factory
                from central.research.store import UploadMetadata
                from central.research.worker import ParseLimits, store_in_child

                limits = ParseLimits(2 * 1024**3, 120.0, 512 * 1024**2, 0.8)
                meta = UploadMetadata(filename="main.mat")
                with make_session_factory(make_engine(sys.argv[1])).begin() as session:
                    store_in_child(session, Path(sys.argv[2]), meta, "main", limits)
            """
        )
    )
    subprocess.run([sys.executable, str(server), url, str(NASA)], check=True, timeout=120)
    assert counts(url) == (1, 28)
    assert not marker.exists()


def test_a_crashing_reader_is_a_clear_error_and_stores_nothing(url: str) -> None:
    """The child is killed by SIGSEGV part way through a 41-cell file, as a crash in libhdf5
    would: the server's call raises InvalidMatFileError naming the signal, nothing is stored, and
    the next upload works."""
    outcome: list[BaseException] = []

    def upload() -> None:
        try:
            store(url, SEVERSON, UploadMetadata(filename="s.mat"), "crash", limits())
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    store(url, NASA, UploadMetadata(filename="warm.mat"), "warm", limits())
    server_pid = forkserver._forkserver._forkserver_pid
    before = set(children_of(server_pid))
    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 30
    while not (reader := set(children_of(server_pid)) - before):
        assert time.monotonic() < deadline, "no child process appeared"
        time.sleep(0.01)
    time.sleep(0.3)  # part way through its cells
    os.kill(reader.pop(), signal.SIGSEGV)
    thread.join(60)
    (error,) = outcome
    assert isinstance(error, InvalidMatFileError)
    assert error.issues == ["the file's reader stopped (signal SIGSEGV)"]
    assert counts(url) == (1, 28)  # only the warm-up file
    store(url, NASA, UploadMetadata(filename="after.mat"), "after", limits())
    assert counts(url)[0] == 2


def test_a_reader_past_its_deadline_is_killed(url: str) -> None:
    with pytest.raises(InvalidMatFileError) as raised:
        store(url, SEVERSON, UploadMetadata(filename="s.mat"), "slow", limits(timeout_s=0.2))
    assert raised.value.issues == ["reading the file took longer than 0.2 s"]
    assert counts(url) == (0, 0)


def test_cells_travel_in_runs_and_arrive_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell's rows cross the pipe as JSON fields and raw bytes, in runs of about RUN_BYTES:
    the server never holds more than a run, and gets back exactly what the child read."""
    with open_research_file(NASA) as cells:
        (record,) = [
            cell_record(cell, UploadMetadata(NASA.name), position=1, default_eol_threshold=0.8)
            for cell in cells
        ]
    monkeypatch.setattr(worker, "RUN_BYTES", 40_000)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    args = (partial(worker._send, sender), record.battery, record.cycles)
    threading.Thread(target=worker._send_cell, args=args, daemon=True).start()
    battery, runs, rows = None, [], []
    for kind, fields, data in worker._messages(receiver, time.monotonic() + 30, lambda: False):
        if kind == "cell":
            battery = worker._cell(fields, data)
            continue
        assert kind == "cycles"
        runs.append(len(data))
        rows += worker._cycles(fields, data)
        if len(rows) == len(record.cycles):
            break
    assert battery == record.battery
    assert rows == record.cycles
    assert len(runs) > 3 and max(runs) < 2 * 40_000


@pytest.mark.parametrize("stopped", [True, False])
def test_a_message_cut_short_is_the_readers_death_if_it_stopped(stopped: bool) -> None:
    """A reader killed while sending leaves half a message: its death, reported by exit code;
    from a reader still running it is a malformed message, the server's trouble."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    with sender:
        os.write(sender.fileno(), struct.pack("!i", 100) + b'{"kind": "cel')  # 13 of 100 bytes
    messages = worker._messages(receiver, time.monotonic() + 30, lambda: stopped)
    if stopped:
        assert list(messages) == []
    else:
        with pytest.raises(worker.WorkerError, match="malformed message"):
            list(messages)
