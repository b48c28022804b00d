"""Micro-batch helpers shared by the worker's batched agents (processing, device index, sinks).

A batch's events are acked only after its body finished (`acked_batches`); a stateful agent's table
writes are held back until every record the batch produced is acked, and reads inside the batch see its
own writes (`HeldWrites`). Together they keep the rule each agent relies on for at-least-once (outputs
durable before the state that says they were made) while producing a whole batch with one ack wait
(`OutputProducer.send_all`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from typing import Any

from app.runtime.outputs import Record

#: Events per micro-batch of the stateful agents, and how long to wait for a batch to fill. Below a
#: backlog each batch pays fixed costs (a produce request and its ack wait, changelog writes, the
#: read-back agents' own batches): at 377/s on 2 cores a 50 ms wait cost the worker 0.76-0.79 of a core
#: against 0.84-0.89 at 10 ms, and cut the end-to-end p99 (362-503 ms against 624-852; 100 ms: 0.71 of a
#: core, p99 499-519). Under a backlog the batches fill at once and the wait does not apply.
BATCH_MAX = 250
BATCH_WITHIN = 0.05


async def acked_batches(stream: Any, size: int, within: float) -> AsyncIterator[list[Any]]:
    """Micro-batches of a faust agent's stream, in partition order; each batch's events are acked when the
    caller asks for the next batch, so a batch whose body raised (or never ended) is never committed."""
    s = stream.noack()
    async for events in s.noack_take(size, within=within):
        yield events
        for event in events:
            await s.ack(event)


def write_held(context: Any, table: MutableMapping[Any, Any], writes: Iterable[tuple[Any, Any, Any]]) -> None:
    """Write `(event, key, value)`s to a faust table, each under its event (so in that event's partition).

    `context` is the agent's parent stream: setting the current event on the stream `noack_take` fills
    would make it re-buffer an old event in place of a new one (bench/README.md)."""
    for event, key, value in writes:
        context._set_current_event(event)
        table[key] = value


#: What `HeldWrites` holds for a key the batch deleted (`pop`): a tombstone on `flush`.
_DELETED = object()


class HeldWrites:
    """A table view for one micro-batch: `get` sees the batch's own writes (and deletions) first;
    `__setitem__` and `pop` only remember the change and the event it belongs to, and `flush` applies
    them to the table."""

    def __init__(self, table: MutableMapping[Any, Any], context: Any) -> None:
        self.table = table
        self.context = context
        self.event: Any = None
        self._writes: dict[Any, tuple[Any, Any]] = {}

    def at(self, event: Any) -> HeldWrites:
        """Make `event` the current one: table reads and later writes use its partition."""
        self.event = event
        self.context._set_current_event(event)
        return self

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self._writes:
            value = self._writes[key][1]
            return default if value is _DELETED else value
        return self.table.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._writes[key] = (self.event, value)

    def pop(self, key: Any, default: Any = None) -> Any:
        """Delete `key` as of this batch (later `get`s see nothing); returns what it held."""
        before = self.get(key, default)
        self._writes[key] = (self.event, _DELETED)
        return before

    def flush(self) -> None:
        """Apply the held changes to the table, each under the event that made it last (a deletion
        as `pop`: faust writes a tombstone on the changelog)."""
        for key, (event, value) in self._writes.items():
            self.context._set_current_event(event)
            if value is _DELETED:
                self.table.pop(key, None)
            else:
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
