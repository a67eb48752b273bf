"""The worker's half of GET /v1/vms/<id>/console: reading the end of a console log file, and the reply
that carries it through Celery's JSON."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from common.config import Settings
from common.console import ConsoleTail
from worker.console import log_path, read_tail


def test_the_end_of_the_file_where_it_starts_and_its_size(tmp_path: Path) -> None:
    path = tmp_path / "vm.log"
    path.write_bytes(bytes(range(256)) * 10)
    assert read_tail(str(path), 16) == ConsoleTail(bytes(range(240, 256)), 2544, 2560)
    assert read_tail(str(path), 10_000) == ConsoleTail(bytes(range(256)) * 10, 0, 2560)


def test_a_missing_or_empty_log_is_empty(tmp_path: Path) -> None:
    assert read_tail(str(tmp_path / "none.log"), 100) == ConsoleTail(b"", 0, 0)
    (tmp_path / "empty.log").touch()
    assert read_tail(str(tmp_path / "empty.log"), 100) == ConsoleTail(b"", 0, 0)


def test_a_symbolic_link_or_a_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not a console\n")
    os.symlink(tmp_path / "secret", tmp_path / "link.log")
    with pytest.raises(OSError):
        read_tail(str(tmp_path / "link.log"), 100)
    os.mkfifo(tmp_path / "fifo.log")  # no writer: a blocking open would hang
    with pytest.raises(OSError, match="not a regular file"):
        read_tail(str(tmp_path / "fifo.log"), 100)


def test_the_path_comes_from_the_settings_and_the_vm_id_alone(tmp_path: Path) -> None:
    settings = Settings(console_log_dir=str(tmp_path), secrets_dir=str(tmp_path))
    vm_id = uuid.uuid4()
    assert log_path(settings, vm_id) == str(tmp_path / f"{vm_id}.log")


def test_any_bytes_survive_the_json_reply() -> None:
    tail = ConsoleTail(b"\xff\x00\xfe boot\r\n\x1b[0m", 7, 21)
    assert ConsoleTail.from_reply(json.loads(json.dumps(tail.to_reply()))) == tail
