"""Log lines name the task they were written for, in text and in JSON, also from the threads a saga
starts; IAAS_LOG_FORMAT picks the format for the worker (Celery's handlers) and iaas-events."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from common import logs
from common.config import Settings
from worker import boot, resources
from worker.sagas.engine import call_bounded

TASK, VM = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


def attach(
    logger: logging.Logger, log_format: str, text_format: str | None = logs.TEXT_FORMAT
) -> io.StringIO:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logs.install(handler, log_format, text_format)
    logger.addHandler(handler)
    return out


def test_text_lines_carry_the_task_while_it_runs(logger: logging.Logger) -> None:
    out = attach(logger, "text")
    logger.info("before")
    with logs.task_context(TASK, "create_vm"):
        logger.info("claimed")
        logs.bind_vm(VM)
        logger.warning("step failed")
    logger.info("after")
    before, claimed, failed, after = out.getvalue().splitlines()
    assert before.endswith(f"{logger.name}: before")
    assert claimed.endswith(f"claimed [task={TASK} kind=create_vm]")
    assert failed.endswith(f"step failed [task={TASK} kind=create_vm vm={VM}]")
    assert after.endswith(": after")


def test_json_lines_carry_the_task_as_fields(logger: logging.Logger) -> None:
    out = attach(logger, "json")
    with logs.task_context(TASK, "stop_vm", VM):
        logger.info("shutting down %s", "it")
    logger.info("idle")
    during, idle = (json.loads(line) for line in out.getvalue().splitlines())
    assert during["message"] == "shutting down it"
    assert (during["task_id"], during["vm_id"], during["kind"]) == (str(TASK), str(VM), "stop_vm")
    assert {"time", "level", "logger", "pid"} <= during.keys() and "task_context" not in during
    assert idle["message"] == "idle" and "task_id" not in idle


def test_threads_a_saga_starts_keep_the_task(logger: logging.Logger) -> None:
    """The threads pool runs a task in one thread; its bounded calls run in threads of their own."""
    out = attach(logger, "text")
    with logs.task_context(TASK, "reboot_vm", VM):
        call_bounded(lambda: logger.info("inside libvirt"), 5, "probe")
    assert out.getvalue().strip().endswith(f"inside libvirt [task={TASK} kind=reboot_vm vm={VM}]")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_worker_gives_celerys_handlers_the_context_and_format(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    monkeypatch.setattr(resources, "settings", lambda: Settings(log_format=log_format))
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))
    boot.log_with_task_context(logger=logger, format="[%(levelname)s/%(processName)s] %(message)s")
    with logs.task_context(TASK, "destroy_vm", VM):
        logger.info("undefined")
    line = out.getvalue().strip()
    if log_format == "json":
        assert json.loads(line)["task_id"] == str(TASK)
    else:
        assert line == f"[INFO/MainProcess] undefined [task={TASK} kind=destroy_vm vm={VM}]"


def test_the_listener_writes_json_lines_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json")
        logging.getLogger("iaas.events").info("resync: %d domains listed", 3)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["message"], line["logger"], line["level"]) == (
        "resync: 3 domains listed",
        "iaas.events",
        "INFO",
    )


def test_gunicorns_logging_goes_through_one_handler_with_the_context() -> None:
    config = logs.dict_config("json")
    assert config["root"]["handlers"] == ["stderr"]
    assert all(not logger["handlers"] for logger in config["loggers"].values())  # no line written twice
    assert config["handlers"]["stderr"]["filters"] == ["task"]
    assert config["filters"]["task"]["()"] is logs.ContextFilter
    assert config["formatters"]["chosen"] == {"()": "common.logs.json_formatter"}
