"""docs/configuration.md is generated from the settings' descriptions and must not go stale."""

from __future__ import annotations

import socket

import pytest

from common.config import Settings
from common.config_reference import REFERENCE_PATH, render


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"give these settings a Field(description=...) in common/config.py: {missing}"


def test_the_configuration_reference_is_up_to_date() -> None:
    written = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.exists() else ""
    assert written == render(), (
        f"{REFERENCE_PATH.name} differs from the settings in common/config.py: run `make docs` and commit it"
    )


def test_the_reference_names_every_setting_and_does_not_depend_on_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = render()
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere.example.org")
    monkeypatch.setenv("IAAS_HOST", "elsewhere")
    assert render() == here
    for name in Settings.model_fields:
        assert f"| `IAAS_{name.upper()}` |" in here
