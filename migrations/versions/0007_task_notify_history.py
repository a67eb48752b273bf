"""Waiting for tasks and reading their history.

- Triggers that `pg_notify('iaas_task', <task id>)` whenever a task changes in a way its JSON shows,
  or one of its steps is written: the API's long-poll (`GET /v1/tasks/<id>?wait=`) wakes on them
  (api/task_events.py). A trigger, not calls in the code, so that every writer (API, worker, sweeps,
  reconcile) notifies, in the transaction that writes, delivered only when it commits. A lease
  renewal changes nothing a client sees and notifies nobody; nor does an INSERT into `tasks` (no one
  can be waiting for a task that did not exist).
- Indexes for the histories, newest first: a VM's tasks (also what `latest_task_id` reads), and a
  project's, by (created_at, id) as the cursor walks them (replacing `tasks_by_project`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "iaas_task"  # api/task_events.CHANNEL
# The columns of `tasks` that GET /v1/tasks/<id> shows and that can change after the INSERT.
_SHOWN = ("status", "vm_id", "host", "attempts", "result", "error", "queued_at", "started_at", "finished_at")


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION iaas_notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.id::text);
            RETURN NULL;
        END $$;
        CREATE FUNCTION iaas_notify_task_step() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.task_id::text);
            RETURN NULL;
        END $$;
        """
    )
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in _SHOWN)
    op.execute(
        f"CREATE TRIGGER tasks_notify AFTER UPDATE ON tasks FOR EACH ROW WHEN ({changed}) "
        "EXECUTE FUNCTION iaas_notify_task()"
    )
    op.execute(
        "CREATE TRIGGER task_steps_notify AFTER INSERT OR UPDATE ON task_steps FOR EACH ROW "
        "EXECUTE FUNCTION iaas_notify_task_step()"
    )
    op.create_index("tasks_by_vm", "tasks", ["vm_id", "created_at", "id"])
    op.create_index("tasks_by_project_created_id", "tasks", ["project_id", "created_at", "id"])
    op.drop_index("tasks_by_project", table_name="tasks")


def downgrade() -> None:
    op.create_index("tasks_by_project", "tasks", ["project_id", "created_at"])
    op.drop_index("tasks_by_project_created_id", table_name="tasks")
    op.drop_index("tasks_by_vm", table_name="tasks")
    op.execute("DROP TRIGGER task_steps_notify ON task_steps")
    op.execute("DROP TRIGGER tasks_notify ON tasks")
    op.execute("DROP FUNCTION iaas_notify_task_step()")
    op.execute("DROP FUNCTION iaas_notify_task()")
