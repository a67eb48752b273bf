"""The passwords `make up` generates (scripts/ensure-secrets.sh): one file each in IAAS_SECRETS_DIR.

The URLs in the settings name where a service is, not its password: `with_password` fills in the
password from its file when the URL carries none, so that no password is written in code, on a
command line or in the environment a process is started with."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

# The file that holds the password of a service, by the scheme of its URL.
SECRET_OF_SCHEME = {"postgresql": "postgres", "redis": "redis"}


def read_secret(secrets_dir: str | Path, name: str) -> str | None:
    """The secret `name` (its file's first line), or None when there is no such file."""
    try:
        text = (Path(secrets_dir) / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text.splitlines()[0].strip() if text.strip() else None


def with_password(url: str, secrets_dir: str | Path) -> str:
    """`url` with the password of its service filled in from `secrets_dir`, unless the URL carries a
    password already (kept as it is) or no secret exists for it (unchanged: the server may not want
    one). `postgresql+psycopg2://iaas@host/db` becomes `postgresql+psycopg2://iaas:<secret>@host/db`,
    `redis://host:6379/0` becomes `redis://:<secret>@host:6379/0`."""
    parts = urlsplit(url)
    name = SECRET_OF_SCHEME.get(parts.scheme.split("+")[0])
    if name is None or parts.password is not None or not parts.hostname:
        return url
    password = read_secret(secrets_dir, name)
    if password is None:
        return url
    user, _, where = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{where}"
    return urlunsplit(parts._replace(netloc=netloc))
