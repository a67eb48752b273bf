"""Accept rate of `POST /v1/vms` against the bare floor (bench/baseline_app.py), measured in one run.

    make up   # with the IAAS_* variables of your stack exported
    .venv/bin/python -m bench.accept_rate --repeats 3

Starts the baseline under gunicorn (api/gunicorn_config.py, as scripts/stack.sh starts the API) on a free
loopback port, registers image `bench-noworker` on host `bench-noworker` (no worker reads its queue,
so nothing is built) in the product's database (IAAS_DATABASE_URL), and runs, alternately against
both, `wrk -t2 -c8 -d10s --latency -s <script>` whose Lua script sends a unique name per request (a
random prefix per run, the thread number, a counter). Reports accepted/s (requests minus wrk's non-2xx
count; every 2xx of this endpoint is a 202), p50 and p99 from wrk's latency distribution, each the
median over --repeats, and the ratios product/baseline. The targets (from the issue): rate ratio >= 0.5
with p99 <= 50 ms at 8 connections.

Afterwards the rows it made (VMs and tasks named with this run's prefixes, bench_accept rows) and the
Redis lists (`host.bench-noworker`, `bench.accept`) are deleted, after every repeat, so runs do not
pile up rows or let the outbox sweep re-send thousands of never-run tasks. `--api`/`--image` measure
another stack or image; rows are still deleted by name prefix, its queue then is left alone."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import redis
import requests
from sqlalchemy import delete

from bench.baseline_app import QUEUE_KEY, accepted
from bench.util import (
    NO_WORKER_HOST,
    authorize,
    default_api,
    delete_bench_vms,
    ensure_no_worker_image,
    median,
    table,
)
from common.config import Settings
from common.db import make_engine, make_session_factory, transaction
from common.queue import host_queue

ROOT = Path(__file__).resolve().parents[1]

LUA = """
-- unique names: a random prefix per run, the thread number, a counter per thread
local prefix = "%(prefix)s"
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(secret)s"}
local image = "%(image)s"
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"%%s-%%d-%%d","image":"%%s","vcpus":1,"memory_mib":128,"disk_gib":1}',
    prefix, tid, counter, image)
  return wrk.format("POST", "/v1/vms", headers, body)
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def accepted_per_s(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Read wrk's summary (`--latency`): totals, non-2xx, socket errors and the 50 %/99 % latencies."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if not (total and p50 and p99):
        raise click.ClickException(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1e3,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
    )


def run_wrk(
    url: str, image: str, prefix: str, threads: int, connections: int, duration: str, secret: str
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"prefix": prefix, "image": image, "secret": secret})
    try:
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency", "-s", script.name,
               url]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_baseline(settings: Settings, log_path: str) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn with the product's configuration (api/gunicorn_config.py), serving bench.baseline_app."""
    bind = f"127.0.0.1:{free_port()}"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    cmd = [gunicorn, "-c", str(ROOT / "api" / "gunicorn_config.py"), "--bind", bind,
           "bench.baseline_app:create_app()"]  # fmt: skip
    env = {**os.environ, "BENCH_DATABASE_URL": settings.database_url, "BENCH_REDIS_URL": settings.broker_url}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://{bind}"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise click.ClickException(f"the baseline exited; see {log_path}")
            try:
                if requests.get(f"{url}/healthz", timeout=5).ok:
                    return proc, url
            except requests.RequestException:  # not listening yet, or too busy booting to answer
                pass
            time.sleep(0.1)
        raise click.ClickException(f"the baseline did not answer in 30 s; see {log_path}")
    except BaseException:  # never leave the baseline running behind a failed start
        stop(proc)
        raise


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the arbiter and its workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cleanup(settings: Settings, sessions: object, prefixes: list[str], own_queue: str | None) -> int:
    """Delete this run's VMs and tasks (by name prefix), the baseline's rows, and the Redis lists."""
    time.sleep(1)  # requests wrk gave up on at its deadline may still be committing on the server
    removed = 0
    with transaction(sessions) as session:  # type: ignore[arg-type]
        for prefix in prefixes:
            removed += delete_bench_vms(session, prefix)
            session.execute(delete(accepted).where(accepted.c.name.like(f"{prefix}-%")))
    broker = redis.Redis.from_url(settings.broker_url)
    broker.delete(QUEUE_KEY, *([own_queue] if own_queue else []))
    broker.close()
    return removed


