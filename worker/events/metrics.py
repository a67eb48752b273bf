"""`iaas-events`' Prometheus metrics, served on IAAS_EVENTS_METRICS_PORT: its own process and port,
since its events never pass through the worker."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENT_DB_LAG = Histogram(
    "iaas_event_db_lag_seconds",
    "From libvirt delivering a lifecycle event to its power state committed in PostgreSQL.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
POWER_EVENTS = Counter(
    "iaas_power_events",
    "libvirt lifecycle events that changed a power state, by the power state they tell.",
    ["power_state"],
)
LIBVIRT_CONNECTIONS = Counter(
    "iaas_events_libvirt_connections",
    "Connections (and reconnections) of the listener to libvirt; more than one means libvirtd went away.",
)
