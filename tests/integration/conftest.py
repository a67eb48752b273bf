"""Integration fixtures: a real PostgreSQL database built by the migrations, a real Redis, and real
`celery worker` processes running our tasks against libvirt's test driver."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text, update
from werkzeug.serving import make_server

from api import create_app
from common.config import Settings
from common.db import transaction
from common.models import Image
from common.networks import network_deleted
from common.queue import make_celery
from common.tokens import Role
from tests.support.gunicorn import Server, gunicorn_api
from tests.support.invariants import host_networks
from tests.support.polling import poll
from tests.support.processes import WorkerProcess, free_port, start_worker
from tests.support.testdriver import TEST_NODE_XML, driver_settings, tiny_image
from tests.support.tokens import api_client, bearer, token_for, zero_usage


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iaas")
    (path / "node.xml").write_text(TEST_NODE_XML)
    return path


@pytest.fixture(scope="session")
def settings(run_dir: Path) -> Settings:
    return driver_settings(run_dir, "itest")


@pytest.fixture(autouse=True)
def clean_tables(request: pytest.FixtureRequest) -> None:
    """Each test starts from empty tables (networks and NICs too) plus the `tiny` image (committed:
    real workers read them); projects and their tokens stay."""
    if "sessions" not in request.fixturenames and "client" not in request.fixturenames:
        return
    sessions = request.getfixturevalue("sessions")
    settings: Settings = request.getfixturevalue("settings")
    with transaction(sessions) as session:
        session.execute(
            text("TRUNCATE task_steps, tasks, nics, vms, images, flavors, keypairs, networks CASCADE")
        )
        zero_usage(session)
        session.add(tiny_image(settings.host))
    if "worker" in request.fixturenames:
        remove_stale_networks(request.getfixturevalue("worker"), settings)


def remove_stale_networks(worker: WorkerProcess, settings: Settings) -> None:
    """The session's worker keeps its (in-memory) libvirt between tests, and the networks of earlier
    tests are gone from the database now: have it remove their libvirt networks the way a deleted
    network's are removed (iaas.remove_network), so the next leak check starts from a clean host."""
    stale = host_networks(worker.inventory(), settings.host)
    if not stale:
        return
    celery = make_celery(settings)
    for network_id in stale.values():
        network_deleted(celery, [settings.host], uuid.UUID(network_id))
    poll(lambda: True if not host_networks(worker.inventory(), settings.host) else None,
         timeout=30, what="the worker to remove the earlier tests' networks")  # fmt: skip


@pytest.fixture
def app(settings: Settings, database: str, broker: redis.Redis) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["iaas"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return api_client(app)


@pytest.fixture(scope="session")
def worker(settings: Settings, database: str, broker: redis.Redis, run_dir: Path) -> Iterator[WorkerProcess]:
    process = start_worker(settings, run_dir, metrics_port=free_port())
    yield process
    process.stop()


@pytest.fixture
def http_api(app: Flask) -> Iterator[str]:
    """The app behind a real threaded HTTP server on loopback, for truly concurrent requests."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="http-api", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def api_server(database: str, broker: redis.Redis, tmp_path: Path) -> Iterator[Server]:
    """The API under gunicorn with gevent workers, as the stack runs it (tests/support/gunicorn.py)."""
    with gunicorn_api(database, tmp_path / "gunicorn.log") as server:
        yield server


@pytest.fixture
def member_headers(app: Flask) -> dict[str, str]:
    """Authorization for plain HTTP calls (requests), as the token of the test project."""
    return bearer(token_for(app.extensions["iaas"].settings.database_url))


@pytest.fixture
def admin_headers(app: Flask) -> dict[str, str]:
    return bearer(token_for(app.extensions["iaas"].settings.database_url, role=Role.ADMIN))


@pytest.fixture
def idle_host(sessions: Any) -> None:
    """VMs go to a host no worker serves, so they stay `pending` whatever else runs."""
    with transaction(sessions) as session:
        session.execute(update(Image).values(host="itest-idle"))