@click.command()
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND", help="Product API URL.")
@click.option("--image", default=None, help="Image to create from (default: register bench-noworker).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--threads", default=2, show_default=True)
@click.option("--connections", default=8, show_default=True)
@click.option("--duration", default="10s", show_default=True)
@click.option("--warmup", default="2s", show_default=True, help="An unmeasured wrk run against each first.")
def main(
    api: str, image: str | None, repeats: int, threads: int, connections: int, duration: str, warmup: str
) -> None:
    settings = Settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    secret = authorize(settings)  # every request carries a token: its check is part of what is measured
    own_queue = None
    if image is None:
        image = ensure_no_worker_image(sessions)
        own_queue = host_queue(NO_WORKER_HOST)
    log_path = str(ROOT / ".run" / "log" / "bench-baseline.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    baseline, baseline_url = start_baseline(settings, log_path)
    results: dict[str, list[WrkResult]] = {"baseline": [], "product": []}
    prefixes: list[str] = []
    targets = {"baseline": baseline_url, "product": api}
    try:
        for url in targets.values():
            prefix = f"w{secrets.token_hex(3)}"
            prefixes.append(prefix)
            run_wrk(url, image, prefix, threads, connections, warmup, secret)
        cleanup(settings, sessions, prefixes, own_queue)
        for i in range(repeats):  # alternate the order, so drift on the shared cores hits both alike
            order = list(targets.items()) if i % 2 == 0 else list(reversed(targets.items()))
            for label, url in order:
                prefix = f"b{secrets.token_hex(3)}"
                prefixes.append(prefix)
                result = run_wrk(url, image, prefix, threads, connections, duration, secret)
                results[label].append(result)
                click.echo(
                    f"repeat {i + 1}/{repeats} {label}: {result.accepted_per_s:.0f} accepted/s, p50 "
                    f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, non-2xx {result.non_2xx}, "
                    f"socket errors {result.socket_errors}",
                    err=True,
                )
                cleanup(settings, sessions, [prefix], own_queue)
    finally:
        stop(baseline)
        cleanup(settings, sessions, prefixes, own_queue)

    rows = []
    med: dict[str, dict[str, float]] = {}
    for label in ("baseline", "product"):
        rs = results[label]
        med[label] = {
            "rate": median([r.accepted_per_s for r in rs]),
            "p50": median([r.p50_ms for r in rs]),
            "p99": median([r.p99_ms for r in rs]),
        }
        rows.append([label, med[label]["rate"], med[label]["p50"], med[label]["p99"],
                     sum(r.non_2xx for r in rs), sum(r.socket_errors for r in rs)])  # fmt: skip
    b, p = med["baseline"], med["product"]
    ratio = ["ratio of the medians", p["rate"] / b["rate"], p["p50"] / b["p50"], p["p99"] / b["p99"]]
    rows.append([*ratio, "", ""])
    # Each repeat runs both back to back: the median of the per-repeat ratios cancels slow drift in
    # the machine's load (other work on the same cores) better than the ratio of the medians.
    pairs = list(zip(results["product"], results["baseline"], strict=True))
    paired = [
        "median of per-repeat ratios",
        median([pr.accepted_per_s / br.accepted_per_s for pr, br in pairs]),
        median([pr.p50_ms / br.p50_ms for pr, br in pairs]),
        median([pr.p99_ms / br.p99_ms for pr, br in pairs]),
    ]
    rows.append([*paired, "", ""])
    click.echo(
        f"\nPOST /v1/vms, wrk -t{threads} -c{connections} -d{duration} --latency, median of {repeats} "
        f"(image {image}; baseline {baseline_url})"
    )
    click.echo(table(["target", "accepted/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"], rows))
    ok_rate, ok_p99 = paired[1] >= 0.5, p["p99"] <= 50  # type: ignore[operator]
    click.echo(
        f"targets: rate ratio (per-repeat median) >= 0.5: {'met' if ok_rate else 'NOT met'}; "
        f"product p99 <= 50 ms: {'met' if ok_p99 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
