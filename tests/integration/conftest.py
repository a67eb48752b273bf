"""Integration fixtures: a real PostgreSQL database built by the migrations, a real Redis, and real
`celery worker` processes running our tasks against libvirt's test driver."""

from __future__ import annotations

import threading
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
from tests.conftest import TEST_BROKER, TEST_DATABASE_URL
from tests.processes import WorkerProcess, start_worker

POOL = "mini-iaas"
POOL_PATH = "/var/lib/mini-iaas/test-pool"
IMAGE_PATH = f"{POOL_PATH}/image-tiny.qcow2"
IMAGE_VIRTUAL_SIZE = 64 * 1024**2

# libvirt's test driver, seeded with our pool and the image volume. Its state lives inside the
# worker process, so the tests look at it through the worker (`hypervisor_inventory`).
TEST_NODE_XML = f"""<node>
  <pool type='dir'>
    <name>{POOL}</name>
    <target><path>{POOL_PATH}</path></target>
    <volume>
      <name>image-tiny.qcow2</name>
      <capacity unit='bytes'>{IMAGE_VIRTUAL_SIZE}</capacity>
      <target><path>{IMAGE_PATH}</path><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"""


def _settings(tmp: Path, host: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": TEST_DATABASE_URL,
        "broker_url": TEST_BROKER,
        "libvirt_uri": f"test://{tmp / 'node.xml'}",
        "domain_type": "auto",
        "storage_pool": POOL,
        "storage_pool_path": POOL_PATH,
        "console_log_dir": str(tmp / "console"),
        "host": host,
        "failpoints_table": True,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iaas")
    (path / "node.xml").write_text(TEST_NODE_XML)
    return path


@pytest.fixture(scope="session")
def settings(run_dir: Path) -> Settings:
    return _settings(run_dir, "itest")


@pytest.fixture(autouse=True)
def clean_tables(request: pytest.FixtureRequest) -> None:
    """Each test starts from empty tables plus the `tiny` image (committed: real workers read them)."""
    if "sessions" not in request.fixturenames and "client" not in request.fixturenames:
        return
    sessions = request.getfixturevalue("sessions")
    settings: Settings = request.getfixturevalue("settings")
    with transaction(sessions) as session:
        session.execute(text("TRUNCATE task_steps, tasks, vms, images CASCADE"))
        session.add(tiny_image(settings.host))


def tiny_image(host: str, name: str = "tiny") -> Image:
    return Image(
        name=name,
        host=host,
        pool=POOL,
        volume="image-tiny.qcow2",
        path=IMAGE_PATH,
        format="qcow2",
        size_bytes=12 * 1024**2,
        virtual_size_bytes=IMAGE_VIRTUAL_SIZE,
        checksum_sha256="0" * 64,
    )


@pytest.fixture
def app(settings: Settings, database: str, broker: redis.Redis) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["iaas"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def worker(settings: Settings, database: str, broker: redis.Redis, run_dir: Path) -> Iterator[WorkerProcess]:
    process = start_worker(settings, run_dir)
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
def idle_host(sessions: Any) -> None:
    """VMs go to a host no worker serves, so they stay `pending` whatever else runs."""
    with transaction(sessions) as session:
        session.execute(update(Image).values(host="itest-idle"))
