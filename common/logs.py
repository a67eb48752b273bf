"""Log lines of every process: readable text by default, JSON lines with `IAAS_LOG_FORMAT=json`; and
which task a line was written for.

The task runner binds the running task (`task_context`) in a context variable; `ContextFilter`, on
every handler, copies it onto each record. A context variable rather than a thread-local: the worker's
threads pool runs one task per thread, and the threads a saga starts for its bounded calls copy the
context (`worker/sagas/engine.call_bounded`), so a line logged deep in a libvirt call still names its
task. On a handler, not a logger: a logger's filter never sees its children's records."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(task_context)s"
# The JSON fields every line has; the task's fields come on top while a task runs.
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
_JSON_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


@dataclass(frozen=True)
class TaskLogContext:
    task_id: str
    kind: str
    vm_id: str | None = None


_current: ContextVar[TaskLogContext | None] = ContextVar("iaas_task_log_context", default=None)


@contextmanager
def task_context(task_id: uuid.UUID | str, kind: str, vm_id: uuid.UUID | str | None = None) -> Iterator[None]:
    """Every line logged in this block (in this thread, or a thread started with its context) names
    the task."""
    token = _current.set(TaskLogContext(str(task_id), str(kind), str(vm_id) if vm_id else None))
    try:
        yield
    finally:
        _current.reset(token)


def bind_vm(vm_id: uuid.UUID | str | None) -> None:
    """Add the VM once the claim has told it (the block of task_context restores the whole context)."""
    current = _current.get()
    if current is not None and vm_id is not None:
        _current.set(replace(current, vm_id=str(vm_id)))


def current() -> TaskLogContext | None:
    return _current.get()


class ContextFilter(logging.Filter):
    """Puts `task_id`, `vm_id` and `kind` on a record written during a task (JSON shows them as
    fields), and `task_context`, their text form or "", which TEXT_FORMAT appends."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is None:
            record.task_context = ""
            return True
        for name, value in (("task_id", ctx.task_id), ("kind", ctx.kind), ("vm_id", ctx.vm_id)):
            if value is not None and not hasattr(record, name):  # Celery's task logger sets task_id
                setattr(record, name, value)
        vm = f" vm={ctx.vm_id}" if ctx.vm_id else ""
        record.task_context = f" [task={ctx.task_id} kind={ctx.kind}{vm}]"
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        _JSON_FIELDS,
        rename_fields=_JSON_RENAMED,
        reserved_attrs=[*RESERVED_ATTRS, "task_context", "color_message"],
        timestamp=False,
    )


def install(handler: logging.Handler, log_format: str, text_format: str | None = TEXT_FORMAT) -> None:
    """Give a handler the task's context and the chosen format (Celery's worker calls this on the
    handlers it made); `text_format` None keeps the handler's own formatter for text."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(json_formatter())
    elif text_format is not None:
        handler.setFormatter(logging.Formatter(text_format))


def configure(log_format: str, level: int = logging.INFO) -> None:
    """A process that owns its logging (iaas-events): one handler on stderr for the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    install(handler, log_format)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def dict_config(log_format: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error and access logs and the app's loggers through one
    handler, in the chosen format. (Gunicorn's own handlers are replaced, not added to: else every
    line would be written twice, once by them and once by the root's.)"""
    text = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s%(task_context)s"
    chosen = {"()": f"{__name__}.json_formatter"} if log_format == "json" else {"format": text}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"task": {"()": ContextFilter}},
        "formatters": {"chosen": chosen},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "chosen",
                "filters": ["task"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
