"""Database models. The schema itself comes only from the Alembic migrations in migrations/."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, func, true
from sqlalchemy.dialects.postgresql import CIDR, INET, JSONB, MACADDR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.states import PowerState, TaskStatus, VmStatus


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


class Project(Base):
    """A tenant: VMs, tasks and idempotency keys belong to one, and its limits bound what it may use."""

    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    max_instances: Mapped[int] = mapped_column(Integer)
    max_vcpus: Mapped[int] = mapped_column(Integer)
    max_memory_mib: Mapped[int] = mapped_column(Integer)
    max_disk_gib: Mapped[int] = mapped_column(Integer)
    # The usage of its VMs that hold quota, kept by common/lifecycle.py in the same transactions.
    used_instances: Mapped[int] = mapped_column(BigInteger, default=0)
    used_vcpus: Mapped[int] = mapped_column(BigInteger, default=0)
    used_memory_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    used_disk_gib: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Token(Base):
    """An API token of a project. Only the SHA-256 of its secret is kept (the secret is random)."""

    __tablename__ = "tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str | None] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Host(Base):
    """A hypervisor host whose worker has started: its queue is read, so requests may go there."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The Celery node name of the host's worker (`worker@host`), for commands meant for it alone.
    node: Mapped[str | None] = mapped_column(String(255))


class Image(Base):
    """A base image: a volume in a host's storage pool that VM disks are overlaid on."""

    __tablename__ = "images"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    host: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(255))
    volume: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger)
    checksum_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Flavor(Base):
    """A named VM size, shared by every project (like images); `iaas-admin flavor create` makes one."""

    __tablename__ = "flavors"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Keypair(Base):
    """An SSH public key of a project, checked and fingerprinted when it was added (api/keypairs.py)."""

    __tablename__ = "keypairs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Network(Base):
    """A project's IPv4 network. Each host that runs a VM on it has it as an isolated libvirt network."""

    __tablename__ = "networks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    # PostgreSQL `cidr`, read back as text ("198.51.100.0/24").
    cidr: Mapped[str] = mapped_column(CIDR)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Nic(Base):
    """A VM's interface and the address it holds; the row goes when the VM releases its resources."""

    __tablename__ = "nics"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id"))
    network_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("networks.id"))
    position: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(MACADDR)
    # PostgreSQL `inet`, read back as text without a prefix ("198.51.100.7").
    ip: Mapped[str] = mapped_column(INET)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Vm(Base):
    __tablename__ = "vms"

    # Equal to the libvirt domain UUID, so the hypervisor and the database name a VM the same way.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    # The image's name, kept after the image is deleted (no foreign key: see migration 0004).
    image: Mapped[str] = mapped_column(String(63))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=VmStatus.PENDING)
    power_state: Mapped[str] = mapped_column(String(16), default=PowerState.UNKNOWN)
    host: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    deleted_at: Mapped[datetime | None]
    # True while its sizes count in its project's usage: cleared, once, when the VM is deleted or its
    # failed create has been compensated (common/lifecycle.py releases the usage then).
    holds_quota: Mapped[bool] = mapped_column(Boolean, server_default=true(), default=True)
    # First-boot configuration, copied at create: the worker builds the VM's NoCloud seed from it.
    user_data: Mapped[str | None] = mapped_column(Text)
    key_name: Mapped[str | None] = mapped_column(String(63))
    public_key: Mapped[str | None] = mapped_column(Text)


class Task(Base):
    """A durable request. PostgreSQL, not the Celery result backend, is the truth about its status."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    vm_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("vms.id"))
    # NULL for the tasks beat sends (scheduled reconciliations): they belong to no project.
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id"))
    # Who asked: {"token_id", "token_name", "project"}; NULL when nobody did (beat).
    requested_by: Mapped[dict[str, Any] | None]
    host: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # When the message was handed to the broker; NULL means "committed but not yet queued".
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]

    steps: Mapped[list[TaskStep]] = relationship(
        order_by="TaskStep.seq", lazy="selectin", cascade="all, delete-orphan"
    )


class TaskStep(Base):
    """The saga journal: one row per step, written before the step acts and after it ends."""

    __tablename__ = "task_steps"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    # What the undo needs, recorded before the step acts (names are deterministic, so it is known).
    undo_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    undo_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """The first answer to a request made with an `Idempotency-Key`, replayed for its retries."""

    __tablename__ = "idempotency_keys"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]


class Failpoint(Base):
    """A named point in a saga where a test makes the next step raise, or pause until cleared."""

    __tablename__ = "failpoints"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_task_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
