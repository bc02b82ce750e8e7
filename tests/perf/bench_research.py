"""Research uploads: time from request to 201 and peak memory, for every real file in
../shared/data, beside a bare ``scipy.io.loadmat`` / ``h5py`` read of the same file in the same run.

Run on demand: `.venv/bin/python -m tests.perf.bench_research [--runs N] [--database-url URL]`.
Each measurement runs in a fresh child process so that one cannot warm or bloat the next:
- upload: the API app (test client, no network) on a migrated database (a SQLite file by
  default; ``--database-url`` for PostgreSQL), an engineer's multipart POST of the file,
  through to the 201 (parse, store, commit);
- bare: ``scipy.io.loadmat`` of the whole file (v5), or every dataset of the HDF5 file read with
  h5py (v7.3): what any reader of the file must at least do.
Memory is the growth of resident memory over the work (C allocations of HDF5 and zlib included):
for the bare read, this process's (sampled every 2 ms); for an upload, the child process that
reads and stores the file (its own peak over its start, as the server logs it). The server's
Python allocations during the request (tracemalloc) are printed too. Reach: upload within 2x
the bare read; peak under 2x the file size.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

from tests.support import SHARED_DATA

DATA = SHARED_DATA
MIB = 1024 * 1024


def _files() -> list[Path]:
    return sorted(p for p in DATA.rglob("*.mat") if "negative" not in p.parts)


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


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
    """The highest resident set size seen while the work runs (sampled every 2 ms): catches C
    allocations (HDF5, zlib) that tracemalloc does not see."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


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


def _upload(client, headers: dict[str, str], path: Path, expect: int = 201) -> None:
    with path.open("rb") as stream:
        response = client.post(
            "/api/v1/research/batteries",
            headers=headers,
            data={"file": (stream, path.name)},
            content_type="multipart/form-data",
        )
    if response.status_code != expect:
        raise SystemExit(f"{path.name}: {response.status_code} {response.get_json()}")


def child(kind: str, path: Path, database_url: str | None) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    import h5py  # noqa: F401 (imported before the measurement in both kinds)
    import scipy.io  # noqa: F401

    reader = _ReaderMemory()
    with tempfile.TemporaryDirectory() as scratch:
        if kind == "upload":
            url = database_url or f"sqlite:///{Path(scratch) / 'central.sqlite3'}"
            client, headers = _upload_setup(url)
            # A refused file first: the parsers' forkserver starts once per server, not per file.
            _upload(client, headers, DATA / "negative" / "matlab_table_only.mat", expect=400)
            research_log = logging.getLogger("central.api.research")
            research_log.setLevel(logging.INFO)
            research_log.addHandler(reader)
            work = lambda: _upload(client, headers, path)  # noqa: E731
        else:
            work = lambda: _bare(path)  # noqa: E731
        rss_before = _rss_bytes()
        tracemalloc.start()
        with _RssPeak() as rss:
            started = time.perf_counter()
            work()
            seconds = time.perf_counter() - started
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # An upload is read in a child process: its own growth is what the reader cost.
    growth = reader.rss_growth if kind == "upload" else max(rss.peak - rss_before, 0)
    return {"seconds": seconds, "traced_peak": traced_peak, "rss_growth": growth}


def _measure(kind: str, path: Path, database_url: str | None) -> dict[str, float]:
    command = [sys.executable, "-m", "tests.perf.bench_research", "--child", kind, str(path)]
    if database_url:
        command += ["--database-url", database_url]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        print(json.dumps(child(kind, Path(path), args.database_url)))
        return
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"medians of {args.runs} runs, each in a fresh process; store: {store}")
    header = (
        f"{'file':<34}{'MiB':>6}{'upload s':>10}{'bare s':>8}{'ratio':>7}"
        f"{'server MiB':>12}{'reader+ MiB':>13}{'x file':>7}{'bare+ MiB':>11}{'x file':>7}"
    )
    print(header)
    ratios, memory = [], []
    for path in _files():
        size = path.stat().st_size
        uploads = [_measure("upload", path, args.database_url) for _ in range(args.runs)]
        bares = [_measure("bare", path, args.database_url) for _ in range(args.runs)]
        up_s = statistics.median(u["seconds"] for u in uploads)
        bare_s = statistics.median(b["seconds"] for b in bares)
        traced = statistics.median(u["traced_peak"] for u in uploads)
        rss = statistics.median(u["rss_growth"] for u in uploads)
        bare_rss = statistics.median(b["rss_growth"] for b in bares)
        ratios.append(up_s / bare_s)
        memory.append(max(traced, rss) / size)
        print(
            f"{path.parent.name + '/' + path.name:<34}{size / MIB:>6.1f}{up_s:>10.3f}"
            f"{bare_s:>8.3f}{up_s / bare_s:>7.2f}{traced / MIB:>12.1f}{rss / MIB:>13.1f}"
            f"{rss / size:>7.2f}{bare_rss / MIB:>11.1f}{bare_rss / size:>7.2f}"
        )
    print(
        f"worst upload/bare ratio {max(ratios):.2f} (reach 2.0); "
        f"worst peak/file size {max(memory):.2f} (reach 2.0)"
    )


if __name__ == "__main__":
    main()
