"""scripts/ensure-database.sh against a PostgreSQL that, like Debian's default, asks for a password over
TCP (scram-sha-256): the role gets the generated secret, the services' URL (the secret filled in by
the settings) logs in, the old fixed `iaas` password and no password are refused, and a rotated
secret replaces the old one on the next run. A private cluster, so the shared one's pg_hba.conf (which
may trust 127.0.0.1) does not decide the outcome."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from common.config import Settings
from tests.support.environment import ROOT
from tests.support.processes import PrivatePostgres

ROLE = "iaas_scram"


@pytest.fixture
def scram_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(Path(f"/var/lib/mini-iaas/pgtest-{uuid.uuid4().hex[:8]}"))
    server.init(host_auth="scram-sha-256")
    yield server
    server.destroy()


def ensure_database(server: PrivatePostgres, secrets_dir: Path) -> str:
    """Run the script as `make up` does, pointed at the private cluster (its socket folder by PGHOST)."""
    env = {
        **os.environ,
        "IAAS_DATABASE_URL": f"postgresql+psycopg2://{ROLE}@127.0.0.1:{server.port}/{ROLE}",
        "IAAS_SECRETS_DIR": str(secrets_dir),
        "PGHOST": str(server.root),
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "ensure-database.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def connect(server: PrivatePostgres, password: str | None) -> None:
    secret = {"password": password} if password is not None else {}
    psycopg2.connect(host="127.0.0.1", port=server.port, user=ROLE, dbname=ROLE, **secret).close()


def services_url(server: PrivatePostgres, secrets_dir: Path) -> str:
    """The URL a service uses: no password in IAAS_DATABASE_URL, the secret filled in by the settings."""
    settings = Settings(
        secrets_dir=str(secrets_dir), database_url=f"postgresql://{ROLE}@127.0.0.1:{server.port}/{ROLE}"
    )
    return settings.database_url


def test_the_role_gets_the_secret_and_only_the_secret_opens_it(
    scram_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    first = secrets.token_urlsafe(32)
    (tmp_path / "postgres").write_text(first + "\n")
    out = ensure_database(scram_postgres, tmp_path)
    assert first not in out
    assert "trusts" not in out  # this cluster asks for passwords over TCP: no warning

    psycopg2.connect(services_url(scram_postgres, tmp_path)).close()
    for wrong in ("iaas", "", None):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            connect(scram_postgres, wrong)

    # Rotation: a new secret, the script again; the old password stops working.
    second = secrets.token_urlsafe(32)
    (tmp_path / "postgres").write_text(second + "\n")
    ensure_database(scram_postgres, tmp_path)
    connect(scram_postgres, second)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(scram_postgres, first)
