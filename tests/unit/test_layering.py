"""The layout tells the architecture: the API process must not even import libvirt; `common/` is shared
by both sides and imports neither; only `worker/hypervisor/` talks to libvirt; nothing outside
`common/lifecycle.py` writes a status column. The packages of the `worker` extra (pyproject.toml) are
imported under `worker/` only, so that an API-only install (`pip install .`) runs the API, beat and
Flower."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "common", "worker")
# The modules of the `worker` extra's packages, which only the worker side may import.
WORKER_ONLY_MODULES = {"libvirt", "libvirt_qemu", "libvirtaio", "pycdlib"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def loaded_after(statements: str) -> list[str]:
    """Which of libvirt, pycdlib and the worker package a fresh interpreter holds after `statements`."""
    watched = ("libvirt", "pycdlib", "worker")
    probe = f"import sys\n{statements}\nprint([m for m in {watched!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT
    )
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_the_api_never_imports_libvirt() -> None:
    assert loaded_after("import api; api.create_app()") == []


def test_beat_and_flower_load_no_worker_module() -> None:
    """Beat imports its app's task modules at start (`init_worker`): its app must list none of the
    worker's, which the worker's own app does (the probe would see them)."""
    assert loaded_after("from common.celery_app import app; app.loader.init_worker()") == []
    assert "libvirt" in loaded_after("from worker.celery_app import app; app.loader.init_worker()")


def test_api_and_common_import_no_worker_only_package() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in WORKER_ONLY_MODULES
        )
        for package in ("api", "common")
        for path in sources(package)
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_libvirt_and_pycdlib_are_in_the_worker_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    worker_extra = names(project["optional-dependencies"]["worker"])
    assert {"libvirt-python", "pycdlib"} <= worker_extra
    assert names(project["dependencies"]) & worker_extra == set()


def test_common_imports_neither_the_api_nor_the_worker() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in ("api", "worker")
        )
        for path in sources("common")
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_only_the_hypervisor_package_imports_libvirt() -> None:
    allowed = ROOT / "worker" / "hypervisor"
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in sources(package)
        if allowed not in path.parents and any(m.split(".")[0] == "libvirt" for m in imported_modules(path))
    ]
    assert offenders == []


def test_only_lifecycle_updates_a_status_column() -> None:
    """`update(Task)` / `update(Vm)` with a status, anywhere but the state machines' module."""
    offenders = []
    for package in PRODUCT:
        for path in sources(package):
            if path == ROOT / "common" / "lifecycle.py":
                continue
            text = path.read_text()
            for model in ("Task", "Vm"):
                if f"update({model})" in text:
                    offenders.append(f"{path.relative_to(ROOT)}: update({model})")
    assert offenders == []
