"""A saga: ordered steps, each with `do` and `undo`, journaled in `task_steps`.

The journal row is written before a step acts (with what its undo needs) and again when it ends, so
a client polling the task sees progress and a later run of the same task knows where the last one
stopped. A run resumes forward (steps already `succeeded` are skipped; one left `running` by a dead
worker runs again: every step is idempotent), or, if the last run was compensating, finishes the
compensation. On failure the steps that ran -- the failing one too, since it may have half-acted --
are undone in reverse. An undo of something that never happened does nothing; a failing undo is
retried with backoff, recorded, and never hides the original error.

An undo receives what its step recorded in the journal before acting (TaskFlow's `revert(result)`):
a run that resumes another's compensation undoes exactly what that run said it was about to do,
with nothing recomputed.

A step's `do` may return a dict: what it has to tell about how it went (a stop: graceful or forced).
The run returns them merged, and the runner puts them in the task's `result`. Only steps that ran in
this run tell: a resumed run does not know how an earlier run's steps went."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from tenacity import Retrying, stop_after_attempt, wait_exponential

from common.states import StepStatus
from worker.metrics import STEP_DURATION
from worker.sagas.failpoints import Failpoints

log = logging.getLogger(__name__)

Ctx = TypeVar("Ctx")
R = TypeVar("R")

UNDO_ATTEMPTS = 3
UNDO_BACKOFF_S = 0.5
# A step row in one of these states means a run was compensating when it stopped.
COMPENSATING = (StepStatus.FAILED, StepStatus.UNDOING, StepStatus.UNDONE, StepStatus.UNDO_FAILED)


UndoData = dict[str, Any]


def _nothing(_ctx: object) -> UndoData:
    return {}


@dataclass(frozen=True)
class Step(Generic[Ctx]):
    name: str
    do: Callable[[Ctx], object]
    # Called with the context and what `undo_data` recorded before the step acted.
    undo: Callable[[Ctx, UndoData], object] | None = None
    # What the undo will need, known before the step acts because names are deterministic.
    undo_data: Callable[[Ctx], UndoData] = _nothing


@dataclass(frozen=True)
class StepRecord:
    id: int
    seq: int
    name: str
    status: StepStatus
    error: str | None
    undo_data: UndoData = field(default_factory=dict)


class Journal(Protocol):
    def load(self) -> dict[int, StepRecord]: ...
    def started(self, seq: int, name: str, undo_data: UndoData, existing: StepRecord | None) -> int: ...
    def mark(self, step_id: int, status: StepStatus, **fields: Any) -> None: ...
    def flush(self) -> None: ...


class LeaseLost(Exception):
    """Another run owns the task now: stop at once, touch nothing more."""


class StepTimeout(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


class SagaFailed(Exception):
    def __init__(self, step: str, cause: BaseException | str, undo_failures: list[str]) -> None:
        super().__init__(f"step {step} failed: {cause}")
        self.step = step
        self.cause = cause
        self.undo_failures = undo_failures

    def as_error(self) -> dict[str, Any]:
        cause = self.cause if isinstance(self.cause, str) else f"{type(self.cause).__name__}: {self.cause}"
        return {
            "code": "step_failed",
            "message": f"Step {self.step!r} failed: {cause}",
            "details": {
                "step": self.step,
                "cause": cause,
                "compensated": not self.undo_failures,
                "undo_failures": self.undo_failures,
            },
        }


@dataclass(frozen=True)
class SagaRun(Generic[Ctx]):
    """One run of a saga for one task."""

    name: str
    steps: Sequence[Step[Ctx]]
    ctx: Ctx
    journal: Journal
    failpoints: Failpoints
    task_id: Any = None
    deadline: datetime | None = None
    step_timeout_s: float = 120.0
    # Set when the task must not go forward any more (too many attempts): only compensate.
    abandon_reason: str | None = None

    def run(self) -> dict[str, Any]:
        """Run (or resume) the saga; returns what its steps told (see above). Raises SagaFailed."""
        history = self.journal.load()
        executed = [
            _Ran(r.id, self.steps[r.seq], r.undo_data) for r in sorted(history.values(), key=lambda r: r.seq)
        ]
        failed = next((r for r in history.values() if r.status == StepStatus.FAILED), None)
        if failed is not None or any(r.status in COMPENSATING for r in history.values()):
            cause = failed.error if failed and failed.error else "the previous run died while compensating"
            failed_step = failed.name if failed else "(compensation)"
            raise SagaFailed(failed_step, cause, self._compensate(executed, history))
        if self.abandon_reason is not None:
            raise SagaFailed("(abandoned)", self.abandon_reason, self._compensate(executed, history))

        done: list[_Ran[Ctx]] = []
        told: dict[str, Any] = {}
        for seq, step in enumerate(self.steps):
            record = history.get(seq)
            if record is not None and record.status == StepStatus.SUCCEEDED:
                done.append(_Ran(record.id, step, record.undo_data))  # done by an earlier run
                continue
            # A step a dead run left `running` keeps what that run recorded: it may have half-acted.
            data = record.undo_data if record is not None and record.undo_data else step.undo_data(self.ctx)
            step_id = self.journal.started(seq, step.name, data, record)
            done.append(_Ran(step_id, step, data))
            started = time.perf_counter()
            try:
                self._check_deadline()
                self.failpoints.hit(f"{self.name}.{step.name}", self.task_id)
                output = call_bounded(partial(step.do, self.ctx), self._timeout(), f"{self.name}.{step.name}")
                self.failpoints.hit(f"{self.name}.{step.name}.done", self.task_id)
            except LeaseLost:
                raise
            except Exception as exc:
                STEP_DURATION.labels(self.name, step.name, "failed").observe(time.perf_counter() - started)
                log.warning("saga %s: step %s failed: %s", self.name, step.name, _short(exc))
                self.journal.mark(step_id, StepStatus.FAILED, error=_short(exc))
                raise SagaFailed(step.name, exc, self._compensate(done, history)) from exc
            STEP_DURATION.labels(self.name, step.name, "succeeded").observe(time.perf_counter() - started)
            if isinstance(output, dict):
                told.update(output)
            self.journal.mark(step_id, StepStatus.SUCCEEDED)
        self.journal.flush()  # the run is done: every mark is written before the task is finished
        return told

    def _check_deadline(self) -> None:
        if self.deadline is not None and datetime.now(UTC) >= self.deadline:
            raise DeadlineExceeded(f"the task's deadline {self.deadline.isoformat()} has passed")

    def _timeout(self) -> float:
        if self.deadline is None:
            return self.step_timeout_s
        left = (self.deadline - datetime.now(UTC)).total_seconds()
        return max(0.1, min(self.step_timeout_s, left))

    def _compensate(self, ran: list[_Ran[Ctx]], history: dict[int, StepRecord]) -> list[str]:
        """Undo in reverse what ran and is not undone yet. Returns the steps whose undo failed."""
        undone = {r.id for r in history.values() if r.status == StepStatus.UNDONE}
        failures: list[str] = []
        for entry in reversed(ran):
            step = entry.step
            if step.undo is None or entry.step_id in undone:
                continue
            self.journal.mark(entry.step_id, StepStatus.UNDOING)
            what = f"{self.name}.{step.name}.undo"
            error = _undo_with_retries(step, self.ctx, entry.undo_data, self.step_timeout_s, what)
            if error is None:
                self.journal.mark(entry.step_id, StepStatus.UNDONE)
            else:
                self.journal.mark(entry.step_id, StepStatus.UNDO_FAILED, undo_error=error)
                failures.append(step.name)
        return failures


@dataclass(frozen=True)
class _Ran(Generic[Ctx]):
    """A step this run (or an earlier one) started, with the journal row and what its undo needs."""

    step_id: int
    step: Step[Ctx]
    undo_data: UndoData


def call_bounded(fn: Callable[[], R], timeout: float, what: str) -> R:
    """Return fn() if it finishes within `timeout` seconds, else raise StepTimeout. A call that hangs
    (a wedged libvirtd) is left behind in its daemon thread; the caller moves on."""
    result: list[R] = []
    outcome: list[BaseException] = []
    finished = threading.Event()

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            finished.set()

    # The caller's context goes along: a line logged inside names the task (common/logs.py).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), name=what, daemon=True).start()
    if not finished.wait(timeout):
        raise StepTimeout(f"{what} did not finish within {timeout:.1f} s")
    if outcome:
        raise outcome[0]
    return result[0]


def bounded(fn: Callable[..., object], timeout: float, what: str, *args: Any) -> None:
    """Run fn(*args) for at most `timeout` seconds; the saga moves on and compensates after that."""
    call_bounded(lambda: fn(*args), timeout, what)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _undo_with_retries(step: Step[Any], ctx: Any, data: UndoData, timeout: float, what: str) -> str | None:
    undo = step.undo
    assert undo is not None
    retrying = Retrying(
        stop=stop_after_attempt(UNDO_ATTEMPTS), wait=wait_exponential(multiplier=UNDO_BACKOFF_S), reraise=True
    )
    try:
        retrying(bounded, undo, timeout, what, ctx, data)
    except LeaseLost:
        raise
    except Exception as exc:
        log.warning("undo of %s failed after %d attempts: %s", step.name, UNDO_ATTEMPTS, _short(exc))
        return _short(exc)
    return None
