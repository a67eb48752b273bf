"""`iaas-admin`: operator commands that run on a hypervisor host."""

from __future__ import annotations

import sys

import click

from worker import cli_access, cli_flavors, resources
from worker.hypervisor.connection import HypervisorError, LibvirtError
from worker.images import (
    ImageDeleteError,
    ImageImportError,
    delete_image,
    image_exists,
    import_image,
    open_image_file,
)


@click.group()
def main() -> None:
    """mini-iaas administration on this hypervisor host (settings from IAAS_* variables)."""


@main.group()
def image() -> None:
    """Base images that VMs are built from."""


@image.command("import")
@click.argument("name")
# A plain string, not click.Path: that stat()s the path, following a symlink, before the import opens
# it. The import opens it exactly once and does every check on that open file.
@click.argument("path", metavar="PATH")
@click.option("--skip-existing", is_flag=True, help="Do nothing when an image NAME is registered already.")
@click.option(
    "--replace", is_flag=True, help="When image NAME has other contents and no VM uses it, replace it."
)
def image_import(name: str, path: str, skip_existing: bool, replace: bool) -> None:
    """Register the qcow2 file PATH as image NAME (uploaded into the storage pool through libvirt).

    Refused: a symlink or anything but a regular file; a file that is not a qcow2 by its own header;
    a qcow2 with a backing file, an external data file or encryption; one qemu-img cannot read within
    its limits."""
    if skip_existing and image_exists(resources.sessions(), name):
        click.echo(f"image {name} is registered already; leaving it as it is")
        return
    try:
        with (
            open_image_file(path) as source,
            click.progressbar(length=source.size, label=f"uploading {name}", file=sys.stderr) as bar,
        ):
            image, created = import_image(
                resources.hypervisor(),
                resources.sessions(),
                resources.settings(),
                name,
                source,
                progress=bar.update,
                replace=replace,
            )
    except (ImageImportError, ImageDeleteError, HypervisorError, LibvirtError) as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "imported" if created else "already registered (same checksum)"
    click.echo(
        f"image {image.name} {verb}: {image.path} ({image.size_bytes} bytes, virtual "
        f"{image.virtual_size_bytes} bytes, sha256 {image.checksum_sha256[:12]}...)"
    )


@image.command("delete")
@click.argument("name")
def image_delete(name: str) -> None:
    """Delete image NAME: its volume (through libvirt) and its record. Refused while a VM that is not
    deleted uses it."""
    try:
        image = delete_image(resources.hypervisor(), resources.sessions(), resources.settings(), name)
    except (ImageDeleteError, HypervisorError, LibvirtError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"image {image.name} deleted (volume {image.volume} in pool {image.pool})")


cli_access.register(main)
cli_flavors.register(main)

if __name__ == "__main__":
    main()
