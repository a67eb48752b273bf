"""The OpenAPI 3.1 document, built from the route table (routes.py) and the pydantic models.

The schemas are pydantic's own JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1), made by one
`models_json_schema` call over every model, so that each model and enum is one component and every
reference reads `#/components/schemas/<Name>`. They go into the document as pydantic made them.

The library: openapi-pydantic, the OpenAPI 3.1 object model in pydantic v2, checks the document's
structure (every required member there and of its type) when it is built. It is used as a check and
not to write the document, because its Schema object re-types JSON Schema's numbers (`maximum: 500`
would read `500.0`). flask-openapi3 and spectree make the document from decorated views, which means
rewriting every view around their request parsing and error answers; apispec is built around
marshmallow, with pydantic only through a plugin of another hand. The tests also validate the whole
document with openapi-spec-validator, which knows OpenAPI's own schema, unknown keys included."""

from __future__ import annotations

from functools import cache
from typing import Any

from openapi_pydantic import OpenAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.openapi import responses as out
from api.openapi.routes import IDEMPOTENCY_KEY, JSON, ROUTES, Reply, Route

REF_TEMPLATE = "#/components/schemas/{model}"

DESCRIPTION = """\
mini-iaas turns KVM hosts into a small cloud. Every change (create, delete, power, reconcile) is
answered `202 Accepted` with a task to poll at `Location`; a request that makes a task takes an
optional `Idempotency-Key`, so that a retry gets the first answer back instead of a second VM.

Every /v1 call needs `Authorization: Bearer <token>`, except this document and its page. Every error
has one shape: `{"error": {"code", "message", "details"}}`. The guide is docs/api.md in the repository.
"""

TAGS = {
    "vms": "VMs: ask for them, list and read them, power them, delete them.",
    "tasks": "Tasks: what every change answers with, and what clients poll.",
    "images": "The base images VMs are built from.",
    "actions": "Operator actions that are not about one VM.",
    "health": "Probes for a process supervisor or a load balancer, and metrics for Prometheus.",
    "docs": "This document and a page to browse it.",
}

UNAUTHENTICATED = Reply(
    "`unauthenticated`: no bearer token, or not a valid one.",
    out.ErrorResponse,
    headers={"WWW-Authenticate": {"required": True, "schema": {"type": "string", "pattern": "^Bearer"}}},
)
FORBIDDEN = Reply(
    "`forbidden`: the token may not do this; `quota_exceeded`: the project's limits would be "
    "exceeded (`details`: `resource`, `limit`, `in_use`, `requested`).",
    out.ErrorResponse,
)
INTERNAL = Reply("`internal_error`: anything unexpected; the request was not applied.", out.ErrorResponse)


@cache
def document() -> dict[str, Any]:
    """The document (built on first use, then kept: it depends on the code only). Shared: a caller
    that changes it works on a copy."""
    built = build()
    OpenAPI.model_validate(built)  # raises on a missing or mistyped member
    return built


def build() -> dict[str, Any]:
    """The document, as OpenAPI spells it."""
    schemas = _Schemas()
    return {
        "openapi": "3.1.0",
        "info": {"title": "mini-iaas API", "version": "v1", "description": DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": {
            path: {route.method.lower(): _operation(route, schemas) for route in ROUTES if route.path == path}
            for path in dict.fromkeys(route.path for route in ROUTES)
        },
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A project's API token: `Bearer <token>`.",
                }
            },
        },
        "security": [{"bearer": []}],
    }


class _Schemas:
    """Every model's JSON Schema from one `models_json_schema` call: the components, and the
    references to them. A query model is no component: its fields become parameters."""

    def __init__(self) -> None:
        models: dict[type[BaseModel], None] = {out.ErrorResponse: None}
        for route in ROUTES:
            for model in (route.body, route.query, *(reply.model for reply in route.replies.values())):
                if model is not None:
                    models[model] = None
        keys, top = models_json_schema([(model, "validation") for model in models], ref_template=REF_TEMPLATE)
        self._refs = {model: keys[(model, "validation")] for model in models}
        self.components: dict[str, Any] = dict(top["$defs"])
        self._queries = {
            query: self.components.pop(self._refs[query]["$ref"].rsplit("/", 1)[1])
            for query in {route.query for route in ROUTES if route.query is not None}
        }

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        return self._refs[model]

    def query(self, model: type[BaseModel]) -> dict[str, Any]:
        return self._queries[model]


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    replies = dict(route.replies)
    if not route.public:
        replies |= {401: UNAUTHENTICATED, 403: FORBIDDEN}
    if route.tag != "docs":
        replies[500] = INTERNAL
    operation: dict[str, Any] = {
        "operationId": route.endpoint.split(".", 1)[1],
        "tags": [route.tag],
        "summary": route.summary,
    }
    if route.description:
        operation["description"] = route.description
    if parameters := _parameters(route, schemas):
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {JSON: {"schema": schemas.ref(route.body)}},
        }
        if not route.body_required:
            operation["requestBody"]["description"] = "Optional: an empty body is the same as `{}`."
    operation["responses"] = {
        str(status): _response(reply, schemas) for status, reply in sorted(replies.items())
    }
    if route.public:
        operation["security"] = []
    return operation


def _parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": dict(schema)}
        for name, schema in route.path_params.items()
    ]
    if route.query is not None:
        query = schemas.query(route.query)
        params += [
            {
                "name": name,
                "in": "query",
                "required": name in query.get("required", ()),
                "schema": _not_null(schema),
            }
            for name, schema in query["properties"].items()
        ]
    if route.idempotency_key:
        params.append(IDEMPOTENCY_KEY)
    return params + [dict(header) for header in route.headers]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never null: drop pydantic's `null` branch."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _response(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        response["headers"] = {name: dict(header) for name, header in reply.headers.items()}
    if reply.links:
        response["links"] = {name: dict(link) for name, link in reply.links.items()}
    if reply.model is not None:
        response["content"] = {JSON: {"schema": schemas.ref(reply.model)}}
    elif reply.media_types:  # none: an answer without a body (204)
        response["content"] = {media_type: {} for media_type in reply.media_types}
    return response
