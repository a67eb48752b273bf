"""Reading a JSON request body, with the errors a client can act on.

Nesting is limited before the body is parsed. Python's json module and pydantic both recurse, so a
6 KiB body nested a few thousand deep ended in RecursionError (a 500). Catching RecursionError would
stop that one crash but not its cousins: a body nested just under the interpreter's limit parses, and
then whatever walks it next (pydantic, json.dumps for the idempotency fingerprint, a log line) may hit
the limit instead, wherever the stack happens to be. Counting brackets first costs one pass over at
most 64 KiB and keeps such bodies out before anything recurses."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from common.errors import InvalidJson, InvalidRequest

# Our bodies are flat objects; 32 leaves room for any future field and is far below the recursion limit.
MAX_JSON_DEPTH = 32

# What the nesting scan looks at: string delimiters, escapes (inside strings), and brackets.
_STRUCTURAL = re.compile(r'["\\\[\]{}]')


def json_object(*, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object. With `optional`, an empty body reads as {}."""
    raw = request.get_data(cache=True)
    if optional and not raw:
        return {}
    if not request.is_json:
        raise UnsupportedMediaType()
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def parse_json(raw: bytes) -> Any:
    """Bytes to a JSON value, as json.loads would read them (UTF-8, or UTF-16/32 by their byte
    pattern), refusing nesting deeper than MAX_JSON_DEPTH before parsing."""
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError:
        raise InvalidJson("The body is not valid UTF-8 text.") from None
    if nesting_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidJson(
            f"The body nests arrays or objects too deep: JSON nesting is limited to {MAX_JSON_DEPTH} levels.",
            max_depth=MAX_JSON_DEPTH,
        )
    try:
        return json.loads(text)
    except ValueError:  # also a number too long to convert: that is not JSON we can take either
        raise InvalidJson("The body is not valid JSON.") from None


def nesting_depth(text: str, limit: int) -> int:
    """How deep the arrays and objects of JSON `text` nest, counting up to `limit + 1` at most.

    A lexer of strings and brackets only. Up to the first character that makes `text` invalid JSON it
    is in the same state as the parser, so a body it passes cannot make the parser recurse past
    `limit` either; past that character the parser has stopped, and what it counts does not matter."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURAL.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest
