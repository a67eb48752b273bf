"""The systemd units of deploy/systemd/ pass `systemd-analyze verify` (offline: no systemd runs here),
with their paths pointed at this checkout and this venv, and keep the privileges docs/deploy.md gives;
deploy/logrotate/mini-iaas passes `logrotate -d`. Broken copies fail both checks."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
LOGROTATE = ROOT / "deploy" / "logrotate" / "mini-iaas"
PROCESSES = ("api", "worker", "beat", "flower", "events")
UNPRIVILEGED = ("api", "beat", "flower")


def need(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: 'make deps' installs it (scripts/install-deps.sh)")
    return found


def installed_copy(folder: Path, rewrite: tuple[str, str] | None = None) -> list[Path]:
    """The units as installed here: /opt/mini-iaas/.venv is this venv, /opt/mini-iaas this checkout."""
    folder.mkdir()
    copies = []
    for unit in sorted(UNITS.iterdir()):
        text = (
            unit.read_text().replace("/opt/mini-iaas/.venv", sys.prefix).replace("/opt/mini-iaas", str(ROOT))
        )
        if rewrite and unit.name == "mini-iaas-api.service":
            assert rewrite[0] in text
            text = text.replace(*rewrite)
        (folder / unit.name).write_text(text)
        copies.append(folder / unit.name)
    return copies


def verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    exe = need("systemd-analyze")
    return subprocess.run(
        [exe, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, timeout=60
    )


def test_the_units_verify(tmp_path: Path) -> None:
    out = verify(installed_copy(tmp_path / "units"))
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@pytest.mark.parametrize(
    "rewrite",
    [
        ("Restart=on-failure", "Restart=sometimes"),  # a bad value: a warning, which counts
        ("NoNewPrivileges=yes", "NoNewPrivilege=yes"),  # an unknown key
        ("/bin/gunicorn", "/bin/no-such-gunicorn"),  # ExecStart not executable: an error
    ],
    ids=["bad value", "unknown key", "missing program"],
)
def test_a_broken_unit_fails(tmp_path: Path, rewrite: tuple[str, str]) -> None:
    out = verify(installed_copy(tmp_path / "units", rewrite))
    assert out.returncode != 0 or out.stdout + out.stderr != ""


def service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / f"mini-iaas-{name}.service")
    return parser["Service"]


@pytest.mark.parametrize("name", PROCESSES)
def test_each_process_has_its_user_settings_restart_and_hardening(name: str) -> None:
    unit = service(name)
    assert unit["User"] == ("mini-iaas" if name in UNPRIVILEGED else "root")
    assert unit["EnvironmentFile"] == "-/etc/mini-iaas/mini-iaas.env"
    assert unit["Restart"] == "on-failure"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["PrivateTmp"] == "yes"
    assert unit["ProtectSystem"] == ("strict" if name in UNPRIVILEGED else "full")
    if name in UNPRIVILEGED:
        assert unit["CapabilityBoundingSet"] == ""
    install = configparser.ConfigParser(strict=False, interpolation=None)
    install.read(UNITS / f"mini-iaas-{name}.service")
    assert install["Install"]["WantedBy"] == "mini-iaas.target"


def logrotate_check(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    exe = need("logrotate")
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "api.log").write_text("a line\n")
    assert "/var/log/mini-iaas/*.log" in config_text
    config = tmp_path / "mini-iaas"
    config.write_text(config_text.replace("/var/log/mini-iaas/*.log", f"{logs}/*.log"))
    args = [exe, "-d", "-s", str(tmp_path / "state"), str(config)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_the_logrotate_file_passes(tmp_path: Path) -> None:
    out = logrotate_check(LOGROTATE.read_text(), tmp_path)
    assert out.returncode == 0
    assert "error" not in out.stderr.lower()
    assert "considering log" in out.stderr  # it read the rule and matched the log


def test_a_broken_logrotate_file_fails(tmp_path: Path) -> None:
    out = logrotate_check(LOGROTATE.read_text().replace("daily", "dialy"), tmp_path)
    assert "error" in out.stderr.lower()
