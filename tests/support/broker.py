"""A private mosquitto for the tests, on free loopback ports.

Listeners: plain tcp (anonymous), tcp with password auth and ACLs, websockets
(anonymous), websockets with password auth, mqtts (test CA), mqtts requiring a client
certificate, and wss through :class:`TLSTerminator` in front of the authenticated
websockets listener. It can be stopped and started again on the same ports, with
persistence, to test reconnects.

When mosquitto cannot be found or started this raises: tests that need a broker fail,
they are never skipped.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.certs import TestPKI, make_pki
from tests.support.tls_terminator import TLSTerminator

# A scripted broker that breaks MQTT on purpose (run it with --port and --case).
HOSTILE = Path(__file__).resolve().parent / "hostile_broker.py"
USER = "alice"
PASSWORD = "s3cret-Passw0rd-for-tests"
# A token of the platform's shape. The org part has '-' and '_' would break naive splitting.
TOKEN = "tesa_mqtt_test-org-1_Q2hhbmdlTWVQbGVhc2UxMjM0NTY3ODkwYWJjZGVm"
EXPIRED_TOKEN = "tesa_mqtt_test-org-1_ZXhwaXJlZFRva2VuVGhhdElzTm90S25vd24xMjM0"
# A user whose ACL lets it read everything and publish nothing (the broker denies its publishes).
READER = "reader"
READER_PASSWORD = "r3ad-0nly-Passw0rd-for-tests"


class BrokerUnavailable(RuntimeError):
    pass


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerUnavailable(
        "mosquitto not found: install it (apt-get install mosquitto) or run the README's test command, "
        "which installs it"
    )


def find_mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerUnavailable("mosquitto_passwd not found (it comes with the mosquitto package)")


# Ports for the servers the tests start: each pytest-xdist worker takes its own slice of
# 20000-31999 (below the kernel's ephemeral range, 32768-60999, where port 0 binds and
# outgoing connections come from), so two workers never pick the same port between one's
# bind check and its server's bind. Each process walks its slice in turn from a random
# start, skipping what is in use. Beyond 8 workers: port 0, as before.
PORT_BASE, PORT_SLICE, PORT_SLICES = 20000, 1500, 8
_next_port: list[int] = []


def _worker_slice() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return index if index < PORT_SLICES else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that nothing listens on (see PORT_BASE)."""
    index = _worker_slice()
    if index is None:
        return _kernel_ports(count)
    if not _next_port:
        import random

        _next_port.append(random.randrange(PORT_SLICE))
    low = PORT_BASE + index * PORT_SLICE
    ports: list[int] = []
    for _ in range(PORT_SLICE):
        port = low + _next_port[0] % PORT_SLICE
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise BrokerUnavailable(f"no {count} free ports in 127.0.0.1:{low}-{low + PORT_SLICE - 1}")


