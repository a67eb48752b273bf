"""Per-process resources of a worker, built on first use (after Celery forks, never at import)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings, get_settings
from common.db import make_engine, make_session_factory
from worker.failpoints import Failpoints
from worker.failpoints import parse as parse_failpoints
from worker.hypervisor import Hypervisor


def settings() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def engine() -> Engine:
    return make_engine(settings().database_url)


@lru_cache(maxsize=1)
def sessions() -> sessionmaker[Session]:
    return make_session_factory(engine())


@lru_cache(maxsize=1)
def hypervisor() -> Hypervisor:
    return Hypervisor(settings().libvirt_uri)


@lru_cache(maxsize=1)
def failpoints() -> Failpoints:
    table = sessions() if settings().failpoints_table else None
    return Failpoints(parse_failpoints(settings().failpoints), table, settings().db_retry_s)
