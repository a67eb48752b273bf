"""Sagas: a VM task as an ordered list of idempotent steps with undos, journaled in PostgreSQL.

`engine` runs the steps and compensates; `journal` records them; `failpoints` lets tests break them;
`runner` is the shape of every task (claim, heartbeat, run, finish); `create`, `destroy` and `power`
are the step lists."""
