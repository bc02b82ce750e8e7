"""Reading an upload in a child process, so that a hostile file cannot take the server down.

The readers underneath are C (libhdf5, scipy's MAT reader) fed untrusted bytes: crafted files
have crashed them, and a file can ask for more memory or time than a server can give. The child
gets an address-space limit and a deadline; whatever happens to it (a crash, MemoryError, a
hang), the server answers with a clear error.

The child only reads: it holds no database connection. It sends each cell's rows through a pipe
(JSON for the fields, raw bytes for the packed arrays: nothing the server unpickles), in runs of
a few MiB, and the server inserts them in its own transaction as they come, committing once the
child reports the whole file read. A child that dies part way leaves nothing stored, the server
holds no more than one run of rows at a time, and the inserts go through the server's warm
connection and statement cache rather than a new child's cold ones.

Children come from a forkserver that has imported the parsers once: a fork costs milliseconds,
and the server's own threads and connections are never forked. A child then reads uploads one
after another (up to ``READER_JOBS``), each under its own memory limit and deadline: a newly
forked process copies every page it writes to, on first touch, and a fresh child took 35-45 ms
to read a NASA file that one which had read a file before read in 27-32 ms. Any trouble (a crash,
a deadline, MemoryError, a fault of ours, or a server that stopped listening part way) ends the
child; the next upload gets a new one. The stdlib would also re-run the
server's ``__main__`` (the ``battery-central`` script, and with it the whole app: 0.6 s) in every
child before the job starts; the job needs none of it, so the children are launched without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import queue
import resource
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from central.research.cells import InvalidMatFileError
from central.research.matfile import MAX_ARRAY_BYTES
from central.research.parse import open_research_file
from central.research.store import (
    CYCLE_BLOBS,
    UploadMetadata,
    add_battery,
    add_cycles,
    cell_record,
    file_sha256,
)

UNREADABLE = "Unable to parse .mat file"
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])
# What a child needs to start besides the pickled job: the parent's ``__main__`` is left out.
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
# Cycle rows travel in runs of about this many bytes of arrays (at least one row per run).
RUN_BYTES = 4 * 2**20
# The largest message the server accepts: one cycle of five arrays, each at the reader's limit.
_MAX_MESSAGE = 5 * MAX_ARRAY_BYTES + 2**20
# How long a reader whose message broke off may take to be seen dead (its pipe closes first).
_EXIT_WAIT_S = 1.0
# Uploads one reader serves before it is replaced, so that what files leave in its heap cannot
# build up; and readers kept waiting between uploads (their pages mostly shared with the
# forkserver's).
READER_JOBS = 50
IDLE_READERS = 1
# A reader writes each v5 image over the last one's file (``open_mat``'s scratch); a file grown
# past this is emptied after its upload, so an idle reader holds little disk.
SCRATCH_KEPT_BYTES = 64 * 2**20


class _Popen(popen_forkserver.Popen):
    """The stdlib's forkserver launch (Python 3.11's ``_launch``), minus the main module."""

    def _launch(self, process_obj: ForkServerProcess) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in _MAIN_KEYS:
            prep_data.pop(key, None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)  # the child's sentinel of its parent, as the stdlib keeps it
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with os.fdopen(w, "wb") as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ReaderProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: ForkServerProcess) -> _Popen:  # noqa: N802 (the stdlib's name)
        return _Popen(process_obj)


@dataclass(frozen=True)
class ParseLimits:
    """What one upload's child may use."""

    memory_bytes: int
    timeout_s: float
    max_decompressed_bytes: int
    default_eol_threshold: float


@dataclass(frozen=True)
class ChildReport:
    """What reading one upload cost the child: for the log and the benchmark."""

    seconds: float
    # Peak resident memory over the reader's at the upload's start (the peak reset per upload).
    # A newly forked reader's counts the interpreter's and libraries' code pages it maps as it
    # runs (page cache shared with the forkserver), besides what it allocated.
    rss_growth_bytes: int


class WorkerError(RuntimeError):
    """The child failed for a reason that is the server's, not the file's."""


class _Reader:
    """A reader child and the server's end of its connection."""

    def __init__(self, jobs: int) -> None:
        self.connection, theirs = _context.Pipe()
        self.process = _ReaderProcess(
            target=_serve, args=(theirs, jobs), name="research-reader", daemon=True
        )
        self.process.start()
        theirs.close()
        self.owner = os.getpid()

    def usable(self) -> bool:
        """Alive and this process's own (a forked server inherits its parent's idle readers,
        which are not its to use)."""
        return self.owner == os.getpid() and self.process.is_alive()

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


