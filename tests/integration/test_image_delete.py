"""`iaas-admin image delete` on the real PostgreSQL and libvirt's test driver: refused while a VM that is
not deleted uses the image, naming how many and which; otherwise the volume and the row go. And
`iaas-admin flavor create|list` as an operator runs them."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from common.config import Settings
from common.db import transaction
from common.models import Image
from tests.integration.helpers import vm_body
from tests.support.processes import iaas_admin
from tests.support.testdriver import POOL
from worker.hypervisor.connection import Hypervisor
from worker.images import ImageDeleteError, delete_image

pytestmark = pytest.mark.usefixtures("idle_host")  # no worker: VMs stay pending

VOLUME = "image-tiny.qcow2"  # the test driver's node file holds it (tests/support/testdriver.py)


@pytest.fixture
def idle(settings: Settings) -> Settings:
    """The settings of the host the `tiny` image is on here (idle_host: no worker serves it)."""
    return settings.model_copy(update={"host": "itest-idle"})


@pytest.fixture
def admin_cli(idle: Settings, database: str) -> Any:
    """`iaas-admin` run as an operator runs it, on the image's host."""
    return iaas_admin(idle)


@pytest.fixture
def hv(settings: Settings) -> Any:
    hypervisor = Hypervisor(settings.libvirt_uri)  # the test driver's state lives in this connection
    yield hypervisor
    hypervisor.close()


def image_names(sessions: Any) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Image.name)))


def test_an_image_in_use_is_kept_and_the_refusal_names_its_vms(
    client: FlaskClient, sessions: Any, idle: Settings, hv: Hypervisor, admin_cli: Any
) -> None:
    ids = [client.post("/v1/vms", json=vm_body(f"user-{i}")).get_json()["vm"]["id"] for i in range(2)]
    with pytest.raises(ImageDeleteError) as refused:
        delete_image(hv, sessions, idle, "tiny")
    message = str(refused.value)
    assert "used by 2 VMs" in message and all(vm_id in message for vm_id in ids)
    assert "itest/user-0" in message and "itest/user-1" in message
    assert hv.find_volume(hv.pool(idle), VOLUME) is not None
    assert image_names(sessions) == ["tiny"]

    done = admin_cli("image", "delete", "tiny")
    assert done.returncode == 1 and "used by 2 VMs" in done.stderr and "Traceback" not in done.stderr
    assert image_names(sessions) == ["tiny"]

    client.delete(f"/v1/vms/{ids[0]}")  # pending: deleted at once
    one = admin_cli("image", "delete", "tiny")
    assert one.returncode == 1 and "used by 1 VM that is not deleted" in one.stderr and ids[1] in one.stderr
    assert ids[0] not in one.stderr


def test_an_image_no_live_vm_uses_goes_with_its_volume(
    client: FlaskClient, sessions: Any, idle: Settings, hv: Hypervisor
) -> None:
    vm_id = client.post("/v1/vms", json=vm_body("short-lived")).get_json()["vm"]["id"]
    assert client.delete(f"/v1/vms/{vm_id}").get_json()["vm"]["status"] == "deleted"
    deleted = delete_image(hv, sessions, idle, "tiny")
    assert (deleted.name, deleted.volume, deleted.pool) == ("tiny", VOLUME, POOL)
    assert hv.find_volume(hv.pool(idle), VOLUME) is None
    assert image_names(sessions) == []
    assert client.get("/v1/images/tiny").status_code == 404
    refused = client.post("/v1/vms", json=vm_body("after"))
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "unknown_image"
    with pytest.raises(ImageDeleteError, match="no image named tiny"):
        delete_image(hv, sessions, idle, "tiny")


def test_the_command_deletes_an_image_whose_volume_is_gone_already(
    sessions: Any, idle: Settings, hv: Hypervisor, admin_cli: Any
) -> None:
    with transaction(sessions) as session:
        session.execute(Image.__table__.update().values(volume="image-never-made.qcow2"))
    done = admin_cli("image", "delete", "tiny")
    assert done.returncode == 0, done.stderr
    assert "image tiny deleted" in done.stdout
    assert image_names(sessions) == []
    again = admin_cli("image", "delete", "tiny")
    assert again.returncode == 1 and "no image named tiny" in again.stderr


def test_an_image_of_another_host_is_not_deleted_here(
    sessions: Any, settings: Settings, hv: Hypervisor
) -> None:
    with pytest.raises(ImageDeleteError, match="run the delete on its host"):
        delete_image(hv, sessions, settings, "tiny")  # this is host itest; the image is on itest-idle
    assert image_names(sessions) == ["tiny"]


def test_an_operator_makes_and_lists_flavors_that_the_api_shows(admin_cli: Any, client: FlaskClient) -> None:
    made = admin_cli(
        "flavor", "create", "m1-small", "--vcpus", "2", "--memory-mib", "2048", "--disk-gib", "20"
    )
    assert made.returncode == 0, made.stderr
    assert "flavor m1-small created" in made.stdout
    again = admin_cli("flavor", "create", "m1-small", "--vcpus", "1", "--memory-mib", "64", "--disk-gib", "1")
    assert again.returncode == 1 and "exists already" in again.stderr
    listing = admin_cli("flavor", "list").stdout.splitlines()
    assert listing[0].split() == ["FLAVOR", "VCPUS", "MEMORY_MIB", "DISK_GIB"]
    assert listing[1].split() == ["m1-small", "2", "2048", "20"]
    assert client.get("/v1/flavors").get_json()["items"][0]["memory_mib"] == 2048
    created = client.post("/v1/vms", json={"name": "from-cli", "image": "tiny", "flavor": "m1-small"})
    assert created.status_code == 202 and created.get_json()["vm"]["disk_gib"] == 20


@pytest.mark.parametrize(
    "args,message",
    [
        (["Not_A_Label", "--vcpus", "1", "--memory-mib", "64", "--disk-gib", "1"], "lowercase DNS label"),
        (["f", "--vcpus", "65", "--memory-mib", "64", "--disk-gib", "1"], "1<=x<=64"),
        (["f", "--vcpus", "1", "--memory-mib", "63", "--disk-gib", "1"], "64<=x<=524288"),
        (["f", "--vcpus", "1", "--memory-mib", "64", "--disk-gib", "0"], "1<=x<=16384"),
        (["f", "--vcpus", "1", "--memory-mib", "64"], "Missing option '--disk-gib'"),
        (["f", "--vcpus", "two", "--memory-mib", "64", "--disk-gib", "1"], "'two' is not a valid integer"),
    ],
)
def test_a_flavor_outside_the_apis_limits_is_refused(admin_cli: Any, args: list[str], message: str) -> None:
    done = admin_cli("flavor", "create", *args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
