"""Small helpers the bench scripts share: the API under test, percentiles, a table printer, the
no-worker image that makes `POST /v1/vms` accept without anything being built."""

from __future__ import annotations

import math
import os
import statistics
import uuid
from collections.abc import Sequence
from datetime import timedelta

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import make_engine
from common.models import Image, Task, Vm
from common.projects import counted_usage, create_project, find_project
from common.tokens import Role, create_token

# A host no worker consumes: tasks for it are committed and queued, never run.
NO_WORKER_HOST = "bench-noworker"
NO_WORKER_IMAGE = "bench-noworker"


def default_api() -> str:
    """The API of the stack these variables describe (scripts/stack.sh binds IAAS_API_BIND)."""
    return f"http://{os.environ.get('IAAS_API_BIND', '127.0.0.1:8080')}"


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table (Markdown-compatible), numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def ensure_no_worker_image(sessions: sessionmaker[Session], like: str = "tiny") -> str:
    """Register image NO_WORKER_IMAGE on host NO_WORKER_HOST (a copy of image `like`'s row, so its path
    is a real base volume when `like` exists). Creates against it are accepted and queued to a queue
    nobody reads: the accept path alone is measured. Returns the image name."""
    with sessions() as session, session.begin():
        template = session.scalar(select(Image).where(Image.name == like))
        values = {
            "id": uuid.uuid4(),
            "name": NO_WORKER_IMAGE,
            "host": NO_WORKER_HOST,
            "pool": template.pool if template else "none",
            "volume": template.volume if template else "none",
            "path": template.path if template else "/nonexistent/bench-noworker.qcow2",
            "format": "qcow2",
            "size_bytes": template.size_bytes if template else 1,
            "virtual_size_bytes": template.virtual_size_bytes if template else 1,
            "checksum_sha256": template.checksum_sha256 if template else "0" * 64,
        }
        session.execute(pg_insert(Image).values(**values).on_conflict_do_nothing(index_elements=["name"]))
    return NO_WORKER_IMAGE


# What every bench calls the API with: a session carrying the token of project BENCH_PROJECT.
BENCH_PROJECT = "bench"
http = requests.Session()


def authorize(settings: Settings) -> str:
    """Give `http` a fresh member token of BENCH_PROJECT (made with room for any run's VMs) and
    return its secret (for wrk). The token check is then part of what every bench measures."""
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            project = find_project(session, BENCH_PROJECT) or create_project(
                session, BENCH_PROJECT, instances=1_000_000, vcpus=10_000_000, memory_mib=2**31 - 1,
                disk_gib=2**31 - 1,
            )  # fmt: skip
            _, secret = create_token(session, project, Role.MEMBER, "bench", timedelta(days=1))
    finally:
        engine.dispose()
    http.headers["Authorization"] = f"Bearer {secret}"
    return secret


def authorized_client(app: Flask) -> FlaskClient:
    """A test client of `app` calling with the bench token (made on first use)."""
    if "Authorization" not in http.headers:
        authorize(app.extensions["iaas"].settings)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = http.headers["Authorization"]
    return client


def delete_bench_vms(session: Session, prefix: str) -> int:
    """Delete the VMs named `<prefix>-…` with their tasks, and set the bench project's usage back to
    what its remaining VMs use (rows deleted behind the lifecycle's back release nothing)."""
    vm_ids = select(Vm.id).where(Vm.name.like(f"{prefix}-%"))
    session.execute(text("LOCK TABLE vms, tasks IN SHARE ROW EXCLUSIVE MODE"))  # nothing lands between
    session.execute(delete(Task).where(Task.vm_id.in_(vm_ids)))
    removed = len(session.scalars(delete(Vm).where(Vm.name.like(f"{prefix}-%")).returning(Vm.id)).all())
    project = find_project(session, BENCH_PROJECT)
    if project is not None:
        used = counted_usage(session, project.id)
        project.used_instances, project.used_vcpus = used.instances, used.vcpus
        project.used_memory_mib, project.used_disk_gib = used.memory_mib, used.disk_gib
    return removed
