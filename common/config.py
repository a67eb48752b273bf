"""Configuration from `IAAS_*` environment variables (12-factor); defaults work on one machine."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.names import DNS_LABEL_RE

# Host names become queue names (`host.<name>`) and appear in logs: DNS labels, like VM names.
HOST_NAME_RE = DNS_LABEL_RE


def _default_host() -> str:
    name = socket.gethostname().split(".")[0].lower()
    return name if HOST_NAME_RE.match(name) else "localhost"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IAAS_", env_ignore_empty=True, frozen=True, extra="ignore")

    database_url: str = "postgresql+psycopg2://iaas:iaas@127.0.0.1:5432/iaas"
    broker_url: str = "redis://127.0.0.1:6379/0"
    libvirt_uri: str = "qemu:///system"
    # `auto`: kvm when /dev/kvm exists, plain qemu (software emulation) otherwise; `test` for test:///.
    domain_type: Literal["auto", "kvm", "qemu", "test"] = "auto"
    storage_pool: str = "mini-iaas"
    storage_pool_path: str = "/var/lib/mini-iaas/pool"
    console_log_dir: str = "/var/log/mini-iaas/console"
    host: str = Field(default_factory=_default_host)
    reconcile_interval_s: int = Field(default=60, ge=5)
    # What reconciliation does about each kind of finding ("kind=action,..."); unnamed kinds only log.
    # ghost_domain=reap|log, missing_domain=mark_error|log, power_drift=fix|log,
    # orphan_volume=reap|log, stuck_task=fail|log; foreign domains are only ever reported.
    reconcile_actions: str = ""
    # Every hypervisor host beat schedules reconciliation for (comma-separated); default: IAAS_HOST.
    hosts: str = ""
    # Seconds a whole task may take; past it the task is failed and compensated.
    task_deadline_s: int = Field(default=600, ge=10)
    # Seconds one saga step (one or a few libvirt calls) may take before it counts as failed.
    step_timeout_s: float = Field(default=120, gt=0)
    # A running task's lease: renewed every third of it while its worker lives; once it runs out the
    # recovery sweep hands the task to another run. Recovery time <= lease + sweep interval.
    task_lease_s: float = Field(default=30, ge=1)
    # How often beat runs the sweeps (outbox re-send, lease recovery, idempotency-key expiry).
    sweep_interval_s: float = Field(default=10, ge=0.5)
    # A task committed this long ago and still not queued is sent by the sweep (the API that committed
    # it normally queues it at once; this grace keeps the two from racing).
    outbox_grace_s: float = Field(default=5, ge=0)
    # A pending task queued this long ago but never started is sent again (its message may be lost).
    requeue_after_s: float = Field(default=120, ge=1)
    # A graceful stop waits this long for the guest to power off before pulling the plug.
    stop_timeout_s: float = Field(default=30, ge=0)
    # Runs of one task after which it stops going forward and only compensates.
    max_attempts: int = Field(default=5, ge=1)
    # How long the worker retries its own database writes through an outage before giving up.
    db_retry_s: float = Field(default=120, ge=1)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # Failure injection for tests, e.g. "create_vm.start_domain=raise". Inert unless set.
    failpoints: str = ""
    # Also read failpoints from the `failpoints` table (tests set them at run time). Off by default.
    failpoints_table: bool = False

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
