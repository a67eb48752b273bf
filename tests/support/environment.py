"""Where the tests find their services, and what the suite counts as it runs (printed at its end)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common.config import Settings
from common.db import database_url_for
from common.secrets import with_password

ROOT = Path(__file__).resolve().parents[2]
# The stack's own settings: its database role and Redis, with the passwords `make up` generated
# (IAAS_SECRETS_DIR) filled in. The tests use the same role and server, in databases of their own.
_STACK = Settings()
# IAAS_TEST_DB and IAAS_TEST_BROKER_URL let two checkouts run their suites at once without sharing state.
TEST_DB = os.environ.get("IAAS_TEST_DB", "iaas_test")
TEST_DATABASE_URL = database_url_for(_STACK.database_url, TEST_DB)
# Where the suite creates and drops its database: the role of the stack has CREATEDB.
ADMIN_URL = with_password(
    os.environ.get("IAAS_TEST_ADMIN_URL")
    or database_url_for(_STACK.database_url, "postgres", driver="postgresql"),
    _STACK.secrets_dir,
)
# A Redis database of its own (15 on the stack's Redis): messages of a running `make up` stack never mix
# with the tests'.
TEST_BROKER = with_password(
    os.environ.get("IAAS_TEST_BROKER_URL") or urlsplit(_STACK.broker_url)._replace(path="/15").geturl(),
    _STACK.secrets_dir,
)

# What the suite injected, printed at the end of the run (the numbers the issue asks to report).
INJECTED: Counter[str] = Counter()
RECOVERY_TIMES: list[float] = []
# Seconds from a restarted worker's start to its dead incarnation's task finishing, with a 30 s lease.
TAKEOVER_TIMES: list[float] = []
# (what virsh did out of band, seconds from the listener receiving the event to the row reading it)
EVENT_LATENCIES: list[tuple[str, float]] = []
# (which guest, seconds from starting QEMU to the tiny guest's "tiny: configured" line)
SEED_BOOT_TIMES: list[tuple[str, float]] = []
# (how it was served, seconds from a task's change committing to a waiting GET's answer arriving)
WAIT_LATENCIES: list[tuple[str, float]] = []


def stack_admin_token() -> str:
    """The admin token `make up` wrote for the running stack (tests that drive the stack over HTTP)."""
    path = Path(_STACK.secrets_dir) / "admin-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""  # the first call then answers 401, which says what is missing


@dataclass
class Conformance:
    """Schemathesis against the OpenAPI document: cases sent per operation (Hypothesis's shrinking
    included), how many answers of each status, and the first failure of each operation that had one."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)


CONFORMANCE = Conformance()
STATEFUL = " (stateful)"  # the label's suffix for a case sent in a call sequence
