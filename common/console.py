"""A VM's serial console log as the API and the worker exchange it: the remote-control command the
API sends to the worker of the VM's host, its limits, and its reply.

The API cannot read the log itself (virtlogd writes it as root, 0600, on the VM's host), so it asks
the one worker that can. Celery's JSON serializer carries text, so the bytes travel in base64."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

# The Celery remote-control command (worker/control.py), a fixed string: the API sends it without
# importing the worker.
CONSOLE_TAIL = "console_tail"
DEFAULT_TAIL_BYTES = 64 * 1024
MAX_TAIL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ConsoleTail:
    """The last bytes of a console log, where they start in it, and the log's whole size (0, with no
    bytes, when there is no log yet)."""

    data: bytes
    offset: int
    size: int

    def to_reply(self) -> dict[str, Any]:
        return {"data": base64.b64encode(self.data).decode("ascii"), "offset": self.offset, "size": self.size}

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> ConsoleTail:
        return cls(base64.b64decode(reply["data"], validate=True), int(reply["offset"]), int(reply["size"]))
