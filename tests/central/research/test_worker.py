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
from collections.abc import Iterator
from functools import partial
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import pytest
import scipy.io
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


@pytest.fixture(autouse=True)
def no_idle_readers() -> Iterator[None]:
    """Each test starts without a reader from the one before, and leaves none behind."""
    worker._readers.stop_idle()
    yield
    worker._readers.stop_idle()


def readers() -> set[int]:
    return set(children_of(forkserver._forkserver._forkserver_pid))


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while pid in readers():
        assert time.monotonic() < deadline, f"reader {pid} did not end"
        time.sleep(0.01)


def upload(url: str, name: str, path: Path = NASA, **changes: float) -> worker.ChildReport:
    return store(url, path, UploadMetadata(filename=name), name, limits(**changes))


def test_a_reader_serves_upload_after_upload_each_reporting_its_own_cost(url: str) -> None:
    """The reader that read one file waits for the next (it reads it warm), and reports each
    upload's cost."""
    first = upload(url, "first")
    (reader,) = readers()
    second = upload(url, "second")
    assert readers() == {reader}
    assert counts(url) == (2, 56)
    for report in (first, second):
        assert report.seconds > 0 and report.rss_growth_bytes > 0
    assert second.rss_growth_bytes < 64 * 1024**2  # B0025 reads within a few MiB


def test_a_refused_file_leaves_its_reader_serving(url: str) -> None:
    with pytest.raises(InvalidMatFileError):
        upload(url, "table", DATA / "negative" / "matlab_table_only.mat")
    (reader,) = readers()
    upload(url, "after")
    assert readers() == {reader}
    assert counts(url) == (1, 28)


def test_a_reader_is_replaced_after_its_share_of_uploads(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "READER_JOBS", 2)
    upload(url, "one")
    (reader,) = readers()
    upload(url, "two")  # its last: it ends
    wait_gone(reader)
    upload(url, "three")
    (replacement,) = readers()
    assert replacement != reader
    assert counts(url) == (3, 84)


def test_a_reader_that_ran_out_of_memory_is_replaced(url: str, tmp_path: Path) -> None:
    """MemoryError leaves a reader's heap in no state to trust with the next file."""
    big = tmp_path / "big.mat"
    scipy.io.savemat(big, {"x": np.zeros(300 * 1024**2 // 8)}, do_compression=True)
    upload(url, "warm")
    (reader,) = readers()
    with pytest.raises(InvalidMatFileError) as refused:
        upload(url, "big", big, memory_bytes=256 * 1024**2)
    assert refused.value.issues == ["reading the file needs more than 256 MiB"]
    wait_gone(reader)
    upload(url, "after")
    assert counts(url) == (2, 56)


def test_an_idle_reader_that_died_is_replaced(url: str) -> None:
    upload(url, "first")
    (reader,) = readers()
    os.kill(reader, signal.SIGKILL)
    wait_gone(reader)
    upload(url, "second")
    assert counts(url) == (2, 56)


def test_a_reader_found_dead_when_sent_its_upload_is_replaced(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader can die between the check that it is alive and the upload reaching it: the
    file has not been read, so a new reader reads it."""
    upload(url, "first")
    (reader,) = readers()
    os.kill(reader, signal.SIGKILL)
    wait_gone(reader)
    monkeypatch.setattr(worker._Reader, "usable", lambda self: True)  # as if checked just before
    upload(url, "second")
    assert counts(url) == (2, 56)


def test_a_forked_server_does_not_use_its_parents_readers(url: str) -> None:
    """A server process forked after an upload inherits the idle reader's handle, not the
    reader: it starts its own."""
    upload(url, "first")
    (reader,) = readers()
    (inherited,) = worker._readers._idle
    inherited.owner = -1  # as a forked copy of the pool sees it
    upload(url, "second")
    assert len(readers() - {reader}) == 1
    inherited.owner = os.getpid()
    inherited.stop()


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

    def upload_severson() -> None:
        try:
            store(url, SEVERSON, UploadMetadata(filename="s.mat"), "crash", limits())
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    store(url, NASA, UploadMetadata(filename="warm.mat"), "warm", limits())
    (reader,) = readers()  # the warm reader takes the next upload
    thread = threading.Thread(target=upload_severson)
    thread.start()
    time.sleep(0.5)  # part way through its cells (a second or more in all)
    assert thread.is_alive()
    os.kill(reader, signal.SIGSEGV)
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
