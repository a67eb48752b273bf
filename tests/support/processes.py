"""Real mini-iaas processes for tests: celery workers (and beat) and the event listener, started as
subprocesses."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from common.config import Settings
from common.queue import make_celery
from tests.support.environment import INJECTED, ROOT
from tests.support.polling import poll


def settings_env(settings: Settings) -> dict[str, str]:
    return {f"IAAS_{name.upper()}": str(value) for name, value in settings.model_dump().items()}


def iaas_admin(settings: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`iaas-admin ARGS…` as an operator runs it: a process of this checkout configured by `settings`."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    return run


def spawn(args: list[str], settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """A mini-iaas process of this checkout's Python, configured by `settings`, logging to a file."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def terminate(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a warm shutdown), SIGKILL after 20 s; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


@dataclass
class WorkerProcess:
    """A real `celery worker` subprocess consuming one host queue."""

    settings: Settings
    process: subprocess.Popen[bytes]
    nodename: str
    log_path: Path
    metrics_port: int = 0  # its Prometheus metrics on 127.0.0.1, when started with one

    def control(self, command_name: str) -> Any:
        celery = make_celery(self.settings)
        try:
            replies = celery.control.broadcast(
                command_name, reply=True, destination=[self.nodename], timeout=5
            )
        finally:
            celery.close()
        assert replies, f"worker {self.nodename} did not answer {command_name}; see {self.log_path}"
        return next(iter(replies[0].values()))

    def inventory(self) -> dict[str, Any]:
        """What the worker's libvirt holds: every domain and every volume in our pool."""
        return self.control("hypervisor_inventory")  # type: ignore[no-any-return]

    def stop(self) -> None:
        terminate(self.process)


def start_worker(
    settings: Settings, log_dir: Path, nodename: str | None = None, metrics_port: int = 0
) -> WorkerProcess:
    """A worker under `nodename` (a restart of a worker that died keeps its node name, as a service
    on a real host does), or under a fresh one; serving its metrics on `metrics_port` if given."""
    nodename = nodename or f"{settings.host}-{uuid.uuid4().hex[:6]}@localhost"
    log_path = log_dir / f"worker-{settings.host}.log"
    args = [
        "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool", "threads", "--concurrency", "2", "--hostname", nodename,
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip
    process = spawn(args, settings.model_copy(update={"worker_metrics_port": metrics_port}), log_path)
    worker = WorkerProcess(settings, process, nodename, log_path, metrics_port)
    celery = make_celery(settings)

    def answered() -> bool | None:
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}; see {log_path}")
        return True if celery.control.ping(destination=[nodename], timeout=0.5) else None

    try:
        poll(answered, timeout=30, what=f"worker {nodename} to answer ping")
    except BaseException:
        worker.stop()
        raise
    finally:
        celery.close()
    return worker


def kill(worker: WorkerProcess) -> None:
    """SIGKILL: no warm shutdown, no message requeue, no last database write."""
    INJECTED["worker SIGKILLs"] += 1
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=10)


@dataclass
class BeatProcess:
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        terminate(self.process)


def start_beat(settings: Settings, log_dir: Path) -> BeatProcess:
    args = [
        "-m", "celery", "-A", "common.celery_app", "beat",
        "--schedule", str(log_dir / f"beat-{uuid.uuid4().hex[:6]}"), "--loglevel", "INFO",
    ]  # fmt: skip
    return BeatProcess(spawn(args, settings, log_dir / "beat.log"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateRedis:
    """A Redis server of the test's own on loopback, to stop and start without touching the shared one.
    It has a password of its own, made up here (not the stack's secret: the server is private to one
    test), which its URL carries; redis-server reads it with its configuration from standard input."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        config = f'bind 127.0.0.1\nport {self.port}\nsave ""\nappendonly no\nrequirepass "{self.password}"\n'
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "-"], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
            )
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        poll(lambda: True if _pings(client) else None, timeout=10, what=f"redis on port {self.port}")

    def stop(self, *, outage: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            INJECTED["broker outages"] += outage
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a scratch folder, its own port), so a test
    can stop and start it under load without touching the machine's shared server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        assert bindirs, (
            "PostgreSQL server binaries not found under /usr/lib/postgresql (make up installs them)"
        )
        self.bin = bindirs[-1]
        self.data = root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/iaas"

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=60, cwd="/"
        )

    def init(self, host_auth: str = "trust") -> None:
        """initdb, start, and a database `iaas`. Through its socket (in `root`) `postgres` needs no
        password; over TCP `host_auth` applies (`scram-sha-256` is Debian's own default)."""
        self.root.mkdir(parents=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth-local=trust", f"--auth-host={host_auth}",
            "-U", "postgres", "--no-sync",
        )  # fmt: skip
        self.start()
        self._as_postgres(str(self.bin / "createdb"), "-h", str(self.root), "-p", str(self.port), "iaas")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, *, outage: bool = True) -> None:
        if outage:  # a teardown is no fault: no line "0 database outages" in the summary
            INJECTED["database outages"] += 1
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop(outage=False)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class EventsProcess:
    """A real `iaas-events` subprocess: the libvirt lifecycle-event listener of one host."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connections(self) -> int:
        """How often it has (re)connected to libvirt and registered its lifecycle callback."""
        return self.log().count("listening for lifecycle events")

    def last_event_at(self, domain_uuid: uuid.UUID, event: str) -> float | None:
        """When (epoch seconds, from its log) it last received `event` (e.g. `stopped`) for a domain."""
        marker = f"({domain_uuid}): {event}/"
        lines = [line for line in self.log().splitlines() if marker in line]
        if not lines:
            return None
        stamp = datetime.strptime(lines[-1][:23], "%Y-%m-%d %H:%M:%S,%f")  # logging's asctime, local
        return stamp.timestamp()

    def stop(self) -> int:
        """SIGTERM, then its exit code (SIGKILL after 20 s gives -9)."""
        return terminate(self.process)


def start_events(settings: Settings, log_dir: Path) -> EventsProcess:
    """Start the listener and wait until it listens (its start-up resync is queued by then)."""
    log_path = log_dir / f"events-{settings.host}-{uuid.uuid4().hex[:6]}.log"
    events = EventsProcess(spawn(["-m", "worker.events.listener"], settings, log_path), log_path)

    def listening() -> bool | None:
        if events.process.poll() is not None:
            raise AssertionError(f"iaas-events exited with {events.process.returncode}; see {log_path}")
        return True if "resync:" in events.log() else None

    try:
        poll(listening, timeout=30, what=f"iaas-events to listen (log {log_path})")
    except BaseException:
        events.stop()
        raise
    return events
