"""How answers are shown: `-o json` and `-o yaml` print the API's objects unchanged (a list as its items
array), for scripts; `-o table` shows the columns people look at, as plain aligned text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click
import yaml  # type: ignore[import-untyped]

FORMATS = ("table", "json", "yaml")
Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def output_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-o", "--output", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
        help="table for people; json or yaml: the API's objects unchanged, for scripts.",
    )(function)  # fmt: skip


def dump(data: Any, fmt: str) -> str:
    """`data` as JSON or YAML text."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows under upper-case headers, each column as wide as its widest cell, two spaces apart."""
    cells = [[h.upper() for h, _ in columns]] + [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def fields(item: Mapping[str, Any], names: Sequence[str]) -> str:
    """One `name: value` line per field, the values aligned."""
    width = max(len(name) for name in names) + 1
    return "\n".join(f"{name + ':':<{width}} {cell(item.get(name))}" for name in names)


def addresses(vm: Mapping[str, Any]) -> str:
    return ",".join(f"{a['network']}={a['ip']}" for a in vm.get("addresses") or []) or "-"


def short_time(value: str | None) -> str | None:
    """2025-01-02T03:04:05.678+00:00 as 2025-01-02 03:04:05 (tables have no room for the rest)."""
    return value[:19].replace("T", " ") if value else None


def error_code(task: Mapping[str, Any]) -> str | None:
    return (task.get("error") or {}).get("code")


VM_COLUMNS: list[Column] = [
    ("id", lambda v: v["id"]),
    ("name", lambda v: v["name"]),
    ("status", lambda v: v["status"]),
    ("power", lambda v: v.get("power_state")),
    ("image", lambda v: v.get("image")),
    ("vcpus", lambda v: v.get("vcpus")),
    ("memory_mib", lambda v: v.get("memory_mib")),
    ("disk_gib", lambda v: v.get("disk_gib")),
    ("addresses", addresses),
]
TASK_COLUMNS: list[Column] = [
    ("id", lambda t: t["id"]),
    ("kind", lambda t: t["kind"]),
    ("status", lambda t: t["status"]),
    ("vm", lambda t: t.get("vm_id")),
    ("created", lambda t: short_time(t.get("created_at"))),
    ("finished", lambda t: short_time(t.get("finished_at"))),
    ("error", error_code),
]
IMAGE_COLUMNS: list[Column] = [
    ("name", lambda i: i["name"]),
    ("host", lambda i: i.get("host")),
    ("format", lambda i: i.get("format")),
    ("size_mib", lambda i: _mib(i.get("size_bytes"))),
    ("virtual_mib", lambda i: _mib(i.get("virtual_size_bytes"))),
    ("created", lambda i: short_time(i.get("created_at"))),
]
FLAVOR_COLUMNS: list[Column] = [
    ("name", lambda f: f["name"]),
    ("vcpus", lambda f: f["vcpus"]),
    ("memory_mib", lambda f: f["memory_mib"]),
    ("disk_gib", lambda f: f["disk_gib"]),
]
NETWORK_COLUMNS: list[Column] = [
    ("id", lambda n: n["id"]),
    ("name", lambda n: n["name"]),
    ("cidr", lambda n: n["cidr"]),
    ("usable", lambda n: n.get("usable")),
    ("in_use", lambda n: n.get("in_use")),
]
KEYPAIR_COLUMNS: list[Column] = [
    ("name", lambda k: k["name"]),
    ("type", lambda k: k.get("type")),
    ("fingerprint", lambda k: k.get("fingerprint")),
    ("created", lambda k: short_time(k.get("created_at"))),
]
STEP_COLUMNS: list[Column] = [
    ("step", lambda s: s["name"]),
    ("status", lambda s: s["status"]),
    ("started", lambda s: short_time(s.get("started_at"))),
    ("finished", lambda s: short_time(s.get("finished_at"))),
    ("error", lambda s: s.get("error") or s.get("undo_error")),
]


def _mib(size: int | None) -> str | None:
    return None if size is None else f"{size / 2**20:.1f}"


def vm_detail(vm: Mapping[str, Any]) -> str:
    names = ["id", "name", "project", "status", "power_state", "image", "vcpus", "memory_mib", "disk_gib",
             "host", "key_name", "user_data_sha256", "created_at", "updated_at"]  # fmt: skip
    text = fields(vm, names)
    nics = vm.get("addresses") or []
    if nics:
        rows = [{"nic": f"eth{i}", **nic} for i, nic in enumerate(nics)]
        text += "\n\n" + table(rows, [("nic", lambda a: a["nic"]), ("network", lambda a: a["network"]),
                                      ("ip", lambda a: a["ip"]), ("mac", lambda a: a["mac"])])  # fmt: skip
    return text


def task_detail(task: Mapping[str, Any]) -> str:
    names = ["id", "kind", "status", "vm_id", "host", "attempts", "created_at", "started_at", "finished_at"]
    text = fields(task, names)
    who = task.get("requested_by")
    if who:
        text += f"\nrequested_by: {who.get('token_name') or who.get('token_id')} ({who.get('project')})"
    error = task.get("error")
    if error:
        text += f"\nerror:       {error['code']}: {error['message']}"
    if task.get("steps"):
        text += "\n\n" + table(task["steps"], STEP_COLUMNS)
    return text


def project_detail(project: Mapping[str, Any]) -> str:
    token = project.get("token") or {}
    text = fields({**project, "role": token.get("role"), "token": token.get("name") or token.get("id")},
                  ["name", "id", "token", "role"])  # fmt: skip
    limits, usage = project.get("limits") or {}, project.get("usage") or {}
    rows = [{"resource": name, "used": usage.get(name), "limit": limit} for name, limit in limits.items()]
    columns: list[Column] = [("resource", lambda r: r["resource"]), ("used", lambda r: r["used"]),
                             ("limit", lambda r: r["limit"])]  # fmt: skip
    return text + "\n\n" + table(rows, columns)
