"""Parsing and storing an upload in a child process, so that a hostile file cannot take the
server down.

The readers underneath are C (libhdf5, scipy's MAT reader) fed untrusted bytes: crafted files
have crashed them, and a file can ask for more memory or time than a server can give. The child
gets an address-space limit and a deadline; whatever happens to it (a crash, MemoryError, a
hang), the server answers with a clear error. The child writes through its own connection in one
transaction, so a child that dies leaves nothing half-stored.

Children come from a forkserver that has imported the parsers and configured the ORM once: a
fork costs milliseconds, and the server's own threads and connections are never forked. The
stdlib would also re-run the server's ``__main__`` (the ``battery-central`` script, and with it
the whole app: 0.6 s) in every child before the job starts; the job needs none of it, so the
children are launched without it.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import resource
import signal
import time
from dataclasses import dataclass
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path

from sqlalchemy.orm import configure_mappers

from central.db.engine import make_engine, make_session_factory
from central.research.cells import InvalidMatFileError
from central.research.store import UploadMetadata, store_file

UNREADABLE = "Unable to parse .mat file"
_context = multiprocessing.get_context("forkserver")
# The database drivers too: after the address-space limit, loading a library may fail.
_context.set_forkserver_preload([__name__, "sqlite3", "psycopg2"])
# Once here (in the forkserver too) rather than in every child: 50 ms and 1–2 MiB per upload.
configure_mappers()
# What a child needs to start besides the pickled job: the parent's ``__main__`` is left out.
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


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
    """What storing one upload cost the child: for the log and the benchmark."""

    seconds: float
    # Peak resident memory over the child's own start. It counts the interpreter's and libraries'
    # code pages, which a forked child maps afresh as it runs (page cache shared with the
    # forkserver: about 6 MiB whatever the file), besides what the child allocated.
    rss_growth_bytes: int


class WorkerError(RuntimeError):
    """The child failed for a reason that is the server's, not the file's (e.g. the database)."""


def store_in_child(
    database_url: str, path: Path, meta: UploadMetadata, upload_id: str, limits: ParseLimits
) -> ChildReport:
    """Store ``path`` as ``upload_id`` in a child process; committed once this returns.

    Raises ``InvalidMatFileError`` for a file the child refused, ran out of memory or time on,
    or died reading; ``WorkerError`` for anything else.
    """
    receiver, sender = _context.Pipe(duplex=False)
    child = _ReaderProcess(
        target=_child,
        args=(sender, _Job(database_url, str(path), meta, upload_id, limits)),
        name=f"research-upload-{upload_id[:8]}",
        daemon=True,
    )
    child.start()
    sender.close()
    kind: str | None = None
    try:
        timed_out = not receiver.poll(limits.timeout_s)
        if timed_out:
            child.kill()
        # A child that answered just as its time ran out has still answered.
        kind, payload = _answer(receiver)
        if kind != "ok":
            child.join()  # its exit code says how it stopped
    finally:
        receiver.close()
        # A child that stored the file has closed its connection before answering: it is left
        # to end on its own (reaped by the next start), the caller need not wait for that.
        if kind != "ok" and child.is_alive():  # the server itself is stopping
            child.kill()
            child.join()
    if kind is None:
        if timed_out:
            issue = f"reading the file took longer than {limits.timeout_s:g} s"
            raise InvalidMatFileError(UNREADABLE, [issue])
        raise _died(child.exitcode)
    if kind == "invalid":
        message, issues = payload
        raise InvalidMatFileError(message, issues)
    if kind == "error":
        raise WorkerError(payload)
    return ChildReport(**payload)


def _answer(receiver: Connection) -> tuple[str | None, object]:
    """The child's message, or ``(None, None)`` if it died without one."""
    try:
        return receiver.recv() if receiver.poll() else (None, None)
    except EOFError:
        return None, None


def _died(exitcode: int | None) -> InvalidMatFileError:
    how = (
        f"signal {signal.Signals(-exitcode).name}"
        if exitcode is not None and exitcode < 0
        else f"exit code {exitcode}"
    )
    return InvalidMatFileError(UNREADABLE, [f"the file's reader stopped ({how})"])


@dataclass(frozen=True)
class _Job:
    database_url: str
    path: str
    meta: UploadMetadata
    upload_id: str
    limits: ParseLimits


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _child(sender: Connection, job: _Job) -> None:
    limits = job.limits
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    started = time.perf_counter()
    rss_start = _rss_bytes()
    try:
        _store(job)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = {
            "seconds": time.perf_counter() - started,
            "rss_growth_bytes": max(peak - rss_start, 0),
        }
        answer: tuple[str, object] = ("ok", report)
    except InvalidMatFileError as exc:
        answer = ("invalid", (exc.message, exc.issues))
    except MemoryError:
        issue = f"reading the file needs more than {limits.memory_bytes / 1024**2:g} MiB"
        answer = ("invalid", (UNREADABLE, [issue]))
    except Exception as exc:  # the server's own trouble (the database...): a 500 there
        answer = ("error", f"{type(exc).__name__}: {exc}")
    # Last: nothing of the store is open any more, so the server need not wait for this exit.
    with sender:
        sender.send(answer)


def _store(job: _Job) -> None:
    """Parse and store in one transaction, through a connection of this process's own."""
    engine = make_engine(job.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            store_file(
                session,
                Path(job.path),
                job.meta,
                upload_id=job.upload_id,
                default_eol_threshold=job.limits.default_eol_threshold,
                max_decompressed_bytes=job.limits.max_decompressed_bytes,
            )
    finally:
        engine.dispose()
