"""`GET /metrics`: the API's requests (by route template and status, and their latency) and the state
gauges of common/metrics.py, in Prometheus' text format.

It is open, like /healthz: Prometheus scrapes without a token, and what it shows are counts, never an
id or a name. The API listens on 127.0.0.1 by default; where IAAS_API_BIND is wider, let only the
scraper reach /metrics (docs/operations.md#metrics).

gunicorn runs two worker processes and a scrape reaches one of them: with PROMETHEUS_MULTIPROC_DIR
set (scripts/stack.sh does), prometheus_client keeps each process's counters in files there and a
scrape adds them all up; without it (tests, `flask run`) the process's own registry is the answer."""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from api.runtime import runtime

bp = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "iaas_api_requests",
    "HTTP requests answered, by method, route template (`unmatched` for unknown paths) and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "iaas_api_request_duration_seconds",
    "Time from a request's arrival in Flask to its response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def install(app: Flask) -> None:
    app.before_request(_started)
    app.after_request(_answered)
    app.register_blueprint(bp)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _answered(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    # The rule's template, never the path: /v1/vms/<id> is one series, not one per VM.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    if started is not None:
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def scrape_registry() -> CollectorRegistry:
    """What one scrape shows: the request metrics (of every gunicorn worker when multiprocess) and
    the state gauges, read now."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is a collector too: this process's metrics
    registry.register(runtime().state_metrics)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
