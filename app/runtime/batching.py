"""Micro-batch helpers shared by the worker's stateful agents: a batch's table writes are held back until
every record the batch produced is acked, and reads inside the batch see its own writes.

This keeps the rule each agent relies on for at-least-once (outputs durable before the state that
says they were made) while producing a whole batch with one ack wait (`OutputProducer.send_all`).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from app.runtime.outputs import Record


class HeldWrites:
    """A table view for one micro-batch: `get` sees the batch's own writes first; `__setitem__` only
    remembers the value and the event it belongs to, and `flush` writes them to the table."""

    def __init__(self, table: MutableMapping[Any, Any], context: Any) -> None:
        self.table = table
        self.context = context  # the agent's parent stream: points faust's current event at each write
        self.event: Any = None
        self._writes: dict[Any, tuple[Any, Any]] = {}

    def at(self, event: Any) -> HeldWrites:
        """Make `event` the current one: table reads and later writes use its partition."""
        self.event = event
        self.context._set_current_event(event)
        return self

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self._writes:
            return self._writes[key][1]
        return self.table.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._writes[key] = (self.event, value)

    def flush(self) -> None:
        """Write the held values to the table, each under the event that wrote it last."""
        for key, (event, value) in self._writes.items():
            self.context._set_current_event(event)
            self.table[key] = value
        self._writes.clear()


class HeldSends:
    """The records a micro-batch produces, held in order until `OutputProducer.send_all` sends them."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def sender(self, topic: str) -> Callable[[bytes | None, bytes], Any]:
        async def send(key: bytes | None, value: bytes) -> None:
            self.records.append((topic, key, value))

        return send
