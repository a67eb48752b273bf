"""Saga ordering, compensation and the journal, on an in-memory journal (no services needed)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.states import StepStatus
from worker.sagas import engine as saga
from worker.sagas import failpoints
from worker.sagas.engine import (
    DeadlineExceeded,
    SagaFailed,
    SagaRun,
    Step,
    StepRecord,
    StepTimeout,
    call_bounded,
)
from worker.sagas.failpoints import Failpoints

NO_FAILPOINTS = Failpoints({})


class MemoryJournal:
    """The journal interface, recorded in a dict instead of task_steps."""

    def __init__(self, history: dict[int, tuple[str, StepStatus, str | None]] | None = None) -> None:
        self.rows: dict[int, dict[str, Any]] = {
            seq: {"name": name, "status": status, "error": error}
            for seq, (name, status, error) in (history or {}).items()
        }
        self.events: list[tuple[str, str]] = []

    def load(self) -> dict[int, StepRecord]:
        return {
            seq: StepRecord(seq, seq, r["name"], r["status"], r.get("error"), r.get("undo_data", {}))
            for seq, r in self.rows.items()
        }

    def started(self, seq: int, name: str, undo_data: dict[str, Any], existing: StepRecord | None) -> int:
        self.rows.setdefault(seq, {}).update(name=name, status=StepStatus.RUNNING, undo_data=undo_data)
        self.events.append((name, "running"))
        return seq

    def mark(self, step_id: int, status: StepStatus, **fields: Any) -> None:
        self.rows[step_id].update(status=status, **fields)
        self.events.append((self.rows[step_id]["name"], str(status)))

    def flush(self) -> None:
        pass  # every write above is immediate

    def statuses(self) -> list[tuple[str, str]]:
        return [(row["name"], str(row["status"])) for row in self.rows.values()]


def recording_steps(
    log: list[str], fail_at: str | None = None, undo_fails: str | None = None
) -> list[Step[Any]]:
    def do(name: str) -> Any:
        def action(_ctx: Any) -> None:
            log.append(f"do {name}")
            if name == fail_at:
                raise RuntimeError(f"{name} broke")

        return action

    def undo(name: str) -> Any:
        def action(_ctx: Any, _data: dict[str, Any]) -> None:
            log.append(f"undo {name}")
            if name == undo_fails:
                raise OSError(f"undo of {name} broke")

        return action

    return [
        Step("a", do("a"), undo=undo("a"), undo_data=lambda _ctx: {"thing": "a"}),
        Step("b", do("b")),  # nothing to undo
        Step("c", do("c"), undo=undo("c")),
        Step("d", do("d"), undo=undo("d")),
    ]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saga, "UNDO_BACKOFF_S", 0.0)


def run(
    steps: list[Step[Any]], journal: MemoryJournal, points: Failpoints = NO_FAILPOINTS, **kw: Any
) -> None:
    SagaRun(name="s", steps=steps, ctx=None, journal=journal, failpoints=points, **kw).run()


def test_steps_run_in_order_and_are_journaled_before_and_after() -> None:
    log: list[str] = []
    journal = MemoryJournal()
    run(recording_steps(log), journal)
    assert log == ["do a", "do b", "do c", "do d"]
    assert journal.events[:2] == [("a", "running"), ("a", "succeeded")]
    assert journal.statuses() == [(n, "succeeded") for n in "abcd"]
    assert journal.rows[0]["undo_data"] == {"thing": "a"}


def test_a_failure_undoes_what_ran_in_reverse_including_the_failed_step() -> None:
    log: list[str] = []
    journal = MemoryJournal()
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log, fail_at="c"), journal)
    assert log == ["do a", "do b", "do c", "undo c", "undo a"]  # d never ran, b has no undo
    assert journal.statuses() == [("a", "undone"), ("b", "succeeded"), ("c", "undone")]
    assert journal.rows[2]["error"] == "RuntimeError: c broke"
    assert failed.value.step == "c" and failed.value.undo_failures == []
    assert failed.value.as_error()["details"]["compensated"] is True


def test_a_failing_undo_is_retried_recorded_and_keeps_the_original_error() -> None:
    log: list[str] = []
    journal = MemoryJournal()
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log, fail_at="d", undo_fails="c"), journal)
    assert log.count("undo c") == saga.UNDO_ATTEMPTS
    assert log[-1] == "undo a"  # one undo failing does not stop the others
    assert journal.rows[2]["status"] == StepStatus.UNDO_FAILED
    assert journal.rows[2]["undo_error"] == "OSError: undo of c broke"
    assert isinstance(failed.value.cause, RuntimeError) and str(failed.value.cause) == "d broke"
    error = failed.value.as_error()
    assert error["details"]["undo_failures"] == ["c"] and error["details"]["compensated"] is False
    assert error["message"] == "Step 'd' failed: RuntimeError: d broke"


def test_a_failpoint_fails_its_step_before_it_acts() -> None:
    log: list[str] = []
    journal = MemoryJournal()
    points = Failpoints(failpoints.parse("s.c=raise, other.x=raise"))
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log), journal, points)
    assert log == ["do a", "do b", "undo c", "undo a"]
    assert isinstance(failed.value.cause, failpoints.FailpointTriggered)


@pytest.mark.parametrize("spec", ["s.c=explode", "s.c", "=raise"])
def test_malformed_failpoints_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="failpoint"):
        failpoints.parse(spec)


def test_no_failpoints_unless_set() -> None:
    assert failpoints.parse("") == {}
    NO_FAILPOINTS.hit("create_vm.start_domain")  # inert


def test_a_resumed_run_skips_finished_steps_and_reruns_the_interrupted_one() -> None:
    log: list[str] = []
    journal = MemoryJournal({0: ("a", StepStatus.SUCCEEDED, None), 1: ("b", StepStatus.SUCCEEDED, None),
                             2: ("c", StepStatus.RUNNING, None)})  # fmt: skip
    run(recording_steps(log), journal)
    assert log == ["do c", "do d"]
    assert journal.statuses() == [(n, "succeeded") for n in "abcd"]


def test_a_run_that_died_compensating_finishes_the_compensation() -> None:
    log: list[str] = []
    journal = MemoryJournal({0: ("a", StepStatus.SUCCEEDED, None), 1: ("b", StepStatus.SUCCEEDED, None),
                             2: ("c", StepStatus.FAILED, "RuntimeError: c broke")})  # fmt: skip
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log), journal)
    assert log == ["undo c", "undo a"]  # nothing goes forward again
    assert failed.value.step == "c" and failed.value.cause == "RuntimeError: c broke"


def test_an_abandoned_task_only_compensates() -> None:
    log: list[str] = []
    journal = MemoryJournal({0: ("a", StepStatus.SUCCEEDED, None), 1: ("b", StepStatus.RUNNING, None)})
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log), journal, abandon_reason="gave up after 5 interrupted runs")
    assert log == ["undo a"]
    assert failed.value.as_error()["details"]["cause"] == "gave up after 5 interrupted runs"


def test_a_passed_deadline_fails_the_next_step_and_compensates() -> None:
    log: list[str] = []
    journal = MemoryJournal({0: ("a", StepStatus.SUCCEEDED, None)})
    with pytest.raises(SagaFailed) as failed:
        run(recording_steps(log), journal, deadline=datetime.now(UTC) - timedelta(seconds=1))
    assert isinstance(failed.value.cause, DeadlineExceeded)
    assert failed.value.step == "b" and log == ["undo a"]


def test_a_step_that_hangs_is_cut_off_by_its_timeout() -> None:
    release = threading.Event()
    log: list[str] = []
    steps = [Step("a", lambda _c: log.append("do a"), undo=lambda _c, _d: log.append("undo a")),
             Step("hang", lambda _c: release.wait(30))]  # fmt: skip
    try:
        with pytest.raises(SagaFailed) as failed:
            run(steps, MemoryJournal(), step_timeout_s=0.2)
    finally:
        release.set()
    assert isinstance(failed.value.cause, StepTimeout)
    assert log == ["do a", "undo a"]


def test_a_bounded_call_returns_its_value_or_raises_its_error() -> None:
    assert call_bounded(lambda: 42, 5, "answer") == 42

    def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        call_bounded(broken, 5, "broken")


def test_a_bounded_call_that_hangs_is_left_behind() -> None:
    release = threading.Event()
    try:
        with pytest.raises(StepTimeout, match=r"listing did not finish within 0\.2 s"):
            call_bounded(lambda: release.wait(30), 0.2, "listing")
    finally:
        release.set()


def test_an_undo_receives_what_its_step_recorded_before_acting() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    steps: list[Step[Any]] = [
        Step("a", lambda _c: None, undo=lambda _c, data: seen.append(("a", data)),
             undo_data=lambda _c: {"volume": "vm-1.qcow2"}),
        Step("b", lambda _c: (_ for _ in ()).throw(RuntimeError("b broke"))),
    ]  # fmt: skip
    with pytest.raises(SagaFailed):
        run(steps, MemoryJournal())
    assert seen == [("a", {"volume": "vm-1.qcow2"})]


def test_a_resumed_compensation_undoes_what_the_journal_recorded_not_what_is_recomputed() -> None:
    """The dead run recorded the volume it was about to make; the context now computes another name
    (say, a changed setting): the undo still deletes the recorded one."""
    seen: list[dict[str, Any]] = []
    steps: list[Step[Any]] = [
        Step("a", lambda _c: None, undo=lambda _c, data: seen.append(data),
             undo_data=lambda _c: {"volume": "recomputed.qcow2"}),
        Step("b", lambda _c: None),
    ]  # fmt: skip
    journal = MemoryJournal({0: ("a", StepStatus.SUCCEEDED, None), 1: ("b", StepStatus.FAILED, "boom")})
    journal.rows[0]["undo_data"] = {"volume": "recorded.qcow2"}
    with pytest.raises(SagaFailed):
        run(steps, journal)
    assert seen == [{"volume": "recorded.qcow2"}]


def test_what_steps_tell_is_returned_and_their_durations_are_measured() -> None:
    from prometheus_client import REGISTRY

    def observed(step: str) -> float:
        labels = {"kind": "told", "step": step, "outcome": "succeeded"}
        return REGISTRY.get_sample_value("iaas_saga_step_duration_seconds_count", labels) or 0.0

    steps: list[Step[Any]] = [
        Step("quiet", lambda _ctx: None),
        Step("stop", lambda _ctx: {"shutdown": "forced", "waited_s": 30.0}),
        Step("not_a_dict", lambda _ctx: ["ignored"]),
    ]
    before = observed("stop")
    told = SagaRun(
        name="told", steps=steps, ctx=None, journal=MemoryJournal(), failpoints=NO_FAILPOINTS
    ).run()
    assert told == {"shutdown": "forced", "waited_s": 30.0}
    assert observed("stop") == before + 1
