"""The layout tells the architecture: the API process must not even import libvirt; `common/` is shared
by both sides and imports neither; only `worker/hypervisor/` talks to libvirt; nothing outside
`common/lifecycle.py` writes a status column."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "common", "worker")


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


def test_the_api_never_imports_libvirt() -> None:
    probe = "import sys, api; api.create_app(); print('libvirt' in sys.modules, 'worker' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "False"]


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
