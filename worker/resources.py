"""Per-process resources of a worker, built on first use (after Celery forks, never at import), and
the process's identity as a lease owner."""

from __future__ import annotations

import socket
import uuid
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.config import Settings, get_settings
from common.db import make_engine, make_session_factory
from worker.hypervisor.connection import Hypervisor
from worker.sagas.failpoints import Failpoints
from worker.sagas.failpoints import parse as parse_failpoints

# This process's incarnation: a lease owned by the same node name with another incarnation belongs
# to an earlier process of this worker, which is gone once this one runs (see worker/boot.py).
INCARNATION = uuid.uuid4().hex[:12]
_node = {"name": socket.gethostname()}  # replaced by the Celery node name when the worker starts


def settings() -> Settings:
    return get_settings()


def set_node_name(name: str) -> None:
    _node["name"] = name


def node_name() -> str:
    return _node["name"]


def owner_name() -> str:
    return lifecycle.owner_name(node_name(), INCARNATION)


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
