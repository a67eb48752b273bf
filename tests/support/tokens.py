"""API tokens for the tests: made once per test database through the same code `iaas-admin` uses
(projects and tokens survive the per-test TRUNCATE of VMs and tasks)."""

from __future__ import annotations

import uuid

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session, sessionmaker

from common import projects
from common.models import Project
from common.tokens import Caller, Role, create_token, look_up

# Test projects get room for every test's VMs; quota tests make projects of their own.
ROOMY = {"instances": 10_000, "vcpus": 100_000, "memory_mib": 100_000_000, "disk_gib": 10_000_000}
_made: dict[tuple[str, str, Role], str] = {}


def token_for(database_url: str, project: str = "itest", role: Role = Role.MEMBER, **limits: int) -> str:
    """The secret of a token of `project` (created with `limits`, else roomy ones) with `role`."""
    key = (database_url, project, role)
    if key not in _made:
        engine = create_engine(database_url)
        try:
            with Session(engine) as session, session.begin():
                found = projects.find_project(session, project) or projects.create_project(
                    session, project, **{**ROOMY, **limits}
                )
                _made[key] = create_token(session, found, role, f"tests ({role})")[1]
        finally:
            engine.dispose()
    return _made[key]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def authorize(client: FlaskClient, secret: str) -> FlaskClient:
    """Make every request of `client` carry the token (a test may still override the header)."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


def api_client(app: Flask, project: str = "itest", role: Role = Role.MEMBER) -> FlaskClient:
    """A test client of `app` that calls as a token of `project`."""
    url = app.extensions["iaas"].settings.database_url
    return authorize(app.test_client(), token_for(url, project, role))


def caller_for(database_url: str, project: str = "itest", role: Role = Role.MEMBER) -> Caller:
    """The Caller the API would see for that token (for tests that call request functions directly)."""
    engine = create_engine(database_url)
    try:
        found = look_up(engine, token_for(database_url, project, role))
    finally:
        engine.dispose()
    assert found is not None
    return found


def project_id(sessions: sessionmaker[Session], project: str = "itest") -> uuid.UUID:
    """The id of a test project (made if need be), for rows a test inserts itself."""
    with sessions() as session, session.begin():
        found = projects.find_project(session, project) or projects.create_project(session, project, **ROOMY)
        return found.id


def zero_usage(session: Session) -> None:
    """After a test TRUNCATEs the VMs, their projects' kept usage must start from zero again."""
    session.execute(
        update(Project).values(used_instances=0, used_vcpus=0, used_memory_mib=0, used_disk_gib=0)
    )
