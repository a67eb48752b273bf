"""Properties of the pieces that read client input before any schema does: whatever arrives, they
answer with the value or with the API's 400, never with another exception (which would be a 500)."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.pagination import decode_cursor, encode_cursor
from api.views.body import MAX_JSON_DEPTH, nesting_depth, parse_json
from common.errors import InvalidJson, InvalidRequest

# Strings full of what the nesting scan looks at, so that escapes and brackets in text are exercised.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\/ax\u00e9\n\x00\ud800'), max_size=12) | st.text(
    max_size=8
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=60,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@given(json_values, st.booleans())
def test_the_nesting_scan_counts_what_the_parser_would(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_depth(text, limit=10_000) == depth_of(value)


@given(json_values | st.integers(min_value=0, max_value=200).map(nested))
def test_json_within_the_limit_reads_back_and_deeper_json_is_refused(value: Any) -> None:
    raw = json.dumps(value).encode()
    if depth_of(value) <= MAX_JSON_DEPTH:
        assert parse_json(raw) == value
    else:
        with pytest.raises(InvalidJson, match=f"limited to {MAX_JSON_DEPTH} levels"):
            parse_json(raw)


@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\:,0 a', max_size=300).map(str.encode))
def test_any_bytes_are_a_value_or_invalid_json(raw: bytes) -> None:
    with contextlib.suppress(InvalidJson):
        parse_json(raw)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def assert_decodes_or_400(cursor: str) -> None:
    try:
        created_at, row_id = decode_cursor(cursor)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.details == {"cursor": cursor}
    else:
        assert created_at.utcoffset() == timedelta(0) and isinstance(row_id, uuid.UUID)


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_a_400(cursor: str) -> None:
    assert_decodes_or_400(cursor)


iso_times = st.datetimes(timezones=st.timezones() | st.just(UTC)).map(datetime.isoformat) | tricky_text


@given(
    json_values | st.lists(iso_times | json_values, min_size=2, max_size=2) | st.tuples(iso_times, st.uuids())
)
def test_any_json_in_a_cursor_is_a_position_or_a_400(value: Any) -> None:
    if isinstance(value, tuple):
        value = [value[0], str(value[1])]
    assert_decodes_or_400(cursor_of(value))


@given(st.datetimes(), st.integers(min_value=-(16 * 60) + 1, max_value=16 * 60 - 1), st.uuids())
def test_cursors_round_trip_at_any_offset_postgresql_gives(
    when: datetime, minutes: int, row_id: uuid.UUID
) -> None:
    try:
        aware = when.replace(tzinfo=timezone(timedelta(minutes=minutes)))
        aware.astimezone(UTC)
    except OverflowError:  # the first or last hours of datetime's range, shifted out of it
        return
    assert decode_cursor(encode_cursor(aware, row_id)) == (aware, row_id)