class _Readers:
    """Readers waiting between uploads, for any of the server's threads."""

    def __init__(self) -> None:
        self._idle: list[_Reader] = []
        self._lock = threading.Lock()

    def take(self) -> _Reader:
        with self._lock:
            while self._idle:
                reader = self._idle.pop()
                if reader.usable():
                    return reader
        return _Reader(READER_JOBS)

    def stop_idle(self) -> None:
        """Stop the readers waiting (a server shutting down, or a test starting afresh)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for reader in idle:
            if reader.owner == os.getpid():
                reader.stop()

    def give_back(self, reader: _Reader) -> None:
        with self._lock:
            if len(self._idle) < IDLE_READERS:
                self._idle.append(reader)
                return
        reader.stop()


_readers = _Readers()


def store_in_child(
    session: Session, path: Path, meta: UploadMetadata, upload_id: str, limits: ParseLimits
) -> ChildReport:
    """Read ``path`` in a child process and add its cells to ``session`` as ``upload_id``.

    Returns once the child has read the whole file; the caller commits. Raises
    ``InvalidMatFileError`` for a file the child refused, ran out of memory or time on, or died
    reading; ``WorkerError`` for anything else. Either way the caller rolls back.
    """
    job = _Job(str(path), meta, limits)
    reader = _readers.take()
    try:
        reader.connection.send(job)
    except OSError:  # it died while it waited: the file has not been read, a new reader reads it
        reader.stop()
        reader = _Reader(READER_JOBS)
        reader.connection.send(job)
    deadline = time.monotonic() + limits.timeout_s
    answer: tuple[str, dict[str, Any]] | None = None
    try:
        digest = file_sha256(path)  # while the child reads
        battery = None
        messages = _messages(reader.connection, deadline, partial(_stopped, reader.process))
        for kind, message, data in messages:
            if kind == "cell":
                battery = add_battery(
                    session, _cell(message, data), meta, upload_id=upload_id, digest=digest
                )
            elif kind == "cycles" and battery is not None:
                add_cycles(session, battery, _cycles(message, data))
            else:
                answer = kind, message
                break
        timed_out = time.monotonic() >= deadline
    finally:
        # A reader that answered waits for the next upload, unless it said it is done; any other
        # is stopped (it died, timed out, broke the protocol, or the server failed part way).
        if answer is not None and not answer[1].get("last"):
            _readers.give_back(reader)
        else:
            reader.stop()
    if answer is not None:
        return _outcome(*answer)
    if timed_out:
        issue = f"reading the file took longer than {limits.timeout_s:g} s"
        raise InvalidMatFileError(UNREADABLE, [issue])
    raise _died(reader.process.exitcode)


def _messages(
    receiver: Connection, deadline: float, stopped: Callable[[], bool]
) -> Iterator[tuple[str, dict[str, Any], bytes]]:
    """The child's messages (kind, fields, bytes) until its answer, its death or the deadline.

    A child that dies while sending (killed, or crashed in C code) cuts its message short: that
    is its death, not a malformed message.
    """
    while receiver.poll(max(deadline - time.monotonic(), 0)):
        try:
            header = json.loads(receiver.recv_bytes(_MAX_MESSAGE))
            data = receiver.recv_bytes(_MAX_MESSAGE)
        except EOFError:
            return
        except (OSError, ValueError) as exc:
            if stopped():
                return
            raise WorkerError(f"a malformed message from the reader: {exc}") from exc
        yield header.pop("kind"), header, data


def _stopped(child: _ReaderProcess) -> bool:
    child.join(_EXIT_WAIT_S)
    return child.exitcode is not None


def _outcome(kind: str, message: dict[str, Any]) -> ChildReport:
    if kind == "ok":
        return ChildReport(message["seconds"], message["rss_growth_bytes"])
    if kind == "invalid":
        raise InvalidMatFileError(message["message"], message["issues"])
    raise WorkerError(message.get("error", f"an unexpected message from the reader: {kind}"))


def _died(exitcode: int | None) -> InvalidMatFileError:
    how = (
        f"signal {signal.Signals(-exitcode).name}"
        if exitcode is not None and exitcode < 0
        else f"exit code {exitcode}"
    )
    return InvalidMatFileError(UNREADABLE, [f"the file's reader stopped ({how})"])


# --- The wire between child and server: JSON fields, then the packed arrays back to back --------


def _send(sender: Connection, kind: str, fields: dict[str, Any], data: bytes = b"") -> None:
    sender.send_bytes(json.dumps({"kind": kind, **fields}).encode())
    sender.send_bytes(data)


def _take(view: memoryview, offset: int, size: int | None) -> tuple[bytes | None, int]:
    if size is None:
        return None, offset
    return view[offset : offset + size].tobytes(), offset + size


def _cell(message: dict[str, Any], data: bytes) -> dict[str, Any]:
    battery = message["battery"]
    battery["voltage_grid"], _ = _take(memoryview(data), 0, battery["voltage_grid"])
    return battery


def _cycles(message: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    view, offset = memoryview(data), 0
    rows = message["rows"]
    for row in rows:
        for column in CYCLE_BLOBS:
            row[column], offset = _take(view, offset, row[column])
    return rows


Send = Callable[[str, dict[str, Any], bytes], None]


def _send_cell(send: Send, battery: dict[str, Any], cycles: list[dict[str, Any]]) -> None:
    grid = battery["voltage_grid"]
    fields = {**battery, "voltage_grid": None if grid is None else len(grid)}
    send("cell", {"battery": fields}, grid or b"")
    run: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    size = 0
    for row in cycles:
        sizes: dict[str, int | None] = {}
        for column in CYCLE_BLOBS:
            value = row[column]
            sizes[column] = None if value is None else len(value)
            if value is not None:
                blobs.append(value)
                size += len(value)
        run.append({**row, **sizes})
        if size >= RUN_BYTES:
            send("cycles", {"rows": run}, b"".join(blobs))
            run, blobs, size = [], [], 0
    if run:
        send("cycles", {"rows": run}, b"".join(blobs))


class _Outbox:
    """The child's messages, written to the pipe by a thread of their own: the reader goes on
    with the next cell while the server inserts the last one's rows. At most QUEUED messages
    wait (a few runs' bytes); a full queue holds the reader back."""

    QUEUED = 2

    def __init__(self, sender: Connection) -> None:
        self._sender = sender
        self._queue: queue.Queue[tuple[str, dict[str, Any], bytes] | None] = queue.Queue(
            self.QUEUED
        )
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="reader-outbox", daemon=True)
        self._thread.start()

    def put(self, kind: str, fields: dict[str, Any], data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put((kind, fields, data))

    def close(self) -> BaseException | None:
        """Wait until everything queued is written; what writing raised, if anything."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._failure

    def _write(self) -> None:
        while (message := self._queue.get()) is not None:
            if self._failure is None:
                try:
                    _send(self._sender, *message)
                except Exception as exc:  # the server went away: the reader stops at its next put
                    self._failure = exc


@dataclass(frozen=True)
class _Job:
    path: str
    meta: UploadMetadata
    limits: ParseLimits


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise WorkerError(f"/proc/self/status has no {field}")


def _lower_peak_rss() -> int:
    """Resident memory now, after lowering the high-water mark to it: a reader that served
    earlier uploads reports each one's own peak (Linux's clear_refs, value 5). Where that is
    not allowed, the peak is the reader's lifetime's: a figure for the log, not a limit."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def _serve(connection: Connection, jobs: int) -> None:
    """A reader's life: one upload after another, until the server closes the connection, the
    reader has served ``jobs``, or an upload left it unfit to read another."""
    _, ceiling = resource.getrlimit(resource.RLIMIT_AS)
    with connection, tempfile.TemporaryFile() as scratch:
        for served in range(1, jobs + 1):
            try:
                job = connection.recv()  # from the server: trusted
            except EOFError:
                return
            kind, fields, fit = _answer(connection, job, ceiling, scratch)
            if scratch.seek(0, os.SEEK_END) > SCRATCH_KEPT_BYTES:
                scratch.truncate(0)
            last = not fit or served == jobs
            try:
                _send(connection, kind, {**fields, "last": last})  # the answer comes last
            except OSError:  # the server stopped listening
                return
            if last:
                return


