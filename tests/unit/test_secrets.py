"""The password of a service is filled into its URL from the secrets folder, and only where it belongs."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import make_url

from common.config import Settings
from common.secrets import read_secret, with_password


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    (tmp_path / "postgres").write_text("p@ss/w:rd%\n")
    (tmp_path / "redis").write_text("r3dis\n")
    return tmp_path


def test_a_url_without_password_gets_the_secret_of_its_service(secrets_dir: Path) -> None:
    database = with_password("postgresql+psycopg2://iaas@127.0.0.1:5432/iaas", secrets_dir)
    assert make_url(database).password == "p@ss/w:rd%"
    assert make_url(database).username == "iaas"
    broker = with_password("redis://127.0.0.1:6390/3", secrets_dir)
    assert redis.connection.parse_url(broker) == {
        "password": "r3dis",
        "host": "127.0.0.1",
        "port": 6390,
        "db": 3,
    }


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://iaas:given@127.0.0.1/iaas",  # a password of its own wins
        "redis://:given@127.0.0.1:6379/0",
        "redis://:@127.0.0.1:6379/0",  # an explicitly empty one too
        "postgresql:///iaas",  # the local socket: no host, nothing to fill in
        "qemu:///system",  # not a service with a secret
    ],
)
def test_a_url_that_says_otherwise_is_left_alone(url: str, secrets_dir: Path) -> None:
    assert with_password(url, secrets_dir) == url


def test_without_a_secret_file_the_url_stays_as_it_is(tmp_path: Path) -> None:
    assert with_password("redis://127.0.0.1:6379/0", tmp_path) == "redis://127.0.0.1:6379/0"
    assert read_secret(tmp_path, "flower") is None


def test_the_settings_carry_the_filled_in_urls_but_never_show_them(secrets_dir: Path) -> None:
    settings = Settings(
        secrets_dir=str(secrets_dir),
        database_url="postgresql+psycopg2://iaas@127.0.0.1:5432/iaas",
        broker_url="redis://127.0.0.1:6379/0",
    )
    assert make_url(settings.database_url).password == "p@ss/w:rd%"
    assert settings.broker_url == "redis://:r3dis@127.0.0.1:6379/0"
    assert "r3dis" not in repr(settings)
    assert "p@ss" not in repr(settings)
