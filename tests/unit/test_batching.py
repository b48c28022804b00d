"""`HeldWrites` and `HeldSends`: a micro-batch reads its own writes, and writes reach the table only on
`flush`, each under the event that wrote it last (so faust puts it in that event's partition)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.runtime.batching import HeldSends, HeldWrites


class Context:
    """Stands in for faust's parent stream: the event that is current."""

    current: Any = None

    def _set_current_event(self, event: Any) -> None:
        self.current = event


class Table(dict[Any, Any]):
    """A dict that records which event was current at each write and deletion (faust's partition
    choice): `writes` as (key, value, event), `changes` as (set|pop, key, event)."""

    def __init__(self, context: Context, *args: Any) -> None:
        super().__init__(*args)
        self.context = context
        self.writes: list[tuple[Any, Any, Any]] = []
        self.changes: list[tuple[str, Any, Any]] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.writes.append((key, value, self.context.current))
        self.changes.append(("set", key, self.context.current))
        super().__setitem__(key, value)

    def pop(self, key: Any, default: Any = None) -> Any:
        self.changes.append(("pop", key, self.context.current))
        return super().pop(key, default)


def test_reads_see_the_batch_writes_and_the_table_only_after_flush() -> None:
    context = Context()
    table = Table(context, {b"a": b"old"})
    held = HeldWrites(table, context)
    held.at("event-1")[b"a"] = b"one"
    held.at("event-2")[b"b"] = b"two"
    assert held.get(b"a") == b"one" and held.get(b"b") == b"two" and held.get(b"c", b"-") == b"-"
    assert table == {b"a": b"old"} and table.writes == []
    held.at("event-3")[b"a"] = b"three"
    held.flush()
    assert table == {b"a": b"three", b"b": b"two"}
    assert sorted(table.writes) == [(b"a", b"three", "event-3"), (b"b", b"two", "event-2")]
    held.flush()  # nothing held any more
    assert len(table.writes) == 2


def test_held_sends_keep_order_across_topics() -> None:
    sends = HeldSends()
    index, events = sends.sender("t.index"), sends.sender("t.events")

    async def run() -> None:
        await index(b"k1", b"1")
        await events(b"k2", b"2")
        await index(None, b"3")

    asyncio.run(run())
    assert sends.records == [("t.index", b"k1", b"1"), ("t.events", b"k2", b"2"), ("t.index", None, b"3")]


# ---- deletions (`HeldWrites.pop`): seen by the batch at once, applied on flush; the last change wins


def test_a_deletion_is_seen_by_the_batch_and_applied_on_flush() -> None:
    context = Context()
    table = Table(context, {b"a": b"old", b"b": b"kept"})
    held = HeldWrites(table, context)
    assert held.at("event-1").pop(b"a") == b"old"
    assert held.get(b"a") is None and held.get(b"a", b"-") == b"-"
    assert table == {b"a": b"old", b"b": b"kept"} and table.changes == []
    held.flush()
    assert table == {b"b": b"kept"}
    assert table.changes == [("pop", b"a", "event-1")]


def test_a_write_after_a_deletion_in_the_same_batch_wins() -> None:
    context = Context()
    table = Table(context, {b"a": b"old"})
    held = HeldWrites(table, context)
    held.at("event-1")[b"a"] = b"new"
    assert held.pop(b"a") == b"new"
    held.at("event-2")[b"a"] = b"newer"
    assert held.get(b"a") == b"newer"
    held.flush()
    assert table == {b"a": b"newer"} and table.changes == [("set", b"a", "event-2")]


def test_a_deletion_after_a_write_deletes() -> None:
    context = Context()
    table = Table(context, {})
    held = HeldWrites(table, context)
    held.at("event-1")[b"a"] = b"one"
    held.at("event-2").pop(b"a")
    held.flush()
    assert table == {} and table.changes == [("pop", b"a", "event-2")]
