"""Research uploads: time from request to 201 and peak memory, for every real file in
../shared/data, beside a bare ``scipy.io.loadmat`` / ``h5py`` read of the same file in the same run.

Run on demand: `.venv/bin/python -m tests.perf.bench_research [--runs N] [--database-url URL]
[--match nasa_pcoe]`.
Each measurement runs in a fresh child process so that one cannot warm or bloat the next:
- upload: the API app (test client, no network) on a migrated database (a SQLite file by
  default; ``--database-url`` for PostgreSQL), an engineer's multipart POST of the file (its
  body encoded beforehand), through to the 201 (parse, store, commit);
- bare: ``scipy.io.loadmat`` of the whole file (v5), or every dataset of the HDF5 file read with
  h5py (v7.3): what any reader of the file must at least do.
Time and memory are measured in separate runs (the two kinds alternating): tracing every Python
allocation and sampling /proc slow the work they watch, and the upload's multipart parsing far
more than one ``loadmat`` call. Time is taken twice in each process: the first call (a server's
first upload: its SQL statements not yet compiled, its reader newly forked; a first ``loadmat``)
and the median of the next five (a running server, whose reader waits from the upload before,
and the reach's figure), each kind in a process of its own.
Memory is the growth of resident memory over the work (C allocations of HDF5 and zlib included),
two ways, sampled every 2 ms: private memory (anonymous pages: what the work allocated), and
resident pages as the server logs them (the reader's peak over its start, reset per upload).
For an upload that is the reader child, which reads the file and sends its rows to the server.
For the bare read it is this process. The
server's Python allocations during the request (tracemalloc) are printed too. Reach: upload
within 2x the bare read; private peak under 2x the file size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path

from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.support import SHARED_DATA

DATA = SHARED_DATA
MIB = 1024 * 1024
REPEATS = 5


def _files(match: str) -> list[Path]:
    return sorted(p for p in DATA.rglob("*.mat") if "negative" not in p.parts and match in str(p))


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _private_bytes(pid: int | str = "self") -> int:
    """Anonymous and shared-memory resident pages: memory the process allocated, no code."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return sum(int(fields[key].split()[0]) for key in ("RssAnon", "RssShmem")) * 1024


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _bare(path: Path) -> None:
    import h5py
    import scipy.io

    with path.open("rb") as stream:
        stream.seek(512)
        hdf5 = stream.read(8) == b"\x89HDF\r\n\x1a\n"
    if not hdf5:
        scipy.io.loadmat(path)
        return

    def read(_name: str, item: object) -> None:  # a value other than None stops the visit
        if isinstance(item, h5py.Dataset):
            item[()]

    with h5py.File(path, "r") as f:
        f.visititems(read)


class _RssPeak:
    """The highest memory seen while the work runs (sampled every 2 ms): catches C allocations
    (HDF5, zlib) that tracemalloc does not see. This process's resident and private memory, and
    the growth of private memory of the children of ``parent`` (the forkserver) if given: a
    reader that was waiting from an earlier upload over its own private memory at the start, a
    reader forked during the work over the forkserver's."""

    def __init__(self, parent: int | None = None) -> None:
        self.peak = 0
        self.private_peak = 0
        self.child_private_growth = 0
        self._parent = parent
        self._baseline: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if parent is not None:
            self._forked_from = _private_bytes(parent)
            for pid in _children(parent):
                self._baseline[pid] = _private_bytes(pid)

    def _sample_children(self) -> None:
        for pid in _children(self._parent):
            with contextlib.suppress(OSError, KeyError):  # the child has just exited
                growth = _private_bytes(pid) - self._baseline.get(pid, self._forked_from)
                self.child_private_growth = max(self.child_private_growth, growth)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self.private_peak = max(self.private_peak, _private_bytes())
            if self._parent is not None:
                self._sample_children()
            time.sleep(0.002)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.private_peak = max(self.private_peak, _private_bytes())


def _upload_setup(database_url: str) -> tuple[object, dict[str, str]]:
    from central import migrations
    from tests.central.api_support import add_user, bearer, login, make_app

    migrations.upgrade(database_url)
    add_user(database_url, "engineer1", "engineer")
    app = make_app(database_url, RATELIMIT_ENABLED=False)
    client = app.test_client()
    token = login(client, "engineer1").get_json()["access_token"]
    return client, bearer(token)


class _ReaderMemory(logging.Handler):
    """Picks the reader's memory growth out of the server's upload log line."""

    def __init__(self) -> None:
        super().__init__()
        self.rss_growth = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.rss_growth = getattr(record, "reader_rss_growth_bytes", self.rss_growth)


def _request_body(path: Path) -> tuple[bytes, str]:
    """The multipart body and content type a client sends: encoded before the clock starts, as
    that is the client's work, not the server's."""
    with path.open("rb") as stream:
        boundary, body = encode_multipart({"file": FileStorage(stream, path.name)})
    return body, f"multipart/form-data; boundary={boundary}"


def _upload(client, headers: dict[str, str], request: tuple[bytes, str], expect: int = 201) -> None:
    body, content_type = request
    response = client.post(
        "/api/v1/research/batteries", headers=headers, data=body, content_type=content_type
    )
    if response.status_code != expect:
        raise SystemExit(f"{response.status_code} {response.get_json()}")


