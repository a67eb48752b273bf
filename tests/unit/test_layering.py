"""The layout tells the architecture: the API process must not even import libvirt."""

from __future__ import annotations

import subprocess
import sys


def test_the_api_never_imports_libvirt() -> None:
    probe = "import sys, api; api.create_app(); print('libvirt' in sys.modules, 'worker' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"]
