"""Keyset pagination over (created_at, id): stable under inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from common.errors import InvalidRequest


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequest(
            "The cursor is not one this API gave out; pass next_cursor from the previous page as is.",
            cursor=cursor,
        ) from exc
