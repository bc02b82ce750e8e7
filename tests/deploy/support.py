"""Helpers for the deployment tests: the shipped files, rendered for a test's own ports and
paths, and a Mosquitto started from them.

Rendering replaces exact directives of a shipped file and fails if one is missing or repeated,
so a change to the shipped file is noticed here instead of leaving a test on a stale copy.
"""

from __future__ import annotations

import getpass
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MOSQUITTO_CONF = DEPLOY / "mosquitto" / "mosquitto.conf"
ACL = DEPLOY / "mosquitto" / "acl"
ADD_SITE = DEPLOY / "mosquitto" / "add-site"
BROKER_SETUP = DEPLOY / "compose" / "broker-setup"
COMPOSE_LISTENER = DEPLOY / "compose" / "mosquitto-compose.conf"
CENTRAL_ENV = DEPLOY / "central" / "central.env.example"
SETUP_SQL = DEPLOY / "postgres" / "setup.sql"
UNITS = DEPLOY / "systemd"
# Where the units expect the installed virtualenv; tests point them at this one instead.
INSTALLED_BIN = "/opt/battery-rul/venv/bin"
VENV_BIN = Path(sys.executable).parent
# Paths outside the test's directory that a rendered file must no longer name.
SYSTEM_PATH = re.compile(r"(?<![\w/])/(?:etc|var|run|opt)/")


def render(text: str, replacements: dict[str, str], what: str) -> str:
    """``text`` with each key replaced by its value; each key must occur exactly once."""
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"{what}: expected {old!r} once, found it {count} times"
        text = text.replace(old, new)
    return text


def directives(text: str) -> list[str]:
    """The lines of a configuration file that are not blank or comments."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile reads them (no quotes used here)."""
    env = {}
    for line in directives(path.read_text()):
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key, f"{path.name}: not KEY=value: {line!r}"
        env[key] = value
    return env


def unit_commands(unit: Path, key: str) -> list[list[str]]:
    """The command lines of ``key`` (``ExecStart``, ``ExecStartPre``) of a unit, split as
    systemd splits them, with the installed virtualenv replaced by this one."""
    commands = []
    for line in unit.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name == key:
            argv = shlex.split(value)
            assert argv[0].startswith(INSTALLED_BIN + "/"), f"{unit.name}: {key} runs {argv[0]}"
            argv[0] = str(VENV_BIN / argv[0].removeprefix(INSTALLED_BIN + "/"))
            commands.append(argv)
    return commands


def run_add_site(
    passwd_file: Path, name: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The shipped ``add-site``, with a password on stdin or (``None``) a generated one."""
    args = [str(ADD_SITE), "-f", str(passwd_file), "--broker", "127.0.0.1:8883", name]
    if password is not None:
        args.insert(-1, "--password-stdin")
    return subprocess.run(
        args,
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def printed_setting(output: str, key: str) -> str:
    """The value of ``KEY=value`` in what ``add-site`` printed."""
    match = re.search(rf"^{re.escape(key)}=(\S+)$", output, re.MULTILINE)
    assert match, f"add-site printed no {key}:\n{output}"
    return match[1]


@dataclass
class ShippedBroker:
    """Mosquitto running the shipped mosquitto.conf and acl; only ports and paths changed.

    ``tls_port`` is the sites' TLS listener (8883), ``plain_port`` central's loopback one (1883).
    Both listen on 127.0.0.1 only. ``conf_d`` holds extra files for its ``include_dir``.
    """

    workdir: Path
    cert: Path
    key: Path
    ca: Path
    passwd_file: Path
    conf_d: dict[str, str] = field(default_factory=dict)
    tls_port: int = field(default_factory=free_tcp_port)
    plain_port: int = field(default_factory=free_tcp_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config(self) -> str:
        conf_d = self.workdir / "conf.d"
        conf_d.mkdir(exist_ok=True)
        for name, text in self.conf_d.items():
            (conf_d / name).write_text(text)
        (self.workdir / "data").mkdir(exist_ok=True)
        text = render(
            MOSQUITTO_CONF.read_text(),
            {
                "password_file /etc/mosquitto/credentials/passwd": (
                    f"password_file {self.passwd_file}"
                ),
                "acl_file /etc/mosquitto/acl": f"acl_file {ACL}",
                # Mosquitto run by root drops to this user; the test's files are readable by it.
                "\nuser mosquitto\n": f"\nuser {getpass.getuser()}\n",
                "pid_file /run/mosquitto/mosquitto.pid": f"pid_file {self.workdir}/mosquitto.pid",
                "persistence_location /var/lib/mosquitto/": (
                    f"persistence_location {self.workdir}/data/"
                ),
                "\nlistener 8883\n": f"\nlistener {self.tls_port} 127.0.0.1\n",
                "certfile /etc/mosquitto/certs/server.crt": f"certfile {self.cert}",
                "keyfile /etc/mosquitto/certs/server.key": f"keyfile {self.key}",
                "cafile /etc/mosquitto/certs/ca.crt": f"cafile {self.ca}",
                "\nlistener 1883 127.0.0.1\n": f"\nlistener {self.plain_port} 127.0.0.1\n",
                "include_dir /etc/mosquitto/conf.d": f"include_dir {conf_d}",
            },
            "mosquitto.conf",
        )
        stale = [line for line in directives(text) if SYSTEM_PATH.search(line)]
        assert not stale, f"mosquitto.conf names paths this test does not provide: {stale}"
        return text

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_tcp(self.tls_port, timeout=15)
            wait_for_tcp(self.plain_port, timeout=15)
        except TimeoutError as exc:
            self.stop()
            raise AssertionError(f"mosquitto did not start:\n{self.log()}") from exc

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload mosquitto``: reread the password file and the ACL."""
        assert self.process is not None
        marks = self.log_path.read_text().count("Reloading config")
        self.process.send_signal(signal.SIGHUP)
        wait_until_true(
            lambda: self.log_path.read_text().count("Reloading config") > marks,
            10,
            f"mosquitto did not reload:\n{self.log()}",
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def log(self) -> str:
        return log_tail(self.log_path, 40)


def wait_until_true(condition: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``condition`` every 50 ms; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)
