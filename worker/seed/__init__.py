"""A VM's cloud-init NoCloud seed: the three files cloud-init reads (`meta-data`, `user-data`,
`network-config`) on an ISO 9660 image labelled `cidata`, built in memory from a `SeedSpec`.

Pure: no database, no libvirt, no files. The saga that uploads the image as a volume and attaches it
lives with the other steps."""

from worker.seed.files import seed_files
from worker.seed.iso import SEED_LABEL, build_seed_iso
from worker.seed.spec import SeedInterface, SeedSpec

__all__ = ["SEED_LABEL", "SeedInterface", "SeedSpec", "build_seed_iso", "seed_files"]
