"""From a task finishing to the client that waits for it knowing: the CLI's waiter (`iaas … --wait`,
cli/waiting.py) on the long-poll, against the same waiter polling every --poll-interval, on the
running stack, in the same run.

    make up && .venv/bin/python -m bench.wait_latency --rounds 10

Each round creates a VM and follows its task to the end, once long-polling and once polling
(alternating which goes first), and records the time from the task's `finished_at` (written by the
worker, on this machine's clock) to the moment `follow` returned, and how many GETs it took. The VMs
are deleted afterwards."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import datetime
from typing import Any

import click

from bench.util import authorize, default_api, http
from cli.client import Client
from cli.config import Config
from cli.waiting import TaskWaiter
from common.config import Settings


class CountingClient(Client):
    gets = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return super().request(*args, **kwargs)


def one_round(api: str, secret: str, long_poll: bool, poll_interval: float) -> tuple[float, int, str]:
    client = CountingClient(Config(api, secret, "bench"))
    waiter = TaskWaiter(client, long_poll_s=25 if long_poll else 0, interval=poll_interval)
    body = {
        "name": f"wait-{uuid.uuid4().hex[:8]}",
        "image": "tiny",
        "vcpus": 1,
        "memory_mib": 128,
        "disk_gib": 1,
    }
    created = client.request("POST", "/v1/vms", json=body).json()
    client.gets = 0
    task = waiter.follow(created["task"], lambda _task: None)
    returned = time.time()
    assert task["status"] == "succeeded", task.get("error")
    finished = datetime.fromisoformat(task["finished_at"]).timestamp()
    return returned - finished, client.gets, created["vm"]["id"]


@click.command()
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--poll-interval", default=0.05, show_default=True, help="The polling waiter's interval (s).")
def main(api: str, rounds: int, poll_interval: float) -> None:
    secret = authorize(Settings())
    results: dict[str, list[tuple[float, int]]] = {"long-poll": [], "polling": []}
    vm_ids = []
    for i in range(rounds):
        for mode in ("long-poll", "polling") if i % 2 == 0 else ("polling", "long-poll"):
            lag, gets, vm_id = one_round(api, secret, mode == "long-poll", poll_interval)
            results[mode].append((lag, gets))
            vm_ids.append(vm_id)
    for vm_id in vm_ids:
        http.delete(f"{api}/v1/vms/{vm_id}", timeout=10)
    for mode, runs in results.items():
        lags = sorted(lag * 1000 for lag, _ in runs)
        gets = statistics.median(g for _, g in runs)
        click.echo(
            f"{mode}: finished_at -> waiter returned median {statistics.median(lags):.1f} ms, "
            f"max {lags[-1]:.1f} ms; GETs per task median {gets:.0f} (n={rounds})"
        )


if __name__ == "__main__":
    main()
