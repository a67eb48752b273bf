"""Where the tests find their services, and what the suite counts as it runs (printed at its end)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("IAAS_TEST_ADMIN_URL", "postgresql://iaas:iaas@127.0.0.1:5432/postgres")
# IAAS_TEST_DB and IAAS_TEST_BROKER_URL let two checkouts run their suites at once without sharing state.
TEST_DB = os.environ.get("IAAS_TEST_DB", "iaas_test")
TEST_DATABASE_URL = f"postgresql+psycopg2://iaas:iaas@127.0.0.1:5432/{TEST_DB}"
# A Redis database of its own: messages of a running `make up` stack never mix with the tests'.
TEST_BROKER = os.environ.get("IAAS_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")

# What the suite injected, printed at the end of the run (the numbers the issue asks to report).
INJECTED: Counter[str] = Counter()
RECOVERY_TIMES: list[float] = []
# Seconds from a restarted worker's start to its dead incarnation's task finishing, with a 30 s lease.
TAKEOVER_TIMES: list[float] = []
# (what virsh did out of band, seconds from the listener receiving the event to the row reading it)
EVENT_LATENCIES: list[tuple[str, float]] = []


@dataclass
class Conformance:
    """Schemathesis against the OpenAPI document: cases sent per operation (Hypothesis's shrinking
    included), how many answers of each status, and the first failure of each operation that had one."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)


CONFORMANCE = Conformance()
STATEFUL = " (stateful)"  # the label's suffix for a case sent in a call sequence
