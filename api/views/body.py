"""Reading a JSON request body, with the errors a client can act on."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from common.errors import InvalidJson, InvalidRequest


def json_object(*, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object. With `optional`, an empty body reads as {}."""
    if optional and not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise UnsupportedMediaType()
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidJson("The body is not valid JSON.")
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data
