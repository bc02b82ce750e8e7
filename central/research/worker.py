"""Parsing and storing an upload in a child process, so that a hostile file cannot take the
server down.

The readers underneath are C (libhdf5, scipy's MAT reader) fed untrusted bytes: crafted files
have crashed them, and a file can ask for more memory or time than a server can give. The child
gets an address-space limit and a deadline; whatever happens to it (a crash, MemoryError, a
hang), the server answers with a clear error. The child writes through its own connection in one
transaction, so a child that dies leaves nothing half-stored.

Children come from a forkserver that has imported the parsers once: a fork costs milliseconds,
and the server's own threads and connections are never forked.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from central.db.engine import make_engine, make_session_factory
from central.research.cells import InvalidMatFileError
from central.research.store import UploadMetadata, store_file

UNREADABLE = "Unable to parse .mat file"
_context = multiprocessing.get_context("forkserver")
# The database drivers too: after the address-space limit, loading a library may fail.
_context.set_forkserver_preload([__name__, "sqlite3", "psycopg2"])


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
    # Peak resident memory over the child's own start (pages shared with the forkserver apart).
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
    child = _context.Process(
        target=_child,
        args=(sender, _Job(database_url, str(path), meta, upload_id, limits)),
        name=f"research-upload-{upload_id[:8]}",
        daemon=True,
    )
    child.start()
    sender.close()
    try:
        timed_out = not receiver.poll(limits.timeout_s)
        if timed_out:
            child.kill()
        child.join()
        # A child that answered just as its time ran out has still answered.
        kind, payload = _answer(receiver)
    finally:
        receiver.close()
        if child.is_alive():  # the server itself is stopping
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
    engine = None
    try:
        engine = make_engine(job.database_url)
        with make_session_factory(engine).begin() as session:
            store_file(
                session,
                Path(job.path),
                job.meta,
                upload_id=job.upload_id,
                default_eol_threshold=limits.default_eol_threshold,
                max_decompressed_bytes=limits.max_decompressed_bytes,
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = {
            "seconds": time.perf_counter() - started,
            "rss_growth_bytes": max(peak - rss_start, 0),
        }
        sender.send(("ok", report))
    except InvalidMatFileError as exc:
        sender.send(("invalid", (exc.message, exc.issues)))
    except MemoryError:
        issue = f"reading the file needs more than {limits.memory_bytes / 1024**2:g} MiB"
        sender.send(("invalid", (UNREADABLE, [issue])))
    except Exception as exc:  # the server's own trouble (the database...): a 500 there
        sender.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if engine is not None:
            engine.dispose()
        sender.close()
