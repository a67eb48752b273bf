"""`iaas`: the command tree and the global options."""

from __future__ import annotations

import click

from cli import config, resources, tasks, vms
from cli.context import Group, State


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="The API's address (else IAAS_URL, the config file, or "
              f"{config.DEFAULT_URL}).")  # fmt: skip
@click.option("--token", metavar="TOKEN", help="An API token (else IAAS_TOKEN or the config file).")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    """mini-iaas from anywhere that reaches its API: VMs, tasks, images, flavors, networks, keypairs.

    Configuration: --url/--token, else IAAS_URL/IAAS_TOKEN, else $XDG_CONFIG_HOME/mini-iaas/config.toml
    (url = "...", token = "..."; mode 0600, or it is refused)."""
    ctx.obj = State(url, token)


for _group in (vms.vm, tasks.task, *resources.GROUPS):
    main.add_command(_group)
