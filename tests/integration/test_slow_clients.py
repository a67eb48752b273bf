"""The API under gunicorn with the repository's configuration (api/gunicorn_config.py), started as
scripts/stack.sh starts it, while 50 clients each send part of a request head and then nothing: a
normal request is still answered at once (gevent workers: a stalled client holds a greenlet, not one of
the two workers), and the server closes the stalled connections after `keepalive` seconds, without a
worker being killed or replaced."""

from __future__ import annotations

import socket
import time

import requests

from api import gunicorn_config
from tests.support.gunicorn import Server
from tests.support.polling import poll

SLOW_CLIENTS = 50
# A request head that never ends: no blank line ever follows.
PARTIAL_HEAD = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


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
