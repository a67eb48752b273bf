"""Shared by every test: markers follow the folder a test lives in, and polling with a deadline."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import delete

from common.db import make_engine, make_session_factory, transaction
from common.models import Failpoint

T = TypeVar("T")
# What the suite injected, printed at the end of the run (the numbers the issue asks to report).
INJECTED: Counter[str] = Counter()
RECOVERY_TIMES: list[float] = []
# (what virsh did out of band, seconds from the listener receiving the event to the row reading it)
EVENT_LATENCIES: list[tuple[str, float]] = []
ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("IAAS_TEST_ADMIN_URL", "postgresql://iaas:iaas@127.0.0.1:5432/postgres")
TEST_DB = "iaas_test"
TEST_DATABASE_URL = f"postgresql+psycopg2://iaas:iaas@127.0.0.1:5432/{TEST_DB}"
# A Redis database of its own: messages of a running `make up` stack never mix with the tests'.
TEST_BROKER = os.environ.get("IAAS_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
_FOLDER_MARKERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKERS:
            item.add_marker(_FOLDER_MARKERS[folder])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if INJECTED:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(INJECTED.items()))
        terminalreporter.write_line(f"faults injected: {kinds}; every one followed by a leak check")
    if RECOVERY_TIMES:
        terminalreporter.write_line(
            f"recovery after SIGKILL of the worker (fresh worker started -> task finished): "
            f"n={len(RECOVERY_TIMES)}, median {statistics.median(RECOVERY_TIMES):.2f} s, "
            f"max {max(RECOVERY_TIMES):.2f} s"
        )
    if EVENT_LATENCIES:
        measured = ", ".join(f"{what} {seconds * 1000:.0f} ms" for what, seconds in EVENT_LATENCIES)
        terminalreporter.write_line(f"libvirt lifecycle event -> VM row in the database: {measured}")


def poll(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Call `check` until it returns something other than None, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # the pause between polls, not a synchronisation point


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh test database whose schema comes only from the migrations. Yields its URL."""
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{TEST_DB}"')
    admin.close()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = TEST_DATABASE_URL
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    yield TEST_DATABASE_URL


@pytest.fixture(scope="session")
def engine(database: str) -> Iterator[Any]:
    engine = make_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Any) -> Any:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def broker() -> redis.Redis:
    client = redis.Redis.from_url(TEST_BROKER)
    client.flushdb()  # a private Redis database: messages of earlier runs must not leak in
    return client


@pytest.fixture
def failpoint(sessions: Any) -> Iterator[Callable[[str, str], None]]:
    """Set a failpoint in the table the test workers read (action `off` clears it); all are
    cleared after the test."""

    def set_point(name: str, action: str = "raise") -> None:
        with transaction(sessions) as session:
            if action == "off":
                session.execute(delete(Failpoint).where(Failpoint.name == name))
            else:
                INJECTED[f"failpoint {action}s"] += 1
                session.merge(Failpoint(name=name, action=action, hits=0))

    yield set_point
    with transaction(sessions) as session:
        session.execute(delete(Failpoint))