def child(kind: str, path: Path, database_url: str | None, memory: bool) -> dict[str, float]:
    """One measurement, in this (fresh) process: of memory (sampled, traced), or else of time
    alone, as tracing every allocation and sampling /proc slow the work they watch."""
    import h5py  # noqa: F401 (imported before the measurement in both kinds)
    import scipy.io  # noqa: F401

    from central.research import worker

    reader = _ReaderMemory()
    forkserver_pid = None
    with tempfile.TemporaryDirectory() as scratch:
        if kind == "upload":
            url = database_url or f"sqlite:///{Path(scratch) / 'central.sqlite3'}"
            client, headers = _upload_setup(url)
            # A refused file first: the parsers' forkserver starts once per server, not per file.
            refused = _request_body(DATA / "negative" / "matlab_table_only.mat")
            _upload(client, headers, refused, expect=400)
            # Its reader is stopped: the first upload timed is read by a newly forked one.
            worker._readers.stop_idle()
            research_log = logging.getLogger("central.api.research")
            research_log.setLevel(logging.INFO)
            research_log.addHandler(reader)
            request = _request_body(path)
            work = lambda: _upload(client, headers, request)  # noqa: E731
            forkserver_pid = forkserver._forkserver._forkserver_pid
        else:
            work = lambda: _bare(path)  # noqa: E731
            private_before = _private_bytes()
        if not memory:
            return _timings(work)
        rss_before = _rss_bytes()
        tracemalloc.start()
        with _RssPeak(forkserver_pid) as rss:
            work()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # An upload is read in a child process: its own growth is what the reader cost.
    if kind == "upload":
        growth, private = reader.rss_growth, rss.child_private_growth
    else:
        growth, private = rss.peak - rss_before, rss.private_peak - private_before
    return {
        "traced_peak": traced_peak,
        "rss_growth": max(growth, 0),
        "private_growth": max(private, 0),
    }


def _timings(work: Callable[[], None]) -> dict[str, float]:
    """The first call (a server's first upload: its statements not yet compiled) and the median
    of the next REPEATS (a running server, as operators meet it)."""
    seconds = []
    for _ in range(1 + REPEATS):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return {"first": seconds[0], "seconds": statistics.median(seconds[1:])}


def _measure(kind: str, path: Path, database_url: str | None, memory: bool) -> dict[str, float]:
    command = [sys.executable, "-m", "tests.perf.bench_research", "--child", kind, str(path)]
    if memory:
        command.append("--memory")
    if database_url:
        command += ["--database-url", database_url]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--match", default="", help="only the files whose path holds this")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        print(json.dumps(child(kind, Path(path), args.database_url, args.memory)))
        return
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"medians of {args.runs} runs, each in a fresh process; store: {store}")
    header = (
        f"{'file':<34}{'MiB':>6}{'upload s':>10}{'bare s':>8}{'ratio':>7}"
        f"{'1st up s':>10}{'1st bare':>9}{'ratio':>7}{'server MiB':>12}"
        f"{'reader+ MiB':>13}{'private':>9}{'x file':>7}"
        f"{'bare+ MiB':>11}{'private':>9}{'x file':>7}"
    )
    print(header)
    ratios, first_ratios, memory = [], [], []
    url = args.database_url
    for path in _files(args.match):
        size = path.stat().st_size
        # Time and memory in runs of their own, each kind alternating with the other.
        timed = [
            (_measure("upload", path, url, False), _measure("bare", path, url, False))
            for _ in range(args.runs)
        ]
        up_s = statistics.median(u["seconds"] for u, _ in timed)
        bare_s = statistics.median(b["seconds"] for _, b in timed)
        up_first = statistics.median(u["first"] for u, _ in timed)
        bare_first = statistics.median(b["first"] for _, b in timed)
        watched = [
            (_measure("upload", path, url, True), _measure("bare", path, url, True))
            for _ in range(args.runs)
        ]
        uploads = [u for u, _ in watched]
        bares = [b for _, b in watched]
        traced = statistics.median(u["traced_peak"] for u in uploads)
        rss = statistics.median(u["rss_growth"] for u in uploads)
        private = statistics.median(u["private_growth"] for u in uploads)
        bare_rss = statistics.median(b["rss_growth"] for b in bares)
        bare_private = statistics.median(b["private_growth"] for b in bares)
        ratios.append(up_s / bare_s)
        first_ratios.append(up_first / bare_first)
        memory.append(max(traced, private) / size)
        print(
            f"{path.parent.name + '/' + path.name:<34}{size / MIB:>6.1f}{up_s:>10.3f}"
            f"{bare_s:>8.3f}{up_s / bare_s:>7.2f}{up_first:>10.3f}{bare_first:>9.3f}"
            f"{up_first / bare_first:>7.2f}{traced / MIB:>12.1f}{rss / MIB:>13.1f}"
            f"{private / MIB:>9.1f}{private / size:>7.2f}{bare_rss / MIB:>11.1f}"
            f"{bare_private / MIB:>9.1f}{bare_private / size:>7.2f}"
        )
    print(
        f"worst upload/bare ratio {max(ratios):.2f} (reach 2.0; first upload of a server "
        f"{max(first_ratios):.2f}); worst private peak/file size {max(memory):.2f} (reach 2.0)"
    )


if __name__ == "__main__":
    main()