def _kernel_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, timeout: float = 10.0, *, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something listens on ``port``; sooner a failure when ``process`` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerUnavailable(f"the server for 127.0.0.1:{port} exited ({process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerUnavailable(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Mosquitto:
    """A running private mosquitto. URLs for each listener are properties."""

    directory: Path
    pki: TestPKI
    tcp_port: int = 0
    auth_port: int = 0
    ws_port: int = 0
    ws_auth_port: int = 0
    tls_port: int = 0
    mtls_port: int = 0
    wss_port: int = 0
    extra_config: str = ""
    # False: mosquitto's own defaults for max_inflight_messages (20) and max_queued_messages
    # (1000), as a user's broker has them; True: raised for the load tests.
    raised_limits: bool = True
    process: subprocess.Popen[bytes] | None = None
    terminator: TLSTerminator | None = None
    starts: int = field(default=0)

    @property
    def tcp_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.tcp_port}"

    @property
    def auth_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.auth_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/mqtt"

    @property
    def ws_auth_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_auth_port}/mqtt"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def mtls_url(self) -> str:
        return f"mqtts://localhost:{self.mtls_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://localhost:{self.wss_port}/mqtt"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def _write_config(self) -> Path:
        d = self.directory
        passwd = d / "passwd"
        if not passwd.exists():
            tool = find_mosquitto_passwd()
            subprocess.run([tool, "-c", "-b", str(passwd), USER, PASSWORD], check=True, capture_output=True)
            subprocess.run([tool, "-b", str(passwd), TOKEN, TOKEN], check=True, capture_output=True)
            subprocess.run([tool, "-b", str(passwd), READER, READER_PASSWORD], check=True, capture_output=True)
            passwd.chmod(0o600)
        acl = d / "acl"
        acl.write_text(
            f"user {USER}\ntopic readwrite #\n\n"
            f"user {TOKEN}\ntopic read device/+/telemetry/#\ntopic read device/+/telemetry\n"
            "topic read devices/+/telemetry/#\n"
            f"\nuser {READER}\ntopic read #\n"
        )
        acl.chmod(0o600)
        p = self.pki
        tls = f"cafile {p.ca_cert}\ncertfile {p.server_cert}\nkeyfile {p.server_key}\n"
        config = d / "mosquitto.conf"
        config.write_text(
            "per_listener_settings true\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            +
            f"persistence true\npersistence_location {d}/\nautosave_interval 1\n"
            f"log_dest file {self.log_path}\nlog_type error\nlog_type warning\nlog_type notice\n"
            + ("max_queued_messages 200000\nmax_inflight_messages 1000\n" if self.raised_limits else "")
            +
            f"{self.extra_config}\n"
            f"listener {self.tcp_port} 127.0.0.1\nallow_anonymous true\n\n"
            f"listener {self.auth_port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\n\n"
            f"listener {self.ws_port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\n"
            f"listener {self.ws_auth_port} 127.0.0.1\nprotocol websockets\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\n\n"
            f"listener {self.tls_port} 127.0.0.1\n{tls}allow_anonymous true\n\n"
            f"listener {self.mtls_port} 127.0.0.1\n{tls}require_certificate true\nallow_anonymous true\n"
        )
        return config

    def start(self) -> None:
        """Start mosquitto; on its first start on ports of its own choosing, a port another
        process took in the meantime means new ports and another try (at most 5)."""
        fresh = not self.tcp_port
        for attempt in range(5 if fresh else 1):
            if fresh:
                (self.tcp_port, self.auth_port, self.ws_port, self.ws_auth_port, self.tls_port,
                 self.mtls_port, self.wss_port) = free_ports(7)
            try:
                self._start_once()
                break
            except BrokerUnavailable as exc:
                taken = "Unable to create" in str(exc) or "Address already in use" in str(exc)
                if not (fresh and taken) or attempt == 4:
                    raise
        if self.terminator is None:
            self.terminator = TLSTerminator(listen_port=self.wss_port, target_port=self.ws_auth_port,
                                            cert=self.pki.server_cert, key=self.pki.server_key)
            self.terminator.start()
        self.starts += 1

    def _start_once(self) -> None:
        config = self._write_config()
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_raise_fd_limit,
        )
        try:
            for port in (self.tcp_port, self.auth_port, self.ws_port, self.ws_auth_port, self.tls_port,
                         self.mtls_port):
                wait_for_port(port, process=self.process)
        except BrokerUnavailable:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise BrokerUnavailable(f"mosquitto did not start:\n{log[-2000:]}") from None

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, so it saves its persistence file). The wss front stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.stop()
        if self.terminator is not None:
            self.terminator.stop()
            self.terminator = None


def _raise_fd_limit() -> None:
    """In the broker's process: the soft descriptor limit up to the hard one (the fleet tests
    hold thousands of connections; mosquitto's max_connections is unlimited by default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_mosquitto(directory: Path, *, extra_config: str = "", raised_limits: bool = True) -> Mosquitto:
    directory.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(directory=directory, pki=make_pki(directory / "pki"), extra_config=extra_config,
                       raised_limits=raised_limits)
    broker.start()
    return broker
