"""API tokens: made and revoked on the host (`iaas-admin token …`), checked by the API on every call.

A token's secret is 256 random bits, shown once when it is made; only its SHA-256 is stored. A fast
hash is the right one here: a password hash (bcrypt, scrypt) slows down guessing a low-entropy
secret, and there is no such secret to protect -- while every API call has to check one."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from common.models import Project, Token

SECRET_PREFIX = "iaas_"  # noqa: S105 - not a secret: a prefix, recognisable in a leaked file or a secret scanner's rules


class Role(StrEnum):
    MEMBER = "member"  # everything within its project
    ADMIN = "admin"  # also: every project's resources, reconciliation


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's identity and its project, as the API checked it."""

    token_id: uuid.UUID
    token_name: str | None
    role: Role
    project_id: uuid.UUID
    project: str
    expires_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def audit(self) -> dict[str, Any]:
        """What a task records as `requested_by`."""
        return {"token_id": str(self.token_id), "token_name": self.token_name, "project": self.project}


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session,
    project: Project,
    role: Role,
    name: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[Token, str]:
    """A new token of `project`; returns the row and the secret (which is not stored)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    token = Token(
        id=uuid.uuid4(), project_id=project.id, name=name, role=str(role),
        secret_sha256=secret_hash(secret), created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )  # fmt: skip
    session.add(token)
    session.flush()
    return token, secret


def revoke_token(session: Session, token_id: uuid.UUID) -> bool:
    """Revoke a token; False when there is no such token. Revoking twice keeps the first time."""
    row = session.get(Token, token_id, with_for_update=True)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return True


# One prepared SELECT per uncached check (api/auth.py caches the answers for a few seconds).
_LOOKUP = (
    select(
        Token.id, Token.name, Token.role, Token.expires_at, Token.revoked_at, Project.id.label("project_id"),
        Project.name.label("project"),
    )
    .join(Project, Project.id == Token.project_id)
    .where(Token.secret_sha256 == bindparam("secret_sha256"))
)  # fmt: skip


def look_up(engine: Engine, secret: str) -> Caller | None:
    """The caller a secret stands for, or None when it is unknown or revoked. Expiry is left to the
    caller of this function, which checks it on every use (a cached answer can expire)."""
    with engine.connect() as connection:
        row = connection.execute(_LOOKUP, {"secret_sha256": secret_hash(secret)}).first()
    if row is None or row.revoked_at is not None:
        return None
    return Caller(row.id, row.name, Role(row.role), row.project_id, row.project, row.expires_at)
