"""A stop's and a reboot's task result say how they went, on libvirt's test driver (in process, a
private node file per test). Its guests obey the ACPI power button at once, so the guest that ignores
it is a proxy of the domain whose `shutdown()` does nothing: the narrowest seam."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from worker.hypervisor.connection import Hypervisor
from worker.sagas import power
from worker.sagas.context import VmContext

GUEST = uuid.UUID("0b9e2a64-8c51-4d07-9a55-3c0e1f1c2b7a")
NODE = f"""<node>
  <domain type='test'>
    <name>guest</name><uuid>{GUEST}</uuid><memory>65536</memory><os><type>hvm</type></os>
  </domain>
</node>
"""


@pytest.fixture
def hv(tmp_path: Path) -> Any:
    (tmp_path / "node.xml").write_text(NODE)
    hypervisor = Hypervisor(f"test://{tmp_path / 'node.xml'}")
    yield hypervisor
    hypervisor.close()


def context(hv: Hypervisor, stop_timeout_s: float = 5, **options: Any) -> VmContext:
    settings = SimpleNamespace(stop_timeout_s=stop_timeout_s)
    return cast(VmContext, SimpleNamespace(vm_id=GUEST, hv=hv, settings=settings, options=options))


class DeafGuest:
    """The domain, except that the guest ignores the power button."""

    def __init__(self, domain: Any) -> None:
        self._domain = domain

    def shutdown(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._domain, name)


def test_a_guest_that_obeys_the_power_button_stops_gracefully(hv: Hypervisor) -> None:
    result = power.shutdown_domain(context(hv))
    assert result["shutdown"] == "graceful" and result["waited_s"] < 1
    assert power.shutdown_domain(context(hv))["shutdown"] == "already_off"


def test_a_forced_stop_says_so(hv: Hypervisor) -> None:
    assert power.shutdown_domain(context(hv, force=True))["shutdown"] == "forced"
    assert not hv.find_domain(GUEST).isActive()  # type: ignore[union-attr]


def test_a_guest_that_ignores_the_power_button_is_forced_after_the_timeout(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hv.find_domain
    monkeypatch.setattr(hv, "find_domain", lambda domain_uuid: DeafGuest(real(domain_uuid)))
    result = power.shutdown_domain(context(hv, stop_timeout_s=0.5))
    assert result["shutdown"] == "forced"
    assert result["waited_s"] >= 0.5
    assert not real(GUEST).isActive()  # type: ignore[union-attr]


def test_a_reboot_says_which(hv: Hypervisor) -> None:
    assert power.reboot_domain(context(hv)) == {"reboot": "acpi", "confirmed": False}
    assert power.reboot_domain(context(hv, force=True)) == {"reboot": "reset", "confirmed": True}
