"""Where the CLI finds the API and its token: flags, then IAAS_URL / IAAS_TOKEN, then the config file
($XDG_CONFIG_HOME/mini-iaas/config.toml, else ~/.config/mini-iaas/config.toml, or IAAS_CONFIG).

The file holds a bearer token, so one that its group or anyone else may read is refused, as ssh refuses
a private key others can read: the token would already have leaked to every account on the machine."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"  # where `make up` binds the API (IAAS_API_BIND)
KEYS = ("url", "token")


class ConfigError(Exception):
    """The configuration cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    source: str  # where the token came from, for messages: "--token", "IAAS_TOKEN", a file's path


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("IAAS_CONFIG"):
        return Path(env["IAAS_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "mini-iaas" / "config.toml"


def read_file(path: Path) -> dict[str, str]:
    """The settings of the config file at `path` ({} when there is none)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"the config file {path} has unknown keys {unknown}; it takes {list(KEYS)}")
    if not all(isinstance(value, str) for value in data.values()):
        raise ConfigError(f"the config file {path}: url and token are strings")
    if "token" in data and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the config file {path} holds a token but its group or others may read it "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    return data


def load(env: Mapping[str, str], url: str | None = None, token: str | None = None) -> Config:
    """The configuration, flags (`url`, `token`) first, then the environment, then the file."""
    path = config_path(env)
    file = read_file(path)
    chosen_url = url or env.get("IAAS_URL") or file.get("url") or DEFAULT_URL
    if token:
        return Config(chosen_url.rstrip("/"), token, "--token")
    if env.get("IAAS_TOKEN"):
        return Config(chosen_url.rstrip("/"), env["IAAS_TOKEN"], "IAAS_TOKEN")
    return Config(chosen_url.rstrip("/"), file.get("token"), str(path))
