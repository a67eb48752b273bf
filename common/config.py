"""Configuration from `IAAS_*` environment variables (12-factor); defaults work on one machine.

Every field carries a `description`: `common/config_reference.py` renders them as
docs/configuration.md (`make docs`), and a unit test fails when that file is stale."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.names import DNS_LABEL_RE
from common.secrets import with_password

# Host names become queue names (`host.<name>`) and appear in logs: DNS labels, like VM names.
HOST_NAME_RE = DNS_LABEL_RE


# docs/configuration.md shows this default by the docstring: the value depends on the machine.
def _default_host() -> str:
    """this machine's short host name in lower case (`localhost` if that is not a DNS label)"""
    name = socket.gethostname().split(".")[0].lower()
    return name if HOST_NAME_RE.match(name) else "localhost"


def _default_secrets_dir() -> str:
    """`.run/secrets` in the checkout (the Makefile exports `$(RUN_DIR)/secrets`)"""
    return str(Path(__file__).resolve().parents[1] / ".run" / "secrets")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IAAS_", env_ignore_empty=True, frozen=True, extra="ignore")

    secrets_dir: str = Field(
        default_factory=_default_secrets_dir,
        description="Directory of the passwords `make up` generates once (`scripts/ensure-secrets.sh`): "
        "`postgres`, `redis` and `flower` (`user:password`), 0600 files in a 0700 directory owned by the "
        "service user. Every process fills in the password of `IAAS_DATABASE_URL` and `IAAS_BROKER_URL` "
        "from here when the URL carries none. Change it only to keep the secrets elsewhere (then export "
        "it to every process and to `make`).",
    )
    database_url: str = Field(
        default="postgresql+psycopg2://iaas@127.0.0.1:5432/iaas",
        validate_default=True,
        repr=False,  # it carries the password once filled in
        description="SQLAlchemy URL of the PostgreSQL database, the only source of truth. Without a "
        "password in it, the password is read from `IAAS_SECRETS_DIR/postgres`. For a local URL `make up` "
        "(`scripts/ensure-database.sh`) creates the role (`CREATEDB`) and the database through the local "
        "socket as `postgres`, sets the role's password to that secret on every run, then migrates with "
        "Alembic; the services log in over TCP with it, as Debian's stock `pg_hba.conf` "
        "(`scram-sha-256` on 127.0.0.1) demands. Change it for a database on another machine (create the "
        "role and database there yourself) or another role.",
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validate_default=True,
        repr=False,
        description="URL of Redis, the Celery broker. Without a password in it, the password is read from "
        "`IAAS_SECRETS_DIR/redis`; for a local URL `scripts/start-services.sh` starts Redis on its host "
        "and port with that password, or sets it. It carries only wake-up calls; task status lives in "
        "PostgreSQL. Change it when Redis runs elsewhere, on another port, or another Redis database is "
        "wanted.",
    )
    libvirt_uri: str = Field(
        default="qemu:///system",
        description="libvirt connection URI of the worker and `iaas-events`. `test:///default` is "
        "libvirt's in-process test driver (the integration tests use it); change it only for that or "
        "for a libvirtd reached another way.",
    )
    domain_type: Literal["auto", "kvm", "qemu", "test"] = Field(
        default="auto",
        description="Domain type of the guests: `kvm`, `qemu` (software emulation, TCG), `test` (the "
        "test driver) or `auto`: `test` for `test:` URIs, else `kvm` when `/dev/kvm` is read- and "
        "writable, else `qemu`. The Makefile sets it from `.run/domain-type` (written once by "
        "`scripts/detect-domain-type.sh`, which boots a guest under KVM to see whether KVM really works) "
        "unless you set it yourself; set it to `qemu` where KVM accepts guests but cannot run them.",
    )
    storage_pool: str = Field(
        default="mini-iaas",
        description="Name of the libvirt storage pool that holds images and VM disks (a `dir` pool, "
        "defined, built and autostarted on first use). Change it only to keep several installations "
        "apart on one libvirtd.",
    )
    storage_pool_path: str = Field(
        default="/var/lib/mini-iaas/pool",
        description="Directory of that storage pool, used when mini-iaas has to define the pool (an "
        "existing pool keeps its own directory). Change it to put the disks on another file system.",
    )
    console_log_dir: str = Field(
        default="/var/log/mini-iaas/console",
        description="Directory where virtlogd writes each guest's serial console, as `<vm id>.log`; the "
        "destroy saga deletes that file. Change it to keep console logs elsewhere.",
    )
    host: str = Field(
        default_factory=_default_host,
        description="Name of this hypervisor host, a lowercase DNS label (`a-z`, `0-9`, `-`, at most 63 "
        "characters). Its worker consumes the queue `host.<IAAS_HOST>`; images imported here and the VMs "
        "built on them belong to it; `POST /v1/actions/reconcile` without a host reconciles the API's "
        "`IAAS_HOST`. Set it when the machine's host name is not a DNS label or not the name wanted; it "
        "must stay the same for the life of the host's VMs.",
    )
    reconcile_interval_s: int = Field(
        default=60,
        ge=5,
        description="Seconds between the reconciliations beat sends for each host of `IAAS_HOSTS`; a "
        "message not started within that time is dropped. Read by beat. Lower it to catch out-of-band "
        "changes sooner, raise it for hosts with very many VMs.",
    )
    reconcile_actions: str = Field(
        default="",
        description="What reconciliation does about each kind of finding, `kind=action,…`: "
        "`ghost_domain=reap|log`, `missing_domain=mark_error|log`, `power_drift=fix|log`, "
        "`orphan_volume=reap|log`, `stuck_task=fail|log`; unnamed kinds (all of them when empty) only "
        "log, and foreign domains are only ever reported. Example: "
        "`ghost_domain=reap,missing_domain=mark_error,power_drift=fix,orphan_volume=reap,stuck_task=fail`. "
        "Read by the worker, which refuses to start on a malformed value. Set it once the logged findings "
        "are trusted.",
    )
    hosts: str = Field(
        default="",
        description="Comma-separated hypervisor hosts beat schedules reconciliation for, each a lowercase "
        "DNS label; empty means just `IAAS_HOST`. Read by beat. Set it when one beat serves several hosts.",
    )
    task_deadline_s: int = Field(
        default=600,
        ge=10,
        description="Seconds a whole task may take, counted from its creation; no step runs past it, and "
        "then the task is compensated and fails. Redis redelivers an unacknowledged message after twice "
        "this. Raise it for slow hosts or large disks.",
    )
    step_timeout_s: float = Field(
        default=120,
        gt=0,
        description="Seconds one saga step (one or a few libvirt calls), or one undo attempt, may take "
        "before it counts as failed, so that a wedged libvirtd cannot hold a task. Must stay above "
        "`IAAS_STOP_TIMEOUT_S`. Raise it only if normal steps come close to it.",
    )
    task_lease_s: float = Field(
        default=30,
        ge=1,
        description="Seconds of a running task's lease, renewed every third of it while its worker lives; "
        "once it runs out, the sweep hands the task to another run. A dead worker's task is recovered "
        "within this plus `IAAS_SWEEP_INTERVAL_S`. Lower it for faster recovery, at the cost of more "
        "heartbeat writes.",
    )
    sweep_interval_s: float = Field(
        default=10,
        ge=0.5,
        description="Seconds between the sweeps beat sends (lease recovery, outbox re-send, "
        "idempotency-key expiry). Lower it for faster recovery after a worker death or a broker outage.",
    )
    outbox_grace_s: float = Field(
        default=5,
        ge=0,
        description="Seconds after its commit before the sweep sends a task that was never queued (Redis "
        "was down, or the API died after its commit). The API that committed a task normally queues it "
        "at once; this grace keeps the two from racing. Rarely worth changing.",
    )
    requeue_after_s: float = Field(
        default=120,
        ge=1,
        description="Seconds after it was queued before a `pending` task that never started is sent "
        "again (its message may have been lost with Redis). Raise it when queues are routinely longer.",
    )
    stop_timeout_s: float = Field(
        default=30,
        ge=0,
        description="Seconds a graceful stop waits for the guest to power off after the ACPI power button "
        "before pulling the plug. Must be shorter than `IAAS_STEP_TIMEOUT_S` (a stop is one step). Raise "
        "it for guests that take long to shut down.",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="Runs of one task after which it stops going forward and only compensates, so that a "
        "task that keeps killing its worker cannot loop. Rarely worth changing.",
    )
    db_retry_s: float = Field(
        default=120,
        ge=1,
        description="Seconds the worker (and `iaas-events`) retries its own database writes through a "
        "PostgreSQL outage before giving up. Raise it where database fail-overs take longer.",
    )
    worker_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads of the worker, i.e. tasks run at once per host. Raise it for hosts that "
        "create or destroy many VMs at a time.",
    )
    console_timeout_s: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Seconds the API waits for the worker of a VM's host to send the end of the VM's "
        "console log (`GET /v1/vms/<id>/console`) before it answers 503 `host_unavailable`; the request "
        "holds an API connection that long. Raise it for hosts far away or under heavy load.",
    )
    token_cache_s: float = Field(
        default=5,
        ge=0,
        le=300,
        description="Seconds the API remembers that a token is valid, so that a call costs no database "
        "read for its token; a revoked token is refused at most this long after `iaas-admin token "
        "revoke` (expiry is checked on every call). 0 reads the token on every call.",
    )
    retention_days: float = Field(
        default=30,
        gt=0,
        description="Days a finished task (with its steps) and a deleted VM's row are kept; the sweep "
        "purges older ones. Lower it to keep the database small, raise it for a longer history.",
    )
    retention_batch: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Rows the sweep purges per statement, so that purging a large backlog never holds "
        "long locks; each sweep purges at most ten such batches of each kind. Rarely worth changing.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How the API, the worker and `iaas-events` write their log lines: `text` (one "
        "readable line each) or `json` (one JSON object per line, for a log collector). Either way a line "
        "written while a task runs carries its task id, VM id and kind.",
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        description="Address the metrics servers of the worker and `iaas-events` listen on (the API "
        "serves `GET /metrics` on its own bind). Metrics are not secret but tell what runs: keep them on "
        "loopback or an internal interface that only Prometheus reaches.",
    )
    worker_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus metrics (saga and step durations, task outcomes, "
        "reconcile findings) on `IAAS_METRICS_ADDRESS`; 0 turns it off (the tests do). One worker per "
        "host, so one port; change it when the port is taken.",
    )
    events_metrics_port: int = Field(
        default=9102,
        ge=0,
        le=65535,
        description="Port of `iaas-events`' Prometheus metrics (event-to-database lag, events, "
        "reconnections) on `IAAS_METRICS_ADDRESS`; 0 turns it off. Change it when the port is taken.",
    )
    failpoints: str = Field(
        default="",
        description="Failure injection for tests, comma-separated `<saga>.<step>[.done]=raise` or "
        "`=pause`, e.g. `create_vm.start_domain=raise` (see [Failpoints](architecture.md#failpoints)); a "
        "pause set here can never be cleared. Inert unless set; a malformed value stops the worker at start. "
        "Leave it empty outside tests.",
    )
    failpoints_table: bool = Field(
        default=False,
        description="Also read failpoints from the `failpoints` table, which tests change while the "
        "worker runs. Leave it off outside tests.",
    )

    @field_validator("database_url", "broker_url")
    @classmethod
    def _password_from_secrets(cls, value: str, info: ValidationInfo) -> str:
        return with_password(value, info.data.get("secrets_dir") or _default_secrets_dir())

    @property
    def host_list(self) -> list[str]:
        return [h.strip() for h in self.hosts.split(",") if h.strip()] or [self.host]

    @field_validator("hosts")
    @classmethod
    def _hosts_are_dns_labels(cls, value: str) -> str:
        bad = [h for h in (part.strip() for part in value.split(",")) if h and not HOST_NAME_RE.match(h)]
        if bad:
            raise ValueError(f"IAAS_HOSTS: {bad} are not lowercase DNS labels")
        return value

    @model_validator(mode="after")
    def _a_stop_fits_in_its_step(self) -> Settings:
        if self.stop_timeout_s >= self.step_timeout_s:
            raise ValueError(
                "IAAS_STOP_TIMEOUT_S must be shorter than IAAS_STEP_TIMEOUT_S (a stop is one step)"
            )
        return self

    @field_validator("host")
    @classmethod
    def _host_is_dns_label(cls, value: str) -> str:
        if not HOST_NAME_RE.match(value):
            raise ValueError("IAAS_HOST must be a lowercase DNS label (a-z, 0-9, '-'; at most 63 characters)")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
