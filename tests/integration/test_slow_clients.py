"""The API under gunicorn with the repository's configuration (api/gunicorn_config.py), started as
scripts/stack.sh starts it, while 50 clients each send part of a request head and then nothing: a
normal request is still answered at once (gevent workers: a stalled client holds a greenlet, not one of
the two workers), and the server closes the stalled connections after `keepalive` seconds, without a
worker being killed or replaced."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from api import gunicorn_config
from tests.support.environment import ROOT, TEST_BROKER
from tests.support.polling import poll
from tests.support.processes import free_port, terminate

SLOW_CLIENTS = 50
# A request head that never ends: no blank line ever follows.
PARTIAL_HEAD = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def api_server(database: str, broker: redis.Redis, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    cmd = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c", str(ROOT / "api" / "gunicorn_config.py"),
        "--bind", f"127.0.0.1:{port}",
        "api:create_app()",
    ]  # fmt: skip
    env = {**os.environ, "IAAS_DATABASE_URL": database, "IAAS_BROKER_URL": TEST_BROKER}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)

    def ready() -> bool | None:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
        try:
            return True if requests.get(f"{server.url}/readyz", timeout=2).status_code == 200 else None
        except requests.ConnectionError:
            return None

    try:
        poll(ready, timeout=30, what="gunicorn to answer /readyz")
        yield server
    finally:
        terminate(process)
        assert process.returncode in (0, -signal.SIGTERM), server.log()


def stalled_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(PARTIAL_HEAD)
    sock.setblocking(False)  # for closed_by_server: a socket with a timeout would wait that long first
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:  # nothing to read yet: still open
        return False
    except ConnectionResetError:
        return True


def test_stalled_clients_neither_block_the_api_nor_stay_connected(api_server: Server) -> None:
    stalled = [stalled_client(api_server.port) for _ in range(SLOW_CLIENTS)]
    try:
        # Each normal request (database and broker checked, so psycopg2 and redis-py run under gevent)
        # is answered while all of them hang; with two sync workers the first would wait for a timeout.
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            response = requests.get(f"{api_server.url}/readyz", timeout=5)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
        assert max(latencies) < 2, latencies
        assert not any(closed_by_server(sock) for sock in stalled)  # all still held meanwhile

        poll(
            lambda: True if all(closed_by_server(sock) for sock in stalled) else None,
            timeout=gunicorn_config.keepalive + 10,
            interval=0.2,
            what=f"the server to close {SLOW_CLIENTS} stalled connections",
        )
    finally:
        for sock in stalled:
            sock.close()

    assert requests.get(f"{api_server.url}/readyz", timeout=5).status_code == 200
    log = api_server.log()
    assert "WORKER TIMEOUT" not in log
    assert log.count("Booting worker") == gunicorn_config.workers  # none killed and replaced
