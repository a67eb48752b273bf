"""SQLAlchemy engine and session factory. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_delay, wait_exponential

from common.errors import NameTaken

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(database_url: str, *, pre_ping: bool = True) -> Engine:
    """pre_ping: test each connection as it leaves the pool, so a PostgreSQL restart does not poison
    it (one round trip per checkout). The API turns it off: there a dead connection costs one 503
    `database_unavailable`, after which SQLAlchemy has dropped the pool's stale connections.
    connect_timeout: fail fast (503) when the database is down."""
    return create_engine(
        database_url,
        pool_pre_ping=pre_ping,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 3},
    )


def make_autocommit_engine(database_url: str) -> Engine:
    """One statement, one round trip: no BEGIN, no COMMIT or ROLLBACK round trip, no pre-ping. For
    reads that need no transaction, and for writes that are hints, not facts, which is why it commits
    asynchronously (`synchronous_commit=off`: it does not wait for the WAL flush). A crash of
    PostgreSQL may lose the last such writes; whatever reads them must tolerate that (the outbox's
    `queued_at`: a lost mark means one harmless duplicate message)."""
    return create_engine(
        database_url,
        pool_size=5,
        max_overflow=5,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3, "options": "-c synchronous_commit=off"},
    )


def database_url_for(url: str, database: str, *, driver: str | None = None) -> str:
    """`url` (its role and password) naming another database on the same server; `driver` e.g.
    `postgresql` for plain psycopg2/libpq, which do not know SQLAlchemy's `+psycopg2`."""
    other = make_url(url).set(database=database)
    if driver:
        other = other.set(drivername=driver)
    return other.render_as_string(hide_password=False)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close."""
    with factory() as session, session.begin():
        yield session


def is_disconnect(exc: BaseException) -> bool:
    """The database went away (restart, network): worth retrying, unlike a constraint violation."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def db_retrying(seconds: float) -> Retrying:
    """Retry a unit of work through a database outage of up to `seconds`, with capped backoff."""
    return Retrying(
        retry=retry_if_exception(is_disconnect),
        wait=wait_exponential(multiplier=0.1, max=5),
        stop=stop_after_delay(seconds),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


def in_transaction(factory: sessionmaker[Session], retry_s: float, work: Callable[[Session], T]) -> T:
    """Run `work(session)` in one transaction, retried as a whole through a database outage of up
    to `retry_s` seconds (each retry is a fresh transaction, so `work` must read what it needs)."""

    def unit() -> T:
        with transaction(factory) as session:
            return work(session)

    return db_retrying(retry_s)(unit)


def flush_named(session: Session, unique_constraint: str, what: str, name: str) -> None:
    """Flush a new row whose name must be unique (by `unique_constraint`): PostgreSQL decides a race
    between two requests for one name, and the loser gets 409 name_taken."""
    try:
        session.flush()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if constraint == unique_constraint:
            raise NameTaken(f"A {what} named {name!r} already exists.", name=name) from exc
        raise
