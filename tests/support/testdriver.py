"""libvirt's test driver as the integration tests use it: its node file (our pool and the `tiny` image
volume), settings for a worker on it, and the image row that matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import Settings
from common.models import Image
from tests.support.environment import TEST_BROKER, TEST_DATABASE_URL

POOL = "mini-iaas"
POOL_PATH = "/var/lib/mini-iaas/test-pool"
IMAGE_PATH = f"{POOL_PATH}/image-tiny.qcow2"
IMAGE_VIRTUAL_SIZE = 64 * 1024**2

# libvirt's test driver, seeded with our pool and the image volume. Its state lives inside the
# worker process, so the tests look at it through the worker (`hypervisor_inventory`).
TEST_NODE_XML = f"""<node>
  <pool type='dir'>
    <name>{POOL}</name>
    <target><path>{POOL_PATH}</path></target>
    <volume>
      <name>image-tiny.qcow2</name>
      <capacity unit='bytes'>{IMAGE_VIRTUAL_SIZE}</capacity>
      <target><path>{IMAGE_PATH}</path><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"""


def driver_settings(tmp: Path, host: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": TEST_DATABASE_URL,
        "broker_url": TEST_BROKER,
        "libvirt_uri": f"test://{tmp / 'node.xml'}",
        "domain_type": "auto",
        "storage_pool": POOL,
        "storage_pool_path": POOL_PATH,
        "console_log_dir": str(tmp / "console"),
        "host": host,
        "failpoints_table": True,
        # No metrics servers unless a test asks for one (start_worker's metrics_port): the default
        # ports would collide between the test processes.
        "worker_metrics_port": 0,
        "events_metrics_port": 0,
        **overrides,
    }
    return Settings(**values)


def tiny_image(host: str, name: str = "tiny") -> Image:
    return Image(
        name=name,
        host=host,
        pool=POOL,
        volume="image-tiny.qcow2",
        path=IMAGE_PATH,
        format="qcow2",
        size_bytes=12 * 1024**2,
        virtual_size_bytes=IMAGE_VIRTUAL_SIZE,
        checksum_sha256="0" * 64,
    )
