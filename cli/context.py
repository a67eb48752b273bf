"""What every command shares: the state the global options give, and how failures end a command."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from cli import config
from cli.client import ApiError, Client, Unreachable

# Exit codes besides click's own 2 for a usage error.
EXIT_FAILED = 1  # an error answer of the API, or a task that failed
EXIT_UNREACHABLE = 3  # no answer from the API, no token, or an unusable config file
EXIT_TIMEOUT = 124  # --wait gave up before the task finished (as timeout(1) does)
EXIT_INTERRUPTED = 130


class Failure(click.ClickException):
    """Ends the command: `message` on stderr, as it is, and exit code 1 (the subclasses: their own)."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class NoAnswer(Failure):
    exit_code = EXIT_UNREACHABLE


class GaveUp(Failure):
    exit_code = EXIT_TIMEOUT


class Interrupted(Failure):
    exit_code = EXIT_INTERRUPTED


def api_failure(error: ApiError) -> Failure:
    """`error <code>: <message>`, then what the details add (the fields a 400 names, one a line)."""
    return Failure(describe_error(error.code, error.message, error.details))


def describe_error(code: str, message: str, details: Mapping[str, Any] | None) -> str:
    lines = [f"error {code}: {message}"]
    for name, value in (details or {}).items():
        if name == "fields" and isinstance(value, list):
            lines += [f"  {f.get('field')}: {f.get('message')}" for f in value if isinstance(f, dict)]
        else:
            lines.append(f"  {name}: {value}")
    return "\n".join(lines)


@dataclass
class State:
    """What the group's options gave; the client is made at the first call, so --help needs no config."""

    url: str | None = None
    token: str | None = None
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = Client(config.load(os.environ, self.url, self.token))
            except config.ConfigError as exc:
                raise NoAnswer(f"error: {exc}") from exc
        return self._client


class Group(click.Group):
    """Turns the API's errors and a missing connection into messages and exit codes, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise api_failure(exc) from exc
        except Unreachable as exc:
            raise NoAnswer(f"error: {exc}") from exc


def state(ctx: click.Context) -> State:
    return ctx.find_object(State) or State()
