"""`iaas vm …`: create, list, show, delete, start, stop, reboot and read the console of VMs. Wherever a
VM is named, its NAME is taken as well as its id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO, Any

import click

from cli import output
from cli.client import new_idempotency_key
from cli.context import state
from cli.tasks import report_accepted, wait_options
from cli.vm_refs import resolve_vm


def idempotency_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--idempotency-key", metavar="KEY",
        help="Makes the request safe to send again: the same KEY gets the first answer back (a fresh UUID "
        "unless given; the CLI resends it itself when an answer is lost). Keys live 24 h.",
    )(function)  # fmt: skip


@click.group()
def vm() -> None:
    """Virtual machines."""


def parse_network(value: str) -> str | dict[str, str]:
    """`NAME` or `NAME=IP` (a network's name or id, and the address asked for) as `networks` takes it."""
    name, sep, ip = value.partition("=")
    if not name or (sep and not ip):
        raise click.BadParameter(f"{value!r}: give NAME or NAME=IP", param_hint="--network")
    return {"network": name, "ip": ip} if sep else name


def create_body(
    name: str,
    image: str,
    *,
    flavor: str | None = None,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    disk_gib: int | None = None,
    networks: Sequence[str] = (),
    key: str | None = None,
    user_data: str | None = None,
) -> dict[str, Any]:
    """The body of POST /v1/vms: only what was given (the API says what is missing or clashes)."""
    body: dict[str, Any] = {"name": name, "image": image}
    given = {"flavor": flavor, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib,
             "key_name": key, "user_data": user_data}  # fmt: skip
    body.update({field: value for field, value in given.items() if value is not None})
    if networks:
        body["networks"] = [parse_network(value) for value in networks]
    return body


@vm.command("create")
@click.argument("name")
@click.option("--image", required=True, help="The image to build it from (`iaas image list`).")
@click.option("--flavor", help="A flavor's size (`iaas flavor list`), instead of the three sizes.")
@click.option("--vcpus", type=int, help="vCPUs, 1-64.")
@click.option("--memory-mib", type=int, help="Memory in MiB, 64-524288.")
@click.option("--disk-gib", type=int, help="Disk in GiB (at least the image's size).")
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="NAME[=IP]",
    help="A NIC on this network (name or id), with IP if given; repeat for more (eth0 first).",
)
@click.option("--key", help="A keypair to authorise in the guest (`iaas keypair list`).")
@click.option(
    "--user-data-file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH",
    help="Text for cloud-init (a #cloud-config document or a script); - reads stdin.",
)
@idempotency_option
@wait_options
@output.output_option
@click.pass_context
def vm_create(
    ctx: click.Context, name: str, image: str, flavor: str | None, vcpus: int | None,
    memory_mib: int | None, disk_gib: int | None, networks: tuple[str, ...], key: str | None,
    user_data_file: IO[str] | None, idempotency_key: str | None, wait: bool, timeout: float, fmt: str,
) -> None:  # fmt: skip
    """Ask for VM NAME: sized by --flavor, or by --vcpus, --memory-mib and --disk-gib."""
    body = create_body(
        name, image, flavor=flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        networks=networks, key=key, user_data=user_data_file.read() if user_data_file else None,
    )  # fmt: skip
    client = state(ctx).client()
    answer = client.request(
        "POST", "/v1/vms", json=body, idempotency_key=idempotency_key or new_idempotency_key()
    )
    report_accepted(client, answer.json(), wait=wait, timeout=timeout, fmt=fmt)


@vm.command("list")
@click.option("--status", help="Only VMs in this status (pending, building, running, stopped, error, ...).")
@click.option("--name", help="Only the VM of this exact name.")
@output.output_option
@click.pass_context
def vm_list(ctx: click.Context, status: str | None, name: str | None, fmt: str) -> None:
    """The project's VMs, oldest first (every page)."""
    items = list(state(ctx).client().pages("/v1/vms", status=status, name=name))
    click.echo(output.table(items, output.VM_COLUMNS) if fmt == "table" else output.dump(items, fmt))


@vm.command("show")
@click.argument("vm_ref", metavar="NAME|ID")
@output.output_option
@click.pass_context
def vm_show(ctx: click.Context, vm_ref: str, fmt: str) -> None:
    """Show a VM."""
    client = state(ctx).client()
    found = client.get(f"/v1/vms/{resolve_vm(client, vm_ref)}")
    click.echo(output.vm_detail(found) if fmt == "table" else output.dump(found, fmt))


@vm.command("delete")
@click.argument("vm_ref", metavar="NAME|ID")
@idempotency_option
@wait_options
@output.output_option
@click.pass_context
def vm_delete(
    ctx: click.Context, vm_ref: str, idempotency_key: str | None, wait: bool, timeout: float, fmt: str
) -> None:
    """Delete a VM: its domain, disk, seed and console log, then its record."""
    client = state(ctx).client()
    path = f"/v1/vms/{resolve_vm(client, vm_ref)}"
    answer = client.request("DELETE", path, idempotency_key=idempotency_key or new_idempotency_key())
    report_accepted(client, answer.json(), wait=wait, timeout=timeout, fmt=fmt)


def _power(action: str, summary: str, force_help: str | None) -> None:
    @click.argument("vm_ref", metavar="NAME|ID")
    @idempotency_option
    @wait_options
    @output.output_option
    @click.pass_context
    def command(ctx: click.Context, vm_ref: str, idempotency_key: str | None, wait: bool, timeout: float,
                fmt: str, force: bool = False) -> None:  # fmt: skip
        client = state(ctx).client()
        answer = client.request(
            "POST", f"/v1/vms/{resolve_vm(client, vm_ref)}/{action}", json={"force": True} if force else None,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )  # fmt: skip
        report_accepted(client, answer.json(), wait=wait, timeout=timeout, fmt=fmt)

    command.__doc__ = summary
    if force_help:
        command = click.option("--force", is_flag=True, help=force_help)(command)
    vm.command(action)(command)


_power("start", "Start a stopped VM.", None)
_power(
    "stop",
    "Stop a running VM (the ACPI power button; --force: at once).",
    "Power off without waiting for the guest.",
)
_power(
    "reboot", "Reboot a running VM (ACPI; --force: a hard reset).", "A hard reset instead of an ACPI reboot."
)


@vm.command("console")
@click.argument("vm_ref", metavar="NAME|ID")
@click.option(
    "--tail-bytes", type=click.IntRange(1, 1048576), help="How much of the log's end (64 KiB unless given)."
)
@click.pass_context
def vm_console(ctx: click.Context, vm_ref: str, tail_bytes: int | None) -> None:
    """Print the end of a VM's serial console log, as the guest wrote it."""
    client = state(ctx).client()
    answer = client.request(
        "GET", f"/v1/vms/{resolve_vm(client, vm_ref)}/console",
        params={"tail_bytes": tail_bytes} if tail_bytes else None,
    )  # fmt: skip
    click.echo(answer.text, nl=not answer.text.endswith("\n") and bool(answer.text))
