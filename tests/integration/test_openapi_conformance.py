"""Schemathesis against the real app, through WSGI, for every operation of its OpenAPI document:
examples, coverage and fuzzing phases, positive and negative data, every check. The app runs on the
real PostgreSQL and Redis; no worker is needed, since the API only records and enqueues.

What it ran and what failed is printed at the end of the session (tests/conftest.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from sqlalchemy import text

from api.openapi.document import document
from common.db import transaction
from common.tokens import Role
from tests.support.environment import CONFORMANCE, STATEFUL
from tests.support.tokens import bearer, token_for

# Per operation, in the fuzzing phase (the coverage phase adds its own deterministic cases), and call
# sequences of up to 10 steps in the stateful test: some 40 s in all on 2 cores.
MAX_EXAMPLES = 250
STATEFUL_SCENARIOS = 80

# A schema-valid request may still be refused for what the database holds: an `image` no image has
# (400 unknown_image, disk_too_small), a `cursor` this API never gave out (400 in every list: a cursor
# is opaque, no JSON Schema can say which strings are cursors), an `Idempotency-Key` used before for another
# request (422). These are the statuses `positive_data_acceptance` takes besides its own defaults.
# The same for a `flavor` no flavor has (400 unknown_flavor), a body with both a flavor and sizes or
# neither (400: the schema lists all four as optional), and a `public_key` string that is no real key
# (400 invalid_public_key: no JSON Schema can say which strings are keys). And a `cidr` string that is
# no IPv4 network of /16 to /29 by its network address, or a network name shaped like a UUID (400: the
# schema leaves both to the API, so that a refusal can say why); in a create, a `networks` entry the
# project has no network of (400 unknown_network), an `ip` outside its network (400 invalid_ip).
ACCEPTED_BESIDES = {
    ("POST", "/v1/vms"): ["400", "422"],
    ("GET", "/v1/vms"): ["400"],
    ("POST", "/v1/keypairs"): ["400"],
    ("POST", "/v1/networks"): ["400"],
    ("GET", "/v1/networks"): ["400"],
    ("GET", "/v1/tasks"): ["400"],
    ("GET", "/v1/vms/{vm_id}/tasks"): ["400"],
}
# A reconcile's `host` must be one whose worker has started: any other valid name is 404 unknown_host.
IDEMPOTENT = [("DELETE", "/v1/vms/{vm_id}"), ("POST", "/v1/actions/reconcile")] + [
    ("POST", f"/v1/vms/{{vm_id}}/{action}") for action in ("start", "stop", "reboot")
]
DEFAULT_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]


def config() -> SchemathesisConfig:
    overrides = {**{op: ["422"] for op in IDEMPOTENT}, **ACCEPTED_BESIDES}
    return SchemathesisConfig.from_dict(
        {
            # The bearer token comes from `api_headers` alone: Schemathesis neither makes one up nor
            # leaves it out on purpose (`ignored_auth` probes the API without it).
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "with-security-parameters": False,
            },
            "operations": [
                {
                    "include-name": f"{method} {path}",
                    "checks": {"positive_data_acceptance": {"expected-statuses": DEFAULT_ACCEPTED + extra}},
                }
                for (method, path), extra in overrides.items()
            ],
        }
    )


@pytest.fixture
def api_headers(app: Flask) -> dict[str, str]:
    """What every request carries besides what Schemathesis generates: a real token, an admin's, so
    that the admin-only calls (`all_projects`, reconcile) are exercised too."""
    return bearer(token_for(app.extensions["iaas"].settings.database_url, "conformance", Role.ADMIN))


# The document depends on the code only, so it is loaded at collection, without an app; the cases are
# sent to the test's app. (Loading it from the app through a fixture, `schemathesis.pytest.from_fixture`,
# fails on this pytest: it renames the test node through an attribute pytest 9.2 no longer has.)
# A copy: Schemathesis adds the links it infers to the document it is given.
schema = schemathesis.openapi.from_dict(copy.deepcopy(document()), config=config())


@schema.hook
def after_call(context: Any, case: schemathesis.Case, response: Any) -> None:
    CONFORMANCE.statuses[response.status_code] += 1


@contextmanager
def counted(case: schemathesis.Case, phase: str = "") -> Iterator[None]:
    label = f"{case.operation.method.upper()} {case.operation.path}{phase}"
    CONFORMANCE.cases[label] += 1
    try:
        yield
    except (Exception, BaseExceptionGroup) as exc:  # Schemathesis's failures come as a BaseExceptionGroup
        CONFORMANCE.failures.setdefault(label, titles(exc))
        raise


def titles(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(titles(inner) for inner in exc.exceptions)
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@schema.parametrize()
# The app and its tables are set up once per operation, for all of its cases: that is the intent.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_api_answers_as_its_document_says(
    case: schemathesis.Case, http_api: str, idle_host: None, api_headers: dict[str, str]
) -> None:
    with counted(case):
        case.call_and_validate(base_url=http_api, headers=api_headers)


def test_the_api_answers_as_its_document_says_across_calls(
    http_api: str, sessions: Any, idle_host: None, api_headers: dict[str, str]
) -> None:
    """The stateful phase: sequences of calls that follow the document's links (create a VM, then read,
    power, delete it, poll its task), so that the checks see answers about things that exist, and the
    checks that need a history (`use_after_free`, `ensure_resource_availability`) have one."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from no VM, task or idempotency key: Hypothesis replays a scenario to
            # shrink it, and what it draws follows the answers, which must not depend on earlier ones.
            with transaction(sessions) as session:
                session.execute(text("TRUNCATE task_steps, tasks, nics, vms, networks CASCADE"))

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": http_api, "headers": api_headers}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            with counted(case, STATEFUL):
                case.validate_response(
                    response,
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                )

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=10,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
