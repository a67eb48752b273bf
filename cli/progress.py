"""Showing a task's steps while it runs: a live view (rich) on a terminal, else one plain line per
change, so that a log or a pipe gets a readable record and no control characters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from cli.waiting import TERMINAL, changes, duration

MARKS = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "undone": ("↺", "yellow"),
    "undo_failed": ("✗", "bold red"),
}
BUSY = {"running": "cyan", "undoing": "yellow", "pending": "cyan"}


class PlainProgress:
    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last: Mapping[str, Any] | None = None

    def update(self, task: Mapping[str, Any]) -> None:
        for line in changes(self.last, task):
            print(line, file=self.stream, flush=True)
        self.last = task

    def close(self) -> None:
        pass


class LiveProgress:
    """The task's steps as a table that updates in place, a spinner on the one that runs."""

    def __init__(self, console: Console):
        self.task: Mapping[str, Any] | None = None
        self.spinners: dict[tuple[int, str], Spinner] = {}  # kept, so each one turns instead of restarting
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, task: Mapping[str, Any]) -> None:
        self.task = task
        self.live.refresh()

    def close(self) -> None:
        self.live.stop()

    def render(self) -> RenderableType:
        if self.task is None:
            return Text("")
        return render_task(self.task, self.spinners)


def render_task(task: Mapping[str, Any], spinners: dict[tuple[int, str], Spinner]) -> RenderableType:
    status = task["status"]
    style = "green" if status == "succeeded" else "red" if status == "failed" else "cyan"
    title = Text.assemble((f"{task['kind']} ", "bold"), (task["id"], "dim"), "  ", (status, style))
    steps = Table.grid(padding=(0, 1))
    for index, step in enumerate(task.get("steps") or []):
        mark: RenderableType
        if step["status"] in MARKS:
            symbol, colour = MARKS[step["status"]]
            mark = Text(symbol, style=colour)
        else:
            key = (index, step["status"])
            mark = spinners.setdefault(key, Spinner("dots", style=BUSY.get(step["status"], "cyan")))
        took = duration(step.get("started_at"), step.get("finished_at"))
        detail = step.get("undo_error") or step.get("error") or ""
        steps.add_row(
            mark, step["name"], Text(step["status"], style="dim"), "" if took is None else f"{took:.1f} s",
            Text(detail, style="red"),
        )  # fmt: skip
    if status not in TERMINAL and not task.get("steps"):
        steps.add_row(spinners.setdefault((-1, status), Spinner("dots")), f"waiting for a worker ({status})")
    return Group(title, steps)


def progress_for(stream: IO[str]) -> PlainProgress | LiveProgress:
    console = Console(file=stream)
    if console.is_terminal:
        return LiveProgress(console)
    return PlainProgress(stream)
