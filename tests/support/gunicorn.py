"""The API under gunicorn with the repository's configuration (api/gunicorn_config.py), started as
scripts/stack.sh starts it, on a free port of loopback, against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.environment import ROOT, TEST_BROKER
from tests.support.polling import poll
from tests.support.processes import free_port, terminate


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client_connections(self) -> int:
        """Established TCP connections from this machine to the server's port (/proc/net/tcp)."""
        wanted = f":{self.port:04X}"
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return sum(1 for line in lines if (f := line.split())[2].endswith(wanted) and f[3] == "01")


@contextmanager
def gunicorn_api(database_url: str, log_path: Path) -> Iterator[Server]:
    """gunicorn serving the app until the block ends; it must then exit cleanly on SIGTERM."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c", str(ROOT / "api" / "gunicorn_config.py"),
        "--bind", f"127.0.0.1:{port}",
        "api:create_app()",
    ]  # fmt: skip
    env = {**os.environ, "IAAS_DATABASE_URL": database_url, "IAAS_BROKER_URL": TEST_BROKER}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)

    def ready() -> bool | None:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
        try:
            return True if requests.get(f"{server.url}/readyz", timeout=2).status_code == 200 else None
        except requests.ConnectionError:
            return None

    try:
        poll(ready, timeout=30, what="gunicorn to answer /readyz")
        yield server
    finally:
        terminate(process)
        assert process.returncode in (0, -signal.SIGTERM), server.log()
