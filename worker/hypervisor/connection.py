"""The libvirt connection of a worker process: every call mini-iaas makes to libvirt goes through here
(and through lifecycle_events.py for the event listener). Teardown is idempotent: "no such
domain/volume" is success."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt

from common.config import Settings
from common.states import PowerState
from worker.hypervisor import domain_xml, network_xml
from worker.hypervisor.power import power_state_of

# What a libvirt failure raises, for callers that must not import libvirt themselves.
LibvirtError = libvirt.libvirtError

log = logging.getLogger(__name__)

_MISSING_DOMAIN = {libvirt.VIR_ERR_NO_DOMAIN}
_MISSING_VOLUME = {libvirt.VIR_ERR_NO_STORAGE_VOL}
_MISSING_NETWORK = {libvirt.VIR_ERR_NO_NETWORK}
_NOT_RUNNING = {libvirt.VIR_ERR_OPERATION_INVALID}
SHUTDOWN_POLL_S = 0.2


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised as exceptions and handled."""


libvirt.registerErrorHandler(_quiet, None)

_event_loop_lock = threading.Lock()
_event_loop_running = False
KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 3  # a hung libvirtd counts as gone after ~20 s


def ensure_event_loop() -> None:
    """libvirt's default event loop, in a daemon thread: it delivers domain events, runs keepalive
    (so a call to a hung libvirtd fails instead of hanging) and notices a closed connection at once
    (so `isAlive()` tells the truth after a libvirtd restart). Must run before connections open."""
    global _event_loop_running
    with _event_loop_lock:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:
            log.exception("libvirt event loop iteration failed")


def set_keepalive(conn: libvirt.virConnect) -> None:
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:  # local drivers such as test:/// have no keepalive
        log.debug("no keepalive on %s: %s", conn.getURI(), exc)


class Readable(Protocol):
    def read(self, length: int, /) -> bytes: ...


class HypervisorError(Exception):
    """A libvirt failure, with the libvirt message and what the operator can do."""


def _code(exc: libvirt.libvirtError) -> int:
    return int(exc.get_error_code() or 0)


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    capacity_bytes: int
    allocation_bytes: int


