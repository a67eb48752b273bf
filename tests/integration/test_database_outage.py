"""PostgreSQL restarted under load: while it is down the API answers 503 in the error envelope (never
500, never a hang), afterwards it recovers without a restart; the worker retries its bookkeeping
through the outage and the VMs that were in flight finish without leaking."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from api import create_app
from common.db import make_engine, make_session_factory, transaction
from tests.integration.helpers import assert_hypervisor_matches_database, vm_body, wait_for_task
from tests.support.environment import ROOT
from tests.support.polling import poll
from tests.support.processes import PrivatePostgres, start_worker
from tests.support.testdriver import driver_settings, tiny_image
from tests.support.tokens import api_client

HOST = "pgoutage"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(Path(f"/var/lib/mini-iaas/pgtest-{uuid.uuid4().hex[:8]}"))
    server.init()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = server.url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    yield server
    server.destroy()


class Load:
    """Reads and writes against the API from a second thread until told to stop (bounded anyway)."""

    def __init__(self, app: Any) -> None:
        self.client = api_client(app)
        self.seen: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        for i in range(5000):
            if self.stop.is_set():
                return
            if i % 5 == 0:  # a write path that reads the database first (and then refuses: unknown image)
                response = self.client.post("/v1/vms", json=vm_body(f"load-{i}", image="no-such-image"))
            else:
                response = self.client.get("/v1/vms?limit=5")
            body = response.get_json(silent=True) or {}
            self.seen.append((response.status_code, (body.get("error") or {}).get("code")))

    def last(self, n: int) -> list[int]:
        return [status for status, _ in self.seen[-n:]]


def test_the_api_and_worker_ride_out_a_postgres_restart(
    private_postgres: PrivatePostgres, run_dir: Path, tmp_path: Path
) -> None:
    settings = driver_settings(
        run_dir, HOST, database_url=private_postgres.url, db_retry_s=60, task_lease_s=30
    )
    sessions = make_session_factory(make_engine(settings.database_url))
    with transaction(sessions) as session:
        session.add(tiny_image(HOST, name="tiny-pg"))
    worker = start_worker(settings, tmp_path)
    app = create_app(settings)
    client = api_client(app)
    load = Load(app)
    try:
        in_flight = [client.post("/v1/vms", json=vm_body(f"flight-{i}", image="tiny-pg")) for i in range(4)]
        assert {r.status_code for r in in_flight} == {202}
        load.thread.start()
        private_postgres.stop()
        poll(lambda: True if load.last(3) == [503, 503, 503] else None, timeout=30, what="503s while down")
        private_postgres.start()
        poll(lambda: True if load.last(1) == [200] else None, timeout=30, what="the API to answer again")
        load.stop.set()
        load.thread.join(timeout=30)

        outcomes = Counter(load.seen)
        assert outcomes[(503, "database_unavailable")] >= 3
        assert not [k for k in outcomes if k[0] >= 500 and k != (503, "database_unavailable")], outcomes
        assert set(outcomes) <= {(200, None), (400, "unknown_image"), (503, "database_unavailable")}, outcomes
        tasks = [wait_for_task(client, r.headers["Location"], timeout=90) for r in in_flight]
        assert {t["status"] for t in tasks} == {"succeeded"}, [t["error"] for t in tasks]
        assert_hypervisor_matches_database(sessions, worker.inventory())
    finally:
        load.stop.set()
        worker.stop()
        app.extensions["iaas"].close()
