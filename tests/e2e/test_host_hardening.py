"""The stack as `make up` left it, inspected from outside: who each process runs as (its pid files in
RUN_DIR, its listening sockets), the modes of the secrets and the logs, and that Flower, Redis and
PostgreSQL want the generated credentials. Ports come from the variables scripts/stack.sh reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis
import requests
from sqlalchemy import make_url

from common.config import Settings
from common.secrets import read_secret
from tests.support.environment import ROOT

RUN_DIR = Path(os.environ.get("RUN_DIR", ROOT / ".run"))
SERVICE_USER = os.environ.get("IAAS_SERVICE_USER", "mini-iaas")
API_BIND = os.environ.get("IAAS_API_BIND", "127.0.0.1:8080")
FLOWER = f"http://127.0.0.1:{os.environ.get('IAAS_FLOWER_PORT', '5555')}"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def pid_of(name: str) -> int:
    path = RUN_DIR / f"{name}.pid"
    assert path.exists(), f"no {path}: run `make up` first (make test does)"
    pid = int(path.read_text())
    assert Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) is not running: `make status`, `make up`"
    return pid


def uids(pid: int) -> set[int]:
    """Real, effective, saved and file-system uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for pid {pid}")


def process_group(pid: int) -> list[int]:
    """The process and everything it spawned (scripts/stack.sh gives each a process group)."""
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            if int(fields[2]) == pid:  # the pgrp field
                members.append(int(proc.name))
    return members


def listeners(port: int) -> set[int]:
    """Pids of the processes holding a listening TCP socket on `port` (IPv4, any address)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_the_api_beat_and_flower_run_as_the_service_user_and_the_worker_as_root() -> None:
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    assert service_uid != 0
    for name in ("api", "beat", "flower"):
        group = process_group(pid_of(name))
        assert group, name
        assert {uid for pid in group for uid in uids(pid)} == {service_uid}, name
    # libvirt (qemu:///system, its polkit-guarded socket) and the console logs need root.
    for name in ("worker", "events"):
        assert uids(pid_of(name)) == {0}, name


def test_what_answers_on_the_api_and_flower_ports_is_the_service_users() -> None:
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    for port in (int(API_BIND.rsplit(":", 1)[1]), int(urlsplit(FLOWER).port or 0)):
        pids = listeners(port)
        assert pids, f"nothing listens on port {port}"
        assert {uid for pid in pids for uid in uids(pid)} == {service_uid}, port


def test_the_secrets_are_the_service_users_alone(settings: Settings) -> None:
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    folder = Path(settings.secrets_dir)
    mode = folder.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o700
    assert mode.st_uid == service_uid
    files = sorted(folder.iterdir())
    assert {"postgres", "redis", "flower", "admin-token"} <= {path.name for path in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # the admin token is root's alone: a compromised API must not read an admin's rights
        assert path.stat().st_uid == (0 if path.name == "admin-token" else service_uid), path


def readable_by_service_user(path: Path) -> bool:
    """Whether the service user can read `path` (through every folder above it), asked of the kernel."""
    check = ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "test", "-r"]
    return subprocess.run([*check, str(path)], timeout=10).returncode == 0


def test_the_service_user_reads_its_secrets_and_not_the_admin_token(settings: Settings) -> None:
    folder = Path(settings.secrets_dir)
    for name in ("postgres", "redis", "flower"):
        assert readable_by_service_user(folder / name), f"{SERVICE_USER} cannot read {folder / name}"
    assert not readable_by_service_user(folder / "admin-token")


def test_flower_wants_the_generated_credentials(settings: Settings) -> None:
    credentials = read_secret(settings.secrets_dir, "flower")
    assert credentials
    user, _, password = credentials.partition(":")
    for path in ("/api/workers", "/"):
        assert requests.get(f"{FLOWER}{path}", timeout=10).status_code == 401, path
        assert requests.get(f"{FLOWER}{path}", auth=(user, "wrong"), timeout=10).status_code == 401, path
        assert requests.get(f"{FLOWER}{path}", auth=(user, password), timeout=30).status_code == 200, path


def test_redis_refuses_a_client_without_the_password(settings: Settings) -> None:
    broker = urlsplit(settings.broker_url)
    assert broker.password, "IAAS_BROKER_URL has no password: is .run/secrets/redis missing?"
    anonymous = redis.Redis(host=broker.hostname or "127.0.0.1", port=broker.port or 6379, socket_timeout=5)
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        anonymous.ping()
    assert redis.Redis.from_url(settings.broker_url, socket_timeout=5).ping()


def scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's SCRAM-SHA-256 verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
    was made from `password` (RFC 5802: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    scheme, iterations_salt, keys = verifier.split("$")
    assert scheme == "SCRAM-SHA-256", verifier[:20]
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def test_postgresql_holds_only_the_generated_password(settings: Settings) -> None:
    """The role's stored verifier is made from the generated secret, and not from the old `iaas`: read
    from pg_authid as the `postgres` superuser, so this holds whatever pg_hba.conf trusts. (That a
    server asking for passwords refuses a wrong one is shown on a private PostgreSQL with scram,
    tests/integration/test_database_password.py.)"""
    url = make_url(settings.database_url)
    assert url.password and url.password != "iaas" and len(url.password) >= 32
    verifier = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-tA", "-v", f"name={url.username}"],
        input="SELECT rolpassword FROM pg_authid WHERE rolname = :'name'", capture_output=True, text=True,
        check=True, cwd="/", timeout=30,
    ).stdout.strip()  # fmt: skip
    assert scram_matches(verifier, url.password)
    assert not scram_matches(verifier, "iaas")
    server = {"host": url.host, "port": url.port or 5432, "user": url.username, "dbname": url.database}
    psycopg2.connect(password=url.password, **server).close()


def test_logs_are_not_world_readable(settings: Settings) -> None:
    log_dir = RUN_DIR / "log"
    logs = [log_dir / f"{name}.log" for name in ("api", "worker", "beat", "flower", "events")]
    for path in [log_dir, *logs, Path(settings.console_log_dir)]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path
