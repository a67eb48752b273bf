"""`iaas-admin`: operator commands that run on a hypervisor host."""

from __future__ import annotations

import os
import sys

import click

from worker import cli_access, resources
from worker.hypervisor.connection import HypervisorError
from worker.images import ImageImportError, image_exists, import_image


@click.group()
def main() -> None:
    """mini-iaas administration on this hypervisor host (settings from IAAS_* variables)."""


@main.group()
def image() -> None:
    """Base images that VMs are built from."""


@image.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--skip-existing", is_flag=True, help="Do nothing when an image NAME is registered already.")
def image_import(name: str, path: str, skip_existing: bool) -> None:
    """Register the qcow2 file PATH as image NAME (uploaded into the storage pool through libvirt)."""
    if skip_existing and image_exists(resources.sessions(), name):
        click.echo(f"image {name} is registered already; leaving it as it is")
        return
    size = os.path.getsize(path)
    try:
        with click.progressbar(length=size, label=f"uploading {name}", file=sys.stderr) as bar:
            image, created = import_image(
                resources.hypervisor(),
                resources.sessions(),
                resources.settings(),
                name,
                path,
                progress=bar.update,
            )
    except (ImageImportError, HypervisorError) as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "imported" if created else "already registered (same checksum)"
    click.echo(
        f"image {image.name} {verb}: {image.path} ({image.size_bytes} bytes, virtual "
        f"{image.virtual_size_bytes} bytes, sha256 {image.checksum_sha256[:12]}...)"
    )


cli_access.register(main)

if __name__ == "__main__":
    main()
