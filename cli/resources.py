"""`iaas image|flavor|network|keypair|project …`: the things VMs are made from and with. Networks and
keypairs are made and removed at once (201/204, no task); their --wait is taken so that scripts may pass
it to every mutating command alike."""

from __future__ import annotations

from typing import IO, Any

import click

from cli import output
from cli.context import state

SYNC_WAIT_HELP = "Accepted for symmetry with the VM commands: this takes effect at once."


def _show(found: Any, fmt: str, detail: Any) -> None:
    click.echo(detail(found) if fmt == "table" else output.dump(found, fmt))


def _list(items: list[dict[str, Any]], fmt: str, columns: list[output.Column]) -> None:
    click.echo(output.table(items, columns) if fmt == "table" else output.dump(items, fmt))


@click.group()
def image() -> None:
    """Base images (shared by every project; registered on a host with `iaas-admin image import`)."""


@image.command("list")
@output.output_option
@click.pass_context
def image_list(ctx: click.Context, fmt: str) -> None:
    """Every image, by name."""
    _list(list(state(ctx).client().pages("/v1/images")), fmt, output.IMAGE_COLUMNS)


IMAGE_FIELDS = [
    "id",
    "name",
    "host",
    "format",
    "size_bytes",
    "virtual_size_bytes",
    "checksum_sha256",
    "created_at",
]


@image.command("show")
@click.argument("name")
@output.output_option
@click.pass_context
def image_show(ctx: click.Context, name: str, fmt: str) -> None:
    """Show image NAME."""
    _show(state(ctx).client().get(f"/v1/images/{name}"), fmt, lambda i: output.fields(i, IMAGE_FIELDS))


@click.group()
def flavor() -> None:
    """Named VM sizes (shared by every project; made with `iaas-admin flavor create`)."""


@flavor.command("list")
@output.output_option
@click.pass_context
def flavor_list(ctx: click.Context, fmt: str) -> None:
    """Every flavor, smallest first."""
    _list(list(state(ctx).client().pages("/v1/flavors")), fmt, output.FLAVOR_COLUMNS)


@click.group()
def network() -> None:
    """The project's isolated IPv4 networks (VMs get addresses on them: `vm create --network`)."""


NETWORK_FIELDS = ["id", "name", "cidr", "prefix", "size", "usable", "in_use", "created_at"]


@network.command("create")
@click.argument("name")
@click.option("--cidr", required=True, help="Its range, /16 to /29, e.g. 198.51.100.0/24.")
@click.option("--wait", is_flag=True, help=SYNC_WAIT_HELP)
@output.output_option
@click.pass_context
def network_create(ctx: click.Context, name: str, cidr: str, wait: bool, fmt: str) -> None:
    """Make network NAME."""
    made = state(ctx).client().request("POST", "/v1/networks", json={"name": name, "cidr": cidr}).json()
    _show(made, fmt, lambda n: output.fields(n, NETWORK_FIELDS))


@network.command("list")
@output.output_option
@click.pass_context
def network_list(ctx: click.Context, fmt: str) -> None:
    """The project's networks, oldest first (every page)."""
    _list(list(state(ctx).client().pages("/v1/networks")), fmt, output.NETWORK_COLUMNS)


@network.command("show")
@click.argument("reference", metavar="NAME|ID")
@output.output_option
@click.pass_context
def network_show(ctx: click.Context, reference: str, fmt: str) -> None:
    """Show a network."""
    _show(
        state(ctx).client().get(f"/v1/networks/{reference}"), fmt, lambda n: output.fields(n, NETWORK_FIELDS)
    )


@network.command("delete")
@click.argument("reference", metavar="NAME|ID")
@click.option("--wait", is_flag=True, help=SYNC_WAIT_HELP)
@click.pass_context
def network_delete(ctx: click.Context, reference: str, wait: bool) -> None:
    """Delete a network (refused while a VM has a NIC on it)."""
    state(ctx).client().request("DELETE", f"/v1/networks/{reference}")
    click.echo(f"network {reference} deleted")


@click.group()
def keypair() -> None:
    """The project's SSH public keys (a VM's guest authorises one: `vm create --key`)."""


KEYPAIR_FIELDS = ["id", "name", "type", "fingerprint", "public_key", "created_at"]


@keypair.command("create")
@click.argument("name")
@click.option("--public-key-file", type=click.File("r", encoding="utf-8"), required=True, metavar="PATH",
              help="An OpenSSH public key, e.g. ~/.ssh/id_ed25519.pub; - reads stdin.")  # fmt: skip
@click.option("--wait", is_flag=True, help=SYNC_WAIT_HELP)
@output.output_option
@click.pass_context
def keypair_create(ctx: click.Context, name: str, public_key_file: IO[str], wait: bool, fmt: str) -> None:
    """Register the public key of --public-key-file as keypair NAME."""
    body = {"name": name, "public_key": public_key_file.read().strip()}
    made = state(ctx).client().request("POST", "/v1/keypairs", json=body).json()
    _show(made, fmt, lambda k: output.fields(k, KEYPAIR_FIELDS))


@keypair.command("list")
@output.output_option
@click.pass_context
def keypair_list(ctx: click.Context, fmt: str) -> None:
    """The project's keypairs, by name."""
    _list(list(state(ctx).client().pages("/v1/keypairs")), fmt, output.KEYPAIR_COLUMNS)


@keypair.command("show")
@click.argument("name")
@output.output_option
@click.pass_context
def keypair_show(ctx: click.Context, name: str, fmt: str) -> None:
    """Show keypair NAME."""
    _show(state(ctx).client().get(f"/v1/keypairs/{name}"), fmt, lambda k: output.fields(k, KEYPAIR_FIELDS))


@keypair.command("delete")
@click.argument("name")
@click.option("--wait", is_flag=True, help=SYNC_WAIT_HELP)
@click.pass_context
def keypair_delete(ctx: click.Context, name: str, wait: bool) -> None:
    """Delete keypair NAME (VMs keep the key they booted with)."""
    state(ctx).client().request("DELETE", f"/v1/keypairs/{name}")
    click.echo(f"keypair {name} deleted")


@click.group()
def project() -> None:
    """The project of the token."""


@project.command("show")
@output.output_option
@click.pass_context
def project_show(ctx: click.Context, fmt: str) -> None:
    """The project's name, limits and usage, and the token's role."""
    _show(state(ctx).client().get("/v1/project"), fmt, output.project_detail)


GROUPS = (image, flavor, network, keypair, project)
