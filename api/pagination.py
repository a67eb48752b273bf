"""Keyset pagination over (created_at, id): stable under inserts, no OFFSET scans.

A cursor is client input like any other: whatever it decodes to, it is either the two values this API
put in it or a 400, never an exception that reaches PostgreSQL or the error handler as a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from common.errors import InvalidRequest

# PostgreSQL refuses UTC offsets beyond +-15:59 (Python allows +-23:59), so it never gives them out.
_MAX_OFFSET = timedelta(hours=16)


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor of encode_cursor holds, the time moved to UTC."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = _two_strings(json.loads(raw))
        when = datetime.fromisoformat(created_at)
        offset = when.utcoffset()
        if offset is None or abs(offset) >= _MAX_OFFSET:
            raise ValueError("a cursor's time has an offset, under 16 hours")
        return when.astimezone(UTC), uuid.UUID(row_id)
    # ValueError covers bad base64, text that is not UTF-8 or JSON, a bad time or UUID; OverflowError a
    # time that leaves datetime's range once moved to UTC (year 1 at +15:00).
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(
            "The cursor is not one this API gave out; pass next_cursor from the previous page as is.",
            cursor=cursor,
        ) from exc


def _two_strings(value: Any) -> tuple[str, str]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)):
        raise ValueError("a cursor holds a list of two strings")
    return value[0], value[1]
