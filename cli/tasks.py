"""`iaas task …`, and what every mutating command does with the task it started: show it, or with
--wait follow its steps to the end and exit by its outcome."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from cli import output
from cli.client import ApiError, Client
from cli.context import Failure, GaveUp, Interrupted, describe_error, state
from cli.progress import progress_for
from cli.vm_refs import resolve_vm
from cli.waiting import TaskWaiter, WaitTimeout, outcome

Task = dict[str, Any]


def wait_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "--timeout", type=click.FloatRange(min=1), default=900, show_default=True, metavar="SECONDS",
        help="With --wait: give up waiting (exit 124) after this long; the task goes on.",
    )(function)  # fmt: skip
    return click.option(
        "--wait", is_flag=True, help="Show the task's steps as they run; exit non-zero if it fails."
    )(function)


def follow(client: Client, task: Mapping[str, Any], fmt: str, timeout: float | None) -> Task:
    """Follow `task` to its end, its steps shown on stdout (on stderr when stdout carries JSON or YAML),
    then its outcome line; raise Failure when it failed."""
    stream = sys.stdout if fmt == "table" else sys.stderr
    progress = progress_for(stream)
    try:
        final = TaskWaiter(client).follow(task, progress.update, timeout)
    except WaitTimeout as exc:
        progress.close()
        raise GaveUp(f"error: {exc}; follow it with: iaas task watch {task['id']}") from exc
    except KeyboardInterrupt:
        progress.close()
        raise Interrupted(
            f"stopped waiting; task {task['id']} goes on: iaas task watch {task['id']}"
        ) from None
    progress.close()
    print(outcome(final), file=stream, flush=True)
    return final


def failed(task: Mapping[str, Any]) -> Failure:
    error = task.get("error") or {"code": "task_failed", "message": "the task failed", "details": {}}
    return Failure(describe_error(error["code"], error["message"], error.get("details")))


def report_accepted(
    client: Client, answer: Mapping[str, Any], *, wait: bool, timeout: float, fmt: str
) -> None:
    """After a 202 `{"vm", "task"}`: the answer as it is, or with --wait the task followed to its end and
    the VM as it is then (the answer's shape, for scripts: `{"vm", "task"}` with both up to date)."""
    vm, task = answer.get("vm"), answer["task"]
    if not wait:
        if fmt != "table":
            click.echo(output.dump(dict(answer), fmt))
            return
        if vm:
            click.echo(f"vm {vm['name']} {vm['id']}: {vm['status']}")
        click.echo(f"task {task['id']} {task['kind']}: {task['status']}")
        if task["status"] not in ("succeeded", "failed"):
            click.echo(f"follow it: iaas task watch {task['id']}")
        return
    final = follow(client, task, fmt, timeout)
    if vm:
        try:
            vm = client.get(f"/v1/vms/{vm['id']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            vm = {**vm, "status": "deleted"}  # destroyed: the API no longer shows it
    if fmt != "table":
        click.echo(output.dump({"vm": vm, "task": final} if vm else {"task": final}, fmt))
    elif vm and vm["status"] == "deleted":
        click.echo(f"vm {vm['name']} {vm['id']}: deleted")
    elif vm:
        click.echo(
            f"vm {vm['name']} {vm['id']}: {vm['status']}, power {vm.get('power_state', '-')}, "
            f"addresses {output.addresses(vm)}"
        )
    if final["status"] == "failed":
        raise failed(final)


@click.group()
def task() -> None:
    """Tasks: what each create, delete and power action runs as, step by step."""


@task.command("show")
@click.argument("task_id")
@output.output_option
@click.pass_context
def task_show(ctx: click.Context, task_id: str, fmt: str) -> None:
    """Show task TASK_ID with its steps."""
    found = state(ctx).client().get(f"/v1/tasks/{task_id}")
    click.echo(_show(found, fmt))


def _show(found: Mapping[str, Any], fmt: str) -> str:
    return output.task_detail(found) if fmt == "table" else output.dump(dict(found), fmt)


@task.command("watch")
@click.argument("task_id")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Give up waiting after this long (exit 124).")  # fmt: skip
@output.output_option
@click.pass_context
def task_watch(ctx: click.Context, task_id: str, timeout: float | None, fmt: str) -> None:
    """Follow task TASK_ID until it has finished; exit non-zero if it failed."""
    client = state(ctx).client()
    final = follow(client, client.get(f"/v1/tasks/{task_id}"), fmt, timeout)
    if fmt != "table":
        click.echo(_show(final, fmt))
    if final["status"] == "failed":
        raise failed(final)


@task.command("list")
@click.option("--vm", "vm_ref", metavar="NAME|ID", help="Only this VM's tasks.")
@click.option(
    "--kind", metavar="KIND", help="create_vm, destroy_vm, start_vm, stop_vm, reboot_vm, reconcile."
)
@click.option("--status", metavar="STATUS", help="pending, running, succeeded or failed.")
@output.output_option
@click.pass_context
def task_list(ctx: click.Context, vm_ref: str | None, kind: str | None, status: str | None, fmt: str) -> None:
    """The project's tasks, oldest first (every page)."""
    client = state(ctx).client()
    vm_id = resolve_vm(client, vm_ref) if vm_ref else None
    try:
        items = list(client.pages("/v1/tasks", vm_id=vm_id, kind=kind, status=status))
    except ApiError as exc:
        if exc.status in (404, 405) and not exc.details.get("task_id"):
            raise Failure(describe_error(exc.code, exc.message, exc.details)
                          + "\nthis API has no task history (GET /v1/tasks) yet: it is older than this CLI"
                          ) from exc  # fmt: skip
        raise
    _list(items, fmt)


def _list(items: list[dict[str, Any]], fmt: str) -> None:
    click.echo(output.table(items, output.TASK_COLUMNS) if fmt == "table" else output.dump(items, fmt))
