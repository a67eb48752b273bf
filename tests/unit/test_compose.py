"""docker-compose.yml is valid for both Composes it must run under: Debian 12's docker-compose 1.29
(`docker-compose config`, package docker-compose) and the Compose specification (its JSON schema as
check-jsonschema ships it, `vendor.compose-spec`); a broken copy fails them. It holds no password, and
the Dockerfile's images are split as docs/deploy.md says: no libvirt in the api image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


def tool(name: str, hint: str) -> str:
    """An executable beside this Python (the venv's) or on PATH; its absence fails, never skips."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {hint}")
    return found


def compose_1_29(path: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("docker-compose", "Debian's package docker-compose ('make deps' installs it)")
    env = {**os.environ, "IAAS_HOST": "hv1"}
    return subprocess.run(
        [exe, "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60, env=env
    )


def compose_spec(path: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("check-jsonschema", "the dev extra of pyproject.toml ('make venv' installs it)")
    args = [exe, "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_valid_for_debian_12_docker_compose() -> None:
    out = compose_1_29(COMPOSE)
    assert out.returncode == 0, out.stderr


def test_valid_for_the_compose_specification() -> None:
    out = compose_spec(COMPOSE)
    assert out.returncode == 0, out.stdout + out.stderr


# Each break: the text replaced and its replacement; both validators must refuse the result.
RESTART = "    restart: unless-stopped\n"
BREAKS = {
    "unknown key in a service": (RESTART, RESTART + "    restarts: 3\n"),
    "a list where a mapping belongs": ("volumes:\n  pgdata:\n", "volumes:\n  - pgdata\n"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_broken_copy_fails_both(case: str, tmp_path: Path) -> None:
    old, new = BREAKS[case]
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    assert compose_1_29(broken).returncode != 0
    assert compose_spec(broken).returncode != 0


def test_a_top_level_name_is_what_1_29_refuses(tmp_path: Path) -> None:
    """Why both run: the specification allows `name:`, Debian 12's Compose refuses it."""
    named = tmp_path / "docker-compose.yml"
    named.write_text("name: mini-iaas\n" + COMPOSE.read_text())
    assert compose_spec(named).returncode == 0
    refused = compose_1_29(named)
    assert refused.returncode != 0
    assert "'name' does not match any of the regexes" in refused.stderr


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_the_whole_stack_is_there() -> None:
    assert set(services()) == {"postgres", "redis", "migrate", "api", "beat", "flower", "worker", "events"}


def test_no_password_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*\S", text.replace("POSTGRES_PASSWORD_FILE:", ""))
    for name, secret in yaml.safe_load(text)["secrets"].items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./.run/compose-secrets/")


def test_the_mini_iaas_services_read_their_secrets_and_libvirt_where_needed() -> None:
    for name, service in services().items():
        if name in ("postgres", "redis"):
            continue
        assert service["environment"]["IAAS_SECRETS_DIR"] == "/run/secrets", name
        assert "redis" in service["secrets"], name
        mounts = [volume.split(":")[0] for volume in service.get("volumes", [])]
        assert (LIBVIRT_SOCKET in mounts) == (name in ("worker", "events")), name
        assert (service.get("user") == "root") == (name in ("worker", "events")), name
        assert service["image"] == ("mini-iaas-worker" if name in ("worker", "events") else "mini-iaas-api")


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def test_the_dockerfile_builds_libvirt_only_for_the_worker() -> None:
    stages = dockerfile_stages()
    assert {"runtime", "build-api", "build-worker", "api", "worker"} <= set(stages)
    api, worker = stages["api"], stages["worker"]
    assert "USER mini-iaas" in api
    assert "COPY --from=build-api /opt/mini-iaas /opt/mini-iaas" in api
    assert "COPY --from=build-worker /opt/mini-iaas /opt/mini-iaas" in worker
    assert "USER root" in worker
    for name in ("runtime", "api", "worker"):  # what runs carries no compiler and no headers
        assert not any(re.search(r"\b(gcc|libvirt-dev|libpq-dev)\b", line) for line in stages[name]), name
    assert not any("libvirt-dev" in line or "'.[worker]'" in line for line in stages["build-api"])
    assert any("libvirt-dev" in line for line in stages["build-worker"])
    assert any("'.[worker]'" in line for line in stages["build-worker"])
