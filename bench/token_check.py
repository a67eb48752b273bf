"""What the token check costs a request, measured in one run: the check alone (cached, as almost
every call finds it, and uncached: one SELECT) against a whole `POST /v1/vms` in the same process.

    .venv/bin/python -m bench.token_check [--posts 300] [--checks 20000]

In-process (Flask's test client, the real database and broker; creates go to a host no worker reads
and are deleted after), so the ratio is free of HTTP and of the load on the machine's other cores."""

from __future__ import annotations

import time
import uuid

import click
import redis

from api import create_app
from api.auth import authenticate
from bench.util import (
    BENCH_PROJECT,
    NO_WORKER_HOST,
    authorize,
    delete_bench_vms,
    ensure_no_worker_image,
    http,
    table,
)
from common.config import Settings
from common.db import make_engine, make_session_factory, transaction
from common.queue import host_queue


def per_call_us(n: int, call: object) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.perf_counter() - start) / n * 1e6


@click.command()
@click.option("--posts", default=300, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--checks", default=20_000, show_default=True, type=click.IntRange(100, 10_000_000))
def main(posts: int, checks: int) -> None:
    settings = Settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    image = ensure_no_worker_image(sessions)
    authorize(settings)
    header = {"Authorization": http.headers["Authorization"]}
    cached_app, uncached_app = (
        create_app(settings),
        create_app(settings.model_copy(update={"token_cache_s": 0})),
    )
    prefix = f"tc{uuid.uuid4().hex[:6]}"
    counter = iter(range(10**9))
    client = cached_app.test_client()

    def post() -> None:
        body = {
            "name": f"{prefix}-{next(counter)}",
            "image": image,
            "vcpus": 1,
            "memory_mib": 64,
            "disk_gib": 1,
        }
        assert client.post("/v1/vms", json=body, headers=header).status_code == 202

    try:
        post()  # warm up: connections, prepared statements, the token in the cache
        post_us = per_call_us(posts, post)
        with cached_app.test_request_context("/v1/vms", headers=header):
            cached_us = per_call_us(checks, authenticate)
        with uncached_app.test_request_context("/v1/vms", headers=header):
            uncached_us = per_call_us(max(100, checks // 50), authenticate)
    finally:
        for app in (cached_app, uncached_app):
            app.extensions["iaas"].close()
        with transaction(sessions) as session:
            delete_bench_vms(session, prefix)
        redis.Redis.from_url(settings.broker_url).delete(host_queue(NO_WORKER_HOST))
    rows = [
        ["POST /v1/vms (whole request, in process)", post_us, "100 %"],
        ["token check, cached (IAAS_TOKEN_CACHE_S > 0)", cached_us, f"{cached_us / post_us:.2%}"],
        ["token check, uncached (one SELECT)", uncached_us, f"{uncached_us / post_us:.2%}"],
    ]
    click.echo(f"project {BENCH_PROJECT}; {posts} posts, {checks} cached checks")
    click.echo(table(["what", "µs per call", "share of a POST"], rows))


if __name__ == "__main__":
    main()