class Hypervisor:
    """A long-lived libvirt connection for one worker process (opened lazily, reopened when dead).

    libvirt connections are thread-safe, so the worker's threads share one."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._pools: dict[str, tuple[libvirt.virConnect, libvirt.virStoragePool]] = {}

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                ensure_event_loop()
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise HypervisorError(
                        f"cannot connect to libvirt at {self.uri}: {exc}; is libvirtd running (`make up`)?"
                    ) from exc
                set_keepalive(self._conn)
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- storage ---------------------------------------------------------------------------------

    def pool(self, settings: Settings) -> libvirt.virStoragePool:
        """The configured pool of this host, made ready once per connection (two RPCs saved per
        step). A pool destroyed behind our back makes the next volume call fail, and the saga
        compensates; a new connection (libvirtd restarted) checks it again."""
        conn = self.conn
        cached = self._pools.get(settings.storage_pool)
        if cached is not None and cached[0] is conn:
            return cached[1]
        pool = self.ensure_pool(settings.storage_pool, settings.storage_pool_path)
        self._pools[settings.storage_pool] = (conn, pool)
        return pool

    def volume_names(self, pool: libvirt.virStoragePool) -> list[str]:
        return [volume.name() for volume in pool.listAllVolumes(0)]

    def upload_volume(
        self,
        pool: libvirt.virStoragePool,
        name: str,
        source: Readable,
        size: int,
        volume_format: str = "qcow2",
    ) -> VolumeInfo:
        """A new raw-copied volume `name` with the `size` bytes read from `source`, sent through a
        libvirt stream: no file is written outside libvirt's own pool."""
        volume = pool.createXML(domain_xml.plain_volume_xml(name, size, volume_format), 0)
        stream = self.conn.newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_NO_SUPPORT or not self.uri.startswith("test:"):
                raise
            # Only libvirt's in-memory test driver (test:///) keeps no volume contents; it runs no
            # guest either, so an empty volume of the right size stands for the data there.
            log.warning("%s cannot store volume contents; %s is left empty", self.uri, name)
            return self.volume_info(volume)

        def read_chunk(_stream: libvirt.virStream, nbytes: int, reader: Readable) -> bytes:
            return reader.read(nbytes)

        try:
            stream.sendAll(read_chunk, source)
            stream.finish()
        except BaseException:
            stream.abort()
            raise
        # No pool.refresh(): it fails while another upload into the pool is running ("pool has
        # asynchronous jobs running" -- creates upload their seeds at once), and a volume's info is
        # read from its file anyway.
        return self.volume_info(pool.storageVolLookupByName(name))

    def ensure_pool(self, name: str, path: str) -> libvirt.virStoragePool:
        """The directory pool our volumes live in: defined, built, started and autostarted."""
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            log.info("defining storage pool %s at %s", name, path)
            pool = self.conn.storagePoolDefineXML(domain_xml.dir_pool_xml(name, path), 0)
            pool.build(0)
            pool.setAutostart(1)
        if not pool.isActive():
            pool.create(0)
        return pool

    def find_volume(self, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_VOLUME:
                return None
            raise

    def volume_info(self, volume: libvirt.virStorageVol) -> VolumeInfo:
        _kind, capacity, allocation = volume.info()
        return VolumeInfo(volume.name(), volume.path(), capacity, allocation)

    def create_overlay_volume(
        self, pool: libvirt.virStoragePool, name: str, capacity_bytes: int, backing_path: str
    ) -> str:
        """A qcow2 overlay backed by an image volume. Finding it already there counts as done."""
        existing = self.find_volume(pool, name)
        if existing is not None:
            return str(existing.path())
        xml = domain_xml.overlay_volume_xml(name, capacity_bytes, backing_path, "qcow2")
        return str(pool.createXML(xml, 0).path())

    def delete_volume(self, pool: libvirt.virStoragePool, name: str) -> bool:
        """Delete a volume; False when it was already gone."""
        volume = self.find_volume(pool, name)
        if volume is None:
            return False
        try:
            volume.delete(0)
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_VOLUME:
                return False
            raise
        return True

    # --- networks --------------------------------------------------------------------------------

    def ensure_network(self, name: str) -> None:
        """The isolated network `name`, defined, autostarted (it comes back with the host) and active.
        Finding it so already counts as done."""
        try:
            network = self.conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if _code(exc) not in _MISSING_NETWORK:
                raise
            log.info("defining isolated network %s", name)
            network = self.conn.networkDefineXML(network_xml.isolated_network_xml(name))
            network.setAutostart(1)
        if not network.isActive():
            network.create()

    def remove_network(self, name: str) -> bool:
        """Stop and undefine a network; False when it was already gone."""
        try:
            network = self.conn.networkLookupByName(name)
            if network.isActive():
                network.destroy()
            network.undefine()
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_NETWORK:
                return False
            raise
        return True

    def network_names(self) -> list[str]:
        return [network.name() for network in self.conn.listAllNetworks(0)]

    def networks_in_use(self) -> set[str]:
        """The networks some defined domain (running or not) has an interface on."""
        used: set[str] = set()
        for domain in self.conn.listAllDomains(0):
            try:
                used.update(domain_xml.interface_networks(domain.XMLDesc(0)))
            except libvirt.libvirtError as exc:
                if _code(exc) not in _MISSING_DOMAIN:  # undefined since it was listed
                    raise
        return used

    # --- domains ---------------------------------------------------------------------------------

    def find_domain(self, domain_uuid: uuid.UUID) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByUUIDString(str(domain_uuid))
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_DOMAIN:
                return None
            raise

    def define_domain(self, xml: str) -> libvirt.virDomain:
        # Defining again with the same UUID and name replaces the definition: safe to repeat.
        return self.conn.defineXML(xml)

    def start_domain(self, domain_uuid: uuid.UUID) -> None:
        domain = self.find_domain(domain_uuid)
        if domain is None:
            raise HypervisorError(f"domain {domain_uuid} is not defined; it cannot be started")
        if not domain.isActive():
            domain.create()

    def stop_domain(self, domain_uuid: uuid.UUID) -> bool:
        """Power off at once (like pulling the plug). False when it was missing or not running."""
        domain = self.find_domain(domain_uuid)
        if domain is None or not domain.isActive():
            return False
        try:
            domain.destroy()
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_DOMAIN | _NOT_RUNNING:
                return False
            raise
        return True

    def undefine_domain(self, domain_uuid: uuid.UUID) -> bool:
        """Stop if needed, then remove the definition. False when it was already gone."""
        self.stop_domain(domain_uuid)
        domain = self.find_domain(domain_uuid)
        if domain is None:
            return False
        # Also drop a managed-save image and snapshot metadata, or undefine refuses. (No NVRAM flag:
        # our domains boot with BIOS, and the test driver rejects it.)
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        try:
            domain.undefineFlags(flags)
        except libvirt.libvirtError as exc:
            if _code(exc) in _MISSING_DOMAIN:
                return False
            raise
        return True

    def shutdown_domain(self, domain_uuid: uuid.UUID, timeout_s: float, force: bool = False) -> str:
        """Graceful power-off (ACPI power button), forced once `timeout_s` passes or when `force`.
        Returns how it went: "already_off", "graceful" or "forced"."""
        domain = self.find_domain(domain_uuid)
        if domain is None or not domain.isActive():
            return "already_off"
        if not force:
            try:
                domain.shutdown()
            except libvirt.libvirtError as exc:
                if _code(exc) not in _NOT_RUNNING:
                    raise
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if not domain.isActive():
                    return "graceful"
                time.sleep(SHUTDOWN_POLL_S)  # the guest takes its time; libvirt has no blocking wait
            if not domain.isActive():  # it went off during the last poll's sleep (or a 0 s timeout)
                return "graceful"
            log.info("domain %s ignored the power button for %.0f s; forcing it off", domain_uuid, timeout_s)
        self.stop_domain(domain_uuid)
        return "forced"

    def reboot_domain(self, domain_uuid: uuid.UUID, force: bool = False) -> str:
        """Graceful reboot (ACPI: libvirt restarts the guest when it powers off), or a hard reset.
        Returns which: "acpi" (a request the guest may ignore; libvirt does not wait for it) or
        "reset" (done by the hypervisor when the call returns)."""
        domain = self.find_domain(domain_uuid)
        if domain is None or not domain.isActive():
            raise HypervisorError(f"domain {domain_uuid} is not running; it cannot be rebooted")
        if force:
            domain.reset(0)
            return "reset"
        domain.reboot(0)
        return "acpi"

    def domain_states(self) -> list[tuple[str, str, PowerState]]:
        """(uuid, name, power state) of every domain, from one call."""
        return [
            (dom.UUIDString(), dom.name(), power_state_of(st["state.state"], st.get("state.reason", -1)))
            for dom, st in self.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        ]

    def owner_of(self, domain_uuid: str, host: str) -> uuid.UUID | None:
        """The VM id in a domain's ownership tag when mini-iaas host `host` made it; None for a domain
        of anyone else, or one gone since it was listed."""
        try:
            xml = self.conn.lookupByUUIDString(domain_uuid).XMLDesc(0)
        except libvirt.libvirtError:
            return None
        return domain_xml.owner_vm_id(xml, host)

    def power_state(self, domain_uuid: uuid.UUID) -> PowerState:
        domain = self.find_domain(domain_uuid)
        return PowerState.UNKNOWN if domain is None else power_state_of(*domain.state())

    def inventory(self, pool_name: str) -> dict[str, Any]:
        """Every domain, every volume of our pool and every network, each from one listing call."""
        domains = [
            {
                "name": domain.name(),
                "uuid": domain.UUIDString(),
                "active": bool(domain.isActive()),
                "owner_vm_id": _owner(domain),
            }
            for domain in self.conn.listAllDomains(0)
        ]
        try:
            pool = self.conn.storagePoolLookupByName(pool_name)
            volumes = sorted(volume.name() for volume in pool.listAllVolumes(0))
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            volumes = []
        return {"domains": domains, "volumes": volumes, "networks": sorted(self.network_names())}


def _owner(domain: libvirt.virDomain) -> str | None:
    vm_id = domain_xml.owner_vm_id(domain.XMLDesc(0))
    return str(vm_id) if vm_id else None
