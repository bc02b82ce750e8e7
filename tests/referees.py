"""Standard tools as referees: run them as a technician would and parse what they print."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass


@dataclass
class Poll:
    returncode: int
    values: dict[int, str]  # 0-based address -> the value mbpoll printed
    stderr: str
    elapsed: float

    def ints(self, address: int, count: int) -> list[int]:
        return [int(self.values[a]) for a in range(address, address + count)]


def mbpoll_args(port: int, unit: int, address: int, count: int, *, kind: str, timeout: float):
    """mbpoll's -r is 1-based: register address A is reference A + 1; count 0 means a write."""
    args = ["mbpoll", "-m", "tcp", "-p", str(port), "-a", str(unit), "-t", kind]
    args += ["-r", str(address + 1), "-1", "-o", str(timeout)]
    args += ["-c", str(count)] if count else []
    return [*args, "-B", "127.0.0.1"] if "float" in kind else [*args, "127.0.0.1"]


def mbpoll(port, unit, address, count=1, *, kind="4", timeout=2.0, write=()) -> Poll:
    started = time.monotonic()
    count = 0 if write else count
    done = subprocess.run(
        [*mbpoll_args(port, unit, address, count, kind=kind, timeout=timeout), *write],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return parse_poll(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def parse_poll(returncode: int, stdout: str, stderr: str, elapsed: float) -> Poll:
    values = {
        int(m[1]) - 1: m[2] for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)", stdout, re.MULTILINE)
    }
    return Poll(returncode, values, stderr, elapsed)


def snmpget_v2c(port: int, community: str, oid: str, retries: int = 0) -> str | None:
    """The value net-snmp's snmpget prints for ``oid``, or None when no answer came.

    ``retries`` repeats the request once a second, for agents that are still starting.
    """
    for attempt in range(retries + 1):
        done = subprocess.run(
            [
                "snmpget",
                "-v2c",
                "-c",
                community,
                "-On",
                "-Oqv",
                "-t",
                "1",
                "-r",
                "0",
                f"127.0.0.1:{port}",
                oid,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip().strip('"')
        if attempt < retries:
            time.sleep(1.0)
    return None
