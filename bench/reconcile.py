"""Reconciliation cost at scale: N VMs as database rows and as domains (and volumes) in libvirt's
test driver, one reconcile of the host against one bare listAllDomains at the same N, same run.

    .venv/bin/python -m bench.reconcile --sizes 1000,10000

Reports the median of --repeat runs, the ratio to the bare listing, and how reconcile time grows
from the smallest to the largest N (linear growth means the time ratio tracks the N ratio)."""

from __future__ import annotations

import statistics
import time
import uuid

import click
import libvirt
import psycopg2
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, text

from common.config import Settings
from common.db import database_url_for, make_engine, make_session_factory, transaction
from common.models import Image, Vm
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor.connection import Hypervisor
from worker.reconcile.run import reconcile_host

# The stack's role, with its generated password (IAAS_DATABASE_URL, IAAS_SECRETS_DIR), in a database of
# the bench's own.
ADMIN_URL = database_url_for(Settings().database_url, "postgres", driver="postgresql")
DB_URL = database_url_for(Settings().database_url, "iaas_bench")
HOST = "bench"


def fresh_database() -> None:
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS iaas_bench WITH (FORCE)")
        cur.execute("CREATE DATABASE iaas_bench")
    admin.close()
    config = Config("alembic.ini")
    config.attributes["database_url"] = DB_URL
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def populate(hv: Hypervisor, settings: Settings, sessions: object, n: int) -> None:
    """N VMs in both places; 1 % of the domains powered off behind the database's back (drift)."""
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    rows = []
    for i in range(n):
        vm_id = uuid.uuid4()
        spec = libvirt_xml.DomainSpec(vm_id, f"vm-{i}", "tiny", 1, 64, f"/pool/vm-{vm_id}.qcow2",
                                      "/dev/null", "test", host=HOST)  # fmt: skip
        domain = hv.conn.defineXML(libvirt_xml.domain_xml(spec))
        if i % 100:
            domain.create()
        pool.createXML(libvirt_xml.plain_volume_xml(libvirt_xml.vm_volume_name(vm_id), 1 << 20, "qcow2"), 0)
        rows.append({"id": vm_id, "name": f"vm-{i}", "image": "tiny", "vcpus": 1, "memory_mib": 64,
                     "disk_gib": 1, "status": "running", "power_state": "running", "host": HOST})  # fmt: skip
    with transaction(sessions) as session:  # type: ignore[arg-type]
        session.execute(insert(Vm), rows)


def timed(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(n: int, repeat: int) -> tuple[float, float, float]:
    fresh_database()
    uri = "test:///default"
    settings = Settings(database_url=DB_URL, libvirt_uri=uri, host=HOST, storage_pool=f"bench-{n}",
                        storage_pool_path=f"/bench-{n}")  # fmt: skip
    engine = make_engine(DB_URL)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        session.add(Image(name="tiny", host=HOST, pool="p", volume="v", path="/p/v", format="qcow2",
                          size_bytes=1, virtual_size_bytes=1, checksum_sha256="0" * 64))  # fmt: skip
    hv = Hypervisor(uri)
    for domain in hv.conn.listAllDomains(0):  # the test driver's sample domain, and earlier sizes'
        if domain.isActive():
            domain.destroy()
        domain.undefine()
    click.echo(f"N={n}: populating ...", err=True)
    populate(hv, settings, sessions, n)
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    bare = timed(lambda: hv.conn.listAllDomains(0), repeat)
    stats = timed(lambda: hv.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0), repeat)
    last: dict[str, object] = {}

    def run() -> None:
        last.update(reconcile_host(hv, sessions, engine, settings, uuid.uuid4()))

    recon = timed(run, repeat)
    assert last["checked"] == {"domains": n, "volumes": n, "vms": n}, last["checked"]
    assert last["counts"] == {"power_drift": n // 100}, last["counts"]
    click.echo(
        f"N={n:>6}: reconcile {recon * 1000:8.1f} ms | listAllDomains {bare * 1000:7.2f} ms "
        f"(ratio {recon / bare:6.1f}) | getAllDomainStats {stats * 1000:7.2f} ms | "
        f"{recon / n * 1e6:5.1f} us per VM | findings {last['counts']}"
    )
    engine.dispose()
    return recon, bare, stats


@click.command()
@click.option("--sizes", default="1000,10000", show_default=True)
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(1, 50))
def main(sizes: str, repeat: int) -> None:
    results = [(n, *measure(n, repeat)) for n in (int(s) for s in sizes.split(","))]
    if len(results) > 1:
        (n0, t0, b0, _), (n1, t1, b1, _) = results[0], results[-1]
        click.echo(f"growth N x{n1 / n0:.0f}: reconcile x{t1 / t0:.1f}, listAllDomains x{b1 / b0:.1f}")


if __name__ == "__main__":
    main()
