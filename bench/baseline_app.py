"""The floor for `POST /v1/vms`: a bare Flask endpoint that does the least an accept path with an outbox
can do -- one INSERT + COMMIT, then one Redis LPUSH -- and answers 202 JSON. `bench/accept_rate.py`
runs it under gunicorn next to the product and reports the product's rate as a ratio of this one.

    BENCH_DATABASE_URL=postgresql+psycopg2://iaas@127.0.0.1:5432/iaas_bench \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/3 \\
    .venv/bin/gunicorn -c api/gunicorn_config.py --bind 127.0.0.1:8181 'bench.baseline_app:create_app()'

(passwords, as the product's, from IAAS_SECRETS_DIR when the URLs carry none). Same stack as the
product, so the ratio measures the product's own work, not a different driver or server: gunicorn with
the product's configuration (api/gunicorn_config.py: 2 gevent workers, psycogreen, access log on),
SQLAlchemy Core on psycopg2 with the product's pool size (`common.db.make_engine` minus its
`pool_pre_ping`: the ping is a round trip the product chose, so it counts as product overhead;
set BENCH_PRE_PING=1 to give the floor one too), redis-py with one connection pool per process, and
the same request body (`json` parsed, the name read from it). Plain psycopg2 without SQLAlchemy would be
a few hundred microseconds faster per request, but that is not a floor the product could reach
without dropping SQLAlchemy, so it would overstate the gap.

The table `bench_accept` is the bench's own (created here if missing, never by a product migration);
the list `bench.accept` is the bench's own Redis key. `bench/accept_rate.py` empties both afterwards."""

from __future__ import annotations

import json
import os
import uuid

import redis
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, func, insert, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from common.config import Settings
from common.secrets import with_password

TABLE_NAME = "bench_accept"
QUEUE_KEY = "bench.accept"
_DDL_LOCK = 4_242_001  # pg_advisory_xact_lock key: two workers starting at once create the table once

metadata = MetaData()
accepted = Table(
    TABLE_NAME,
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("body", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def database_url() -> str:
    settings = Settings()
    return with_password(os.environ.get("BENCH_DATABASE_URL") or settings.database_url, settings.secrets_dir)


def redis_url() -> str:
    settings = Settings()
    return with_password(os.environ.get("BENCH_REDIS_URL") or settings.broker_url, settings.secrets_dir)


def create_app() -> Flask:
    engine = create_engine(
        database_url(),
        pool_pre_ping=os.environ.get("BENCH_PRE_PING", "") == "1",
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 3},
    )
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        metadata.create_all(connection, checkfirst=True)
    broker = redis.Redis.from_url(redis_url())
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    @app.post("/v1/vms")
    def accept() -> ResponseReturnValue:
        body = request.get_json()
        row_id = uuid.uuid4()
        with engine.begin() as connection:  # one INSERT, one COMMIT
            connection.execute(insert(accepted).values(id=row_id, name=body["name"], body=body))
        broker.lpush(QUEUE_KEY, json.dumps({"id": str(row_id)}))  # one LPUSH
        return jsonify({"id": str(row_id), "name": body["name"], "status": "pending"}), 202

    return app