def _answer(
    connection: Connection, job: _Job, ceiling: int, scratch: BinaryIO
) -> tuple[str, dict[str, Any], bool]:
    """Read one upload, sending its rows: the answer, and whether this reader may read another.

    The memory limit covers this upload alone; it is lifted again between uploads.
    """
    limits = job.limits
    outbox = _Outbox(connection)  # its thread's stack before the limit
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, ceiling))
    started = time.perf_counter()
    rss_start = _lower_peak_rss()
    fit = True
    try:
        _read(outbox.put, job, scratch)
        if (failure := outbox.close()) is not None:
            raise failure
        kind, fields = (
            "ok",
            {
                "seconds": time.perf_counter() - started,
                "rss_growth_bytes": max(_status_bytes("VmHWM") - rss_start, 0),
            },
        )
    except InvalidMatFileError as exc:
        kind, fields = "invalid", {"message": exc.message, "issues": exc.issues}
    except MemoryError:
        issue = f"reading the file needs more than {limits.memory_bytes / 1024**2:g} MiB"
        kind, fields, fit = "invalid", {"message": UNREADABLE, "issues": [issue]}, False
    except Exception as exc:  # the server's own trouble: a 500 there
        kind, fields, fit = "error", {"error": f"{type(exc).__name__}: {exc}"}, False
    if outbox.close() is not None:
        fit = False  # the server stopped listening part way
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    return kind, fields, fit


def _read(send: Send, job: _Job, scratch: BinaryIO) -> None:
    """Read every cell and send its rows, one cell's arrays in memory at a time."""
    limits = job.limits
    with open_research_file(
        Path(job.path), max_decompressed_bytes=limits.max_decompressed_bytes, scratch=scratch
    ) as cells:
        for position, cell in enumerate(cells, start=1):
            record = cell_record(
                cell,
                job.meta,
                position=position,
                default_eol_threshold=limits.default_eol_threshold,
            )
            _send_cell(send, record.battery, record.cycles)
