"""Waiting for a task: the API's long-poll (`GET /v1/tasks/<id>?wait=<s>&seen=<version>` answers as
soon as the task differs from the version seen, or when the wait is over), falling back to polling at a
short interval on a server that ignores or refuses `wait`; each change is shown as it comes, live on a
terminal, one plain line per change otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from cli.client import ApiError, Client

TERMINAL = ("succeeded", "failed")
LONG_POLL_S = 25  # the longest one answer may be held; the request's own timeout is a bit longer
POLL_INTERVAL_S = 0.5  # the shortest gap between two asks whose answers showed no change
Task = dict[str, Any]


class WaitTimeout(Exception):
    def __init__(self, task: Mapping[str, Any], seconds: float):
        super().__init__(f"task {task['id']} is still {task['status']} after {seconds:g} s")
        self.task = task


class Progress(Protocol):
    def update(self, task: Mapping[str, Any]) -> None: ...
    def close(self) -> None: ...


class TaskWaiter:
    """Reads one task until it has finished. A long-polling server holds each ask until something
    changed; an older one answers at once, and then the asks are spaced by `interval` whenever nothing
    changed, so it is polled, never hammered."""

    def __init__(
        self,
        client: Client,
        *,
        long_poll_s: float = LONG_POLL_S,
        interval: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client, self.long_poll_s, self.interval = client, long_poll_s, interval
        self.clock, self.sleep = clock, sleep
        self.long_poll = long_poll_s > 0

    def read(self, task: Mapping[str, Any]) -> Task:
        """The task again: held by the server until it differs from the `version` we have seen."""
        path = f"/v1/tasks/{task['id']}"
        if self.long_poll:
            params: dict[str, Any] = {"wait": self.long_poll_s}
            if task.get("version"):
                params["seen"] = task["version"]
            try:
                answer = self.client.request("GET", path, params=params, timeout=self.long_poll_s + 15)
                return dict(answer.json())
            except ApiError as exc:
                if exc.status != 400:
                    raise
                self.long_poll = False  # a server that refuses `wait`: poll it instead
        return dict(self.client.get(path))

    def follow(
        self, task: Mapping[str, Any], on_change: Callable[[Task], None], timeout: float | None = None
    ) -> Task:
        """The task once finished; `on_change` sees it first as given, then after each change."""
        current = dict(task)
        on_change(current)
        deadline = None if timeout is None else self.clock() + timeout
        while current["status"] not in TERMINAL:
            if deadline is not None and self.clock() >= deadline:
                raise WaitTimeout(current, timeout or 0)
            asked = self.clock()
            latest = self.read(current)
            if latest != current:
                current = latest
                on_change(current)
                continue
            pause = self.interval - (self.clock() - asked)
            if deadline is not None:
                pause = min(pause, deadline - self.clock())
            if pause > 0:
                self.sleep(pause)  # the polling interval of a server that answered at once
        return current


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What changed from `old` to `new` (None: nothing seen yet), one line each: the task's status,
    its attempts, and each step that appeared or moved on."""
    lines: list[str] = []
    kind = new["kind"]
    if old is None:
        lines.append(f"{kind} {new['id']}: {new['status']}")
    elif old["status"] != new["status"] and new["status"] not in TERMINAL:
        lines.append(f"{kind}: {new['status']}")
    if old is not None and new.get("attempts", 0) > old.get("attempts", 0) > 0:
        lines.append(f"{kind}: attempt {new['attempts']} (taken over after its worker stopped)")
    before = list((old or {}).get("steps") or [])
    for index, step in enumerate(new.get("steps") or []):
        seen = before[index] if index < len(before) else None
        if seen is None or seen.get("status") != step["status"] or seen.get("name") != step["name"]:
            lines.append(step_line(step))
    return lines


def step_line(step: Mapping[str, Any]) -> str:
    line = f"  {step['name']}: {step['status']}"
    problem = step.get("undo_error") if step["status"] == "undo_failed" else step.get("error")
    if problem and step["status"] in ("failed", "undo_failed", "undoing", "undone"):
        line += f" ({problem})"
    return line


def outcome(task: Mapping[str, Any]) -> str:
    """The closing line: how the task ended, and how long it took when the times say so."""
    line = f"{task['kind']} {task['status']}"
    took = duration(task.get("started_at") or task.get("created_at"), task.get("finished_at"))
    if took is not None:
        line += f" in {took:.1f} s"
    error = task.get("error")
    if error:
        line += f": {error['code']}"
    return line


def duration(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
