"""`Idempotency-Key` on POST and DELETE: a retried request gets the first answer back, not a second VM.

The key row is inserted first, in the same transaction as the work. A concurrent request with the
same key blocks on the primary key until the first one commits, then finds its answer and replays
it; if the first one failed (rolled back), the second does the work itself. Keys live 24 hours and
belong to the caller's project: two projects that pick the same key never see each other's answers."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import IdempotencyKeyReused, InvalidRequest
from common.models import IdempotencyKey

KEY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]
    task_id: uuid.UUID | None


def fingerprint(body: dict[str, Any] | None) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate_key(key: str) -> str:
    if not (0 < len(key) <= MAX_KEY_LENGTH) or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters; a UUID does well.",
        )
    return key


def claim_key(
    session: Session, project_id: uuid.UUID, key: str, method: str, path: str, body_sha256: str
) -> Replay | None:
    """Reserve `key` for this request, or return the answer a first request with it already got."""
    now = datetime.now(UTC)
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.project_id == project_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at < now,
        )
    )
    row = IdempotencyKey(
        project_id=project_id, key=key, method=method, path=path, body_sha256=body_sha256,
        status_code=0, response={}, created_at=now, expires_at=now + KEY_TTL,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        first = session.get(IdempotencyKey, (project_id, key), populate_existing=True)
        assert first is not None  # it made our insert fail, and keys are only deleted once expired
        if (first.method, first.path, first.body_sha256) != (method, path, body_sha256):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different request; use a new key for a new request.",
                key=key,
            ) from None
        return Replay(first.status_code, first.response, first.task_id)
    return None


def record_answer(
    session: Session, project_id: uuid.UUID, key: str, status: int, body: dict[str, Any], task_id: uuid.UUID
) -> None:
    row = session.get(IdempotencyKey, (project_id, key))
    assert row is not None
    row.status_code, row.response, row.task_id = status, body, task_id


def update_answer(autocommit: Engine, project_id: uuid.UUID, key: str, body: dict[str, Any]) -> None:
    """Refresh a committed answer after the fact (it gained `queued_at`), as a hint: if this write is
    lost, a replay shows the task as first recorded, which is still true."""
    with Session(autocommit) as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.project_id == project_id, IdempotencyKey.key == key)
            .values(response=body)
        )
