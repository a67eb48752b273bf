"""psycopg2 as the API's gevent workers run it (api/gunicorn_config.py installs `wait_for_postgres`
after the fork): queries of two greenlets overlap instead of queueing, and a server that accepts the
connection and then says nothing fails the connect after its `connect_timeout`, as without gevent. The
callback waits through gevent's hub, so this process needs no monkey-patching."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import psycopg2
import pytest
from psycopg2 import extensions

from api.gunicorn_config import wait_for_postgres
from common.db import database_url_for


@pytest.fixture
def green_psycopg2() -> Iterator[None]:
    extensions.set_wait_callback(wait_for_postgres)
    yield
    extensions.set_wait_callback(None)


def test_queries_of_two_greenlets_overlap(green_psycopg2: None, database: str) -> None:
    dsn = database_url_for(database, database.rsplit("/", 1)[1], driver="postgresql")

    def sleep_in_postgres() -> None:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.5)")
        conn.close()

    started = time.monotonic()
    greenlets = [gevent.spawn(sleep_in_postgres) for _ in range(2)]
    gevent.joinall(greenlets, raise_error=True, timeout=10)
    assert all(greenlet.successful() for greenlet in greenlets)
    assert time.monotonic() - started < 0.9  # one after the other would take 1 s


def test_a_silent_server_fails_the_connect_after_its_connect_timeout(green_psycopg2: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        # gevent.Timeout: a callback that ignored connect_timeout fails this test instead of hanging it
        with gevent.Timeout(10), pytest.raises(psycopg2.OperationalError, match="timeout expired"):
            psycopg2.connect(host="127.0.0.1", port=port, user="x", dbname="x", connect_timeout=1)
        assert time.monotonic() - started < 3
