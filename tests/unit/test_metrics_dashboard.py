"""The Grafana dashboard (deploy/grafana/mini-iaas.json) queries exactly the metrics the processes
export: a renamed metric would leave a panel silently empty."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.registry import Collector

from api.metrics import LATENCY, REQUESTS
from common.metrics import StateCollector
from tests.support.environment import ROOT
from worker.events.metrics import EVENT_DB_LAG, LIBVIRT_CONNECTIONS, POWER_EVENTS
from worker.metrics import RECONCILE_FINDINGS, SAGA_DURATION, STEP_DURATION, TASK_RUNS

DASHBOARD = ROOT / "deploy" / "grafana" / "mini-iaas.json"
EXPORTED: list[Collector] = [
    REQUESTS, LATENCY, SAGA_DURATION, STEP_DURATION, TASK_RUNS, RECONCILE_FINDINGS,
    EVENT_DB_LAG, POWER_EVENTS, LIBVIRT_CONNECTIONS,
    StateCollector(engine=None, broker_url="redis://unused"),  # type: ignore[arg-type]  # describe() reads nothing
]  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def exported_series() -> dict[str, str]:
    """Every series name a scrape can show -> the metric family it belongs to."""
    names = {}
    for collector in EXPORTED:
        for family in collector.describe():  # type: ignore[attr-defined]
            for suffix in SUFFIXES[family.type]:
                names[family.name + suffix] = family.name
    return names


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exprs = list(expressions(json.loads(DASHBOARD.read_text())))
    assert exprs, "the dashboard has no queries"
    queried = {name for expr in exprs for name in re.findall(r"\biaas_[a-z0-9_]+", expr)}
    unknown = queried - exported_series().keys()
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"


def test_every_exported_metric_has_a_panel() -> None:
    exprs = " ".join(expressions(json.loads(DASHBOARD.read_text())))
    queried = {name for name in re.findall(r"\biaas_[a-z0-9_]+", exprs)}
    families = {family for series, family in exported_series().items() if series in queried}
    assert families == set(exported_series().values())


def test_names_follow_prometheus_conventions() -> None:
    for collector in EXPORTED:
        for family in collector.describe():  # type: ignore[attr-defined]
            assert family.name.startswith("iaas_")
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
