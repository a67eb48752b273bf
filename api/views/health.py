"""Liveness (the process answers) and readiness (the database and the broker answer)."""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from api.runtime import runtime

bp = Blueprint("health", __name__)

_PROBE_TIMEOUT_S = 1.0


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


def _database_ok() -> str | None:
    try:
        with runtime().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None


def _broker_ok() -> str | None:
    client = redis.Redis.from_url(
        runtime().settings.broker_url,
        socket_connect_timeout=_PROBE_TIMEOUT_S,
        socket_timeout=_PROBE_TIMEOUT_S,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()
    return None


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    problems = {name: err for name, err in (("database", _database_ok()), ("broker", _broker_ok())) if err}
    checks = {name: ("down" if name in problems else "ok") for name in ("database", "broker")}
    if problems:
        body = {
            "error": {
                "code": "not_ready",
                "message": "A dependency is down; requests that need it will fail until it is back.",
                "details": {"checks": checks, "problems": problems},
            }
        }
        return jsonify(body), 503
    return jsonify({"status": "ready", "checks": checks})
