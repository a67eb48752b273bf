"""`iaas-admin flavor …`: the named VM sizes every project may ask for (GET /v1/flavors shows them).
Their bounds are the API's own (common/flavors.SIZE_BOUNDS)."""

from __future__ import annotations

from collections.abc import Callable

import click
from click.decorators import FC
from sqlalchemy.exc import IntegrityError

from common import flavors
from common.db import transaction
from common.models import Flavor
from common.names import is_dns_label
from worker import resources
from worker.cli_access import print_table


def _flavor_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_dns_label(value):
        raise click.BadParameter("a flavor name is a lowercase DNS label: a-z, 0-9 and '-', at most 63.")
    return value


def _size_option(size: str, unit: str) -> Callable[[FC], FC]:
    least, most = flavors.SIZE_BOUNDS[size]
    return click.option(
        f"--{size.replace('_', '-')}", size, required=True, type=click.IntRange(least, most),
        help=f"{unit}, {least} to {most}.",
    )  # fmt: skip


@click.group()
def flavor() -> None:
    """Flavors: named VM sizes (POST /v1/vms takes "flavor" instead of the three sizes)."""


@flavor.command("create")
@click.argument("name", callback=_flavor_name)
@_size_option("vcpus", "Virtual CPUs")
@_size_option("memory_mib", "Memory in MiB")
@_size_option("disk_gib", "Disk in GiB")
def flavor_create(name: str, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    """Create flavor NAME. A flavor is never changed: VMs made from it keep its sizes anyway."""
    exists = f"a flavor named {name} exists already (iaas-admin flavor list)"
    try:
        with transaction(resources.sessions()) as session:
            if session.get(Flavor, name) is not None:
                raise click.ClickException(exists)
            flavors.create_flavor(session, name, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib)
    except IntegrityError as exc:  # made by someone else just now
        raise click.ClickException(exists) from exc
    click.echo(f"flavor {name} created: vcpus {vcpus}, memory_mib {memory_mib}, disk_gib {disk_gib}")


@flavor.command("list")
def flavor_list() -> None:
    """Every flavor, smallest first."""
    with transaction(resources.sessions()) as session:
        rows = [
            (f.name, str(f.vcpus), str(f.memory_mib), str(f.disk_gib)) for f in flavors.all_flavors(session)
        ]
    print_table([("FLAVOR", "VCPUS", "MEMORY_MIB", "DISK_GIB"), *rows])


def register(main: click.Group) -> None:
    main.add_command(flavor)
