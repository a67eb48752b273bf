"""Fixtures shared by every test, and the markers that follow the folder a test lives in. What the
tests import lives in tests/support/."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import delete

from common.db import make_engine, make_session_factory, transaction
from common.models import Failpoint
from tests.support.environment import (
    ADMIN_URL,
    CONFORMANCE,
    EVENT_LATENCIES,
    INJECTED,
    RECOVERY_TIMES,
    ROOT,
    SEED_BOOT_TIMES,
    STATEFUL,
    TAKEOVER_TIMES,
    TEST_BROKER,
    TEST_DATABASE_URL,
    TEST_DB,
    WAIT_LATENCIES,
)

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
    if TAKEOVER_TIMES:
        terminalreporter.write_line(
            "takeover by a restarted worker, 30 s lease (fresh worker started -> task finished): "
            + ", ".join(f"{seconds:.2f} s" for seconds in TAKEOVER_TIMES)
        )
    if CONFORMANCE.cases:
        operations = {label.removesuffix(STATEFUL) for label in CONFORMANCE.cases}
        in_sequences = sum(n for label, n in CONFORMANCE.cases.items() if label.endswith(STATEFUL))
        answers = ", ".join(f"{status} x{count}" for status, count in sorted(CONFORMANCE.statuses.items()))
        terminalreporter.write_line(
            f"schemathesis against the OpenAPI document: {len(operations)} operations, "
            f"{sum(CONFORMANCE.cases.values())} cases ({in_sequences} of them in call sequences), "
            f"{len(CONFORMANCE.failures)} operations failing; answers: {answers}"
        )
        for label, failure in sorted(CONFORMANCE.failures.items()):
            terminalreporter.write_line(f"  {label}: {failure}")
    if EVENT_LATENCIES:
        measured = ", ".join(f"{what} {seconds * 1000:.0f} ms" for what, seconds in EVENT_LATENCIES)
        terminalreporter.write_line(f"libvirt lifecycle event -> VM row in the database: {measured}")
    if WAIT_LATENCIES:
        served = {how: [s for what, s in WAIT_LATENCIES if what == how] for how, _ in WAIT_LATENCIES}
        measured = "; ".join(
            f"{how}: n={len(times)}, median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms"
            for how, times in served.items()
        )
        terminalreporter.write_line(f"task change committed -> waiting GET answered: {measured}")
    if SEED_BOOT_TIMES:
        measured = ", ".join(f"{guest} {seconds:.2f} s" for guest, seconds in SEED_BOOT_TIMES)
        terminalreporter.write_line(f"tiny guest under TCG, qemu start -> 'tiny: configured': {measured}")


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
