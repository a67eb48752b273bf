"""`iaas-admin project …` and `iaas-admin token …`: who may use the API, and how much.

These run on the host, against the database only; there is no API for them, so a stolen token can
never make itself another one."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from common import projects
from common.db import transaction
from common.models import Project, Token
from common.names import is_dns_label
from common.tokens import Role, create_token, look_up, revoke_token
from worker import resources

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `1h30m`, `3600s`: a number and a unit, repeated."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise click.BadParameter(f"{text!r} is not a duration; write e.g. 90d, 12h, 1h30m or 3600s.")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def _project_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_dns_label(value):
        raise click.BadParameter("a project name is a lowercase DNS label: a-z, 0-9 and '-', at most 63.")
    return value


_LIMIT_OPTIONS = [
    click.option(f"--max-{resource.replace('_', '-')}", f"max_{resource}", type=click.IntRange(min=0),
                 help=f"Limit of {resource.replace('_', ' ')} (default {default}).")
    for resource, default in projects.DEFAULT_LIMITS.items()
]  # fmt: skip


def _with_limits(command: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_LIMIT_OPTIONS):
        command = option(command)
    return command


@click.group()
def project() -> None:
    """Projects: the tenants that own VMs and tasks, each with its quota."""


@project.command("create")
@click.argument("name", callback=_project_name)
@_with_limits
@click.option("--exist-ok", is_flag=True, help="Do nothing (and succeed) when the project exists.")
def project_create(name: str, exist_ok: bool, **limits: int | None) -> None:
    """Create project NAME with its limits."""
    with transaction(resources.sessions()) as session:
        existing = projects.find_project(session, name)
        if existing is not None:
            if exist_ok:
                click.echo(f"project {name} exists already; leaving it as it is")
                return
            raise click.ClickException(f"a project named {name} exists already (iaas-admin project list)")
        try:
            made = projects.create_project(session, name, **{k[4:]: v for k, v in limits.items()})
        except IntegrityError as exc:  # made by someone else just now
            raise click.ClickException(f"a project named {name} exists already") from exc
        shown = projects.limits_of(made).as_dict()
    click.echo(f"project {name} created: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


@project.command("set-limits")
@click.argument("name", callback=_project_name)
@_with_limits
def project_set_limits(name: str, **limits: int | None) -> None:
    """Change some limits of project NAME (lowering one below the usage blocks new VMs only)."""
    chosen = {key: value for key, value in limits.items() if value is not None}
    if not chosen:
        raise click.UsageError("name at least one limit, e.g. --max-instances 20")
    with transaction(resources.sessions()) as session:
        found = projects.find_project(session, name)
        if found is None:
            raise click.ClickException(f"no project named {name} (iaas-admin project list)")
        for key, value in chosen.items():
            setattr(found, key, value)
        shown = projects.limits_of(found).as_dict()
    click.echo(f"project {name}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


@project.command("list")
def project_list() -> None:
    """Every project with its limits and usage (in use / limit)."""
    with transaction(resources.sessions()) as session:
        rows = [
            (p.name, projects.usage_of(p), projects.limits_of(p))
            for p in session.scalars(select(Project).order_by(Project.name))
        ]
    header = ("PROJECT", *(resource.upper() for resource in projects.RESOURCES))
    table = [header] + [
        (name, *(f"{getattr(used, r)}/{getattr(limits, r)}" for r in projects.RESOURCES))
        for name, used, limits in rows
    ]
    print_table(table)


@click.group()
def token() -> None:
    """API tokens: each belongs to a project and has a role (member or admin)."""


@token.command("create")
@click.option("--project", "project_name", required=True, callback=_project_name, help="Its project.")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.MEMBER.value,
    show_default=True,
    help="member: everything in its project; admin: also every project's VMs and reconcile.",
)
@click.option("--name", "label", help="A label saying whose or what for (shown in task audits).")
@click.option("--expires-in", "expires_in", help="Lifetime, e.g. 90d, 12h, 1h30m (default: no expiry).")
def token_create(project_name: str, role: str, label: str | None, expires_in: str | None) -> None:
    """Make a token; its secret is printed once, alone on the last line. Only its hash is kept."""
    lifetime = parse_duration(expires_in) if expires_in else None
    if label is not None and not (0 < len(label) <= 63 and label.isprintable()):
        raise click.BadParameter("a label is 1 to 63 printable characters", param_hint="--name")
    with transaction(resources.sessions()) as session:
        found = projects.find_project(session, project_name)
        if found is None:
            raise click.ClickException(f"no project named {project_name} (iaas-admin project create)")
        made, secret = create_token(session, found, Role(role), label, lifetime)
        expiry = made.expires_at.isoformat() if made.expires_at else "never"
        click.echo(f"token {made.id} (project {project_name}, role {role}, expires {expiry});")
        click.echo("its secret follows, shown only now -- keep it safe:")
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """Every token (never its secret): id, project, role, label, state."""
    now = datetime.now(UTC)
    with transaction(resources.sessions()) as session:
        rows = session.execute(
            select(Token, Project.name).join(Project).order_by(Project.name, Token.created_at)
        ).all()
        table = [("ID", "PROJECT", "ROLE", "NAME", "CREATED", "EXPIRES", "STATE")] + [
            (str(t.id), project_name, t.role, t.name or "-", _short(t.created_at), _short(t.expires_at),
             "revoked" if t.revoked_at else "expired" if t.expires_at and t.expires_at <= now else "active")
            for t, project_name in rows
        ]  # fmt: skip
    print_table(table)


@token.command("revoke")
@click.argument("token_id", type=click.UUID)
def token_revoke(token_id: uuid.UUID) -> None:
    """Revoke token TOKEN_ID: the API refuses it within IAAS_TOKEN_CACHE_S seconds."""
    with transaction(resources.sessions()) as session:
        if not revoke_token(session, token_id):
            raise click.ClickException(f"no token with id {token_id} (iaas-admin token list)")
    click.echo(f"token {token_id} revoked")


@click.command("bootstrap")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where the admin token's secret is kept (mode 0600).",
)
@click.option("--project", "project_name", default="admin", show_default=True, callback=_project_name)
def bootstrap(token_file: Path, project_name: str) -> None:
    """Make sure an admin project exists and TOKEN_FILE holds a valid admin token (what `make up`
    runs): a file whose token still works is left alone, else a new token replaces it."""
    settings = resources.settings()
    if token_file.exists():
        current = look_up(resources.engine(), token_file.read_text().strip())
        if (
            current is not None
            and current.is_admin
            and (current.expires_at is None or current.expires_at > datetime.now(UTC))
        ):
            click.echo(f"admin token in {token_file} is valid (project {current.project})")
            return
    with transaction(resources.sessions()) as session:
        found = projects.find_project(session, project_name) or projects.create_project(session, project_name)
        made, secret = create_token(session, found, Role.ADMIN, f"make-up on {settings.host}")
    _write_secret(token_file, secret)
    click.echo(f"admin token {made.id} (project {project_name}) written to {token_file}")


def _write_secret(path: Path, secret: str) -> None:
    """Write a new file readable by its owner only, then move it into place (never a window in
    which the secret sits in a file others can read)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    os.replace(temporary, path)


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def register(main: click.Group) -> None:
    for command in (project, token, bootstrap):
        main.add_command(command)
