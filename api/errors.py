"""One JSON error envelope for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from api.auth import WWW_AUTHENTICATE
from common.db import is_disconnect
from common.errors import DatabaseUnavailable, IaasError

log = logging.getLogger(__name__)

# What to do next, for the HTTP errors that Flask itself raises.
_HTTP_HINTS = {
    404: "Check the path and the id; GET /v1/vms lists the VMs that exist.",
    405: "See the API table in docs/api.md for the methods each path takes.",
    413: "Request bodies are limited to 64 KiB (448 KiB for POST /v1/vms, for its user_data).",
    415: "Send the body as JSON with the header 'Content-Type: application/json'.",
}


def envelope(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> ResponseReturnValue:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status, headers or []


def _iaas_error(exc: IaasError) -> ResponseReturnValue:
    headers = [("WWW-Authenticate", WWW_AUTHENTICATE)] if exc.status == 401 else None
    return envelope(exc.status, exc.code, exc.message, exc.details, headers)


def _validation_error(exc: ValidationError) -> ResponseReturnValue:
    fields = [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    # A rule about the body as a whole (a model validator's) is its own message; fields are listed.
    whole = [field["message"] for field in fields if field["field"] == "(body)"]
    message = " ".join(whole) if whole else "The request has invalid fields; see details."
    return envelope(400, "invalid_request", message, {"fields": fields})


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    message = _HTTP_HINTS.get(status, exc.description or exc.name or "HTTP error")
    # The exception's headers but its HTML Content-Type: a 405 must say `Allow` (RFC 9110, 15.5.6).
    headers = [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]
    return envelope(status, code, message, headers=headers)


def _database_error(exc: DBAPIError) -> ResponseReturnValue:
    if is_disconnect(exc):
        log.warning("database unreachable: %s", exc.orig)
        down = DatabaseUnavailable("The database is unreachable; retry in a few seconds.")
        return _iaas_error(down)
    log.exception("database error")
    return envelope(500, "internal_error", "An unexpected database error; the request was not applied.")


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return envelope(
        500, "internal_error", "An unexpected error; the request was not applied. See the API log."
    )


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(IaasError, _iaas_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(Exception, _unexpected)
