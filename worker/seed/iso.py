"""The seed as an ISO 9660 image labelled `cidata`, written in memory with pycdlib. Rock Ridge and
Joliet carry the real names (`meta-data`, ...): plain ISO 9660 level 1 allows only 8.3 upper-case
names, and cloud-init (like Linux's isofs) reads the Rock Ridge names."""

from __future__ import annotations

import io

import pycdlib

from worker.seed.files import seed_files
from worker.seed.spec import SeedSpec

SEED_LABEL = "cidata"  # the volume label cloud-init's NoCloud datasource looks for
# The plain ISO 9660 name of each file: what a reader without either extension sees.
_ISO_NAMES = {"meta-data": "METADATA.;1", "user-data": "USERDATA.;1", "network-config": "NETCFG.;1"}


def build_seed_iso(spec: SeedSpec) -> bytes:
    image = pycdlib.PyCdlib()
    image.new(interchange_level=1, vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, content in seed_files(spec).items():
            image.add_fp(
                io.BytesIO(content),
                len(content),
                f"/{_ISO_NAMES[name]}",
                rr_name=name,
                joliet_path=f"/{name}",
                file_mode=0o100444,
            )
        out = io.BytesIO()
        image.write_fp(out)
    finally:
        image.close()
    return out.getvalue()
