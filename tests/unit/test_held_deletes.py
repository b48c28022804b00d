"""`HeldWrites.pop`: a micro-batch's deletion is seen by its own later reads at once, reaches the table only
on `flush` (as a `pop`, under the event that made it), and a later write in the same batch wins."""

from __future__ import annotations

from typing import Any

from app.runtime.batching import HeldWrites


class Context:
    """Stands in for faust's parent stream: the event that is current."""

    current: Any = None

    def _set_current_event(self, event: Any) -> None:
        self.current = event


class Table(dict[Any, Any]):
    """A dict that records each write and deletion with the event current at the time."""

    def __init__(self, context: Context, *args: Any) -> None:
        super().__init__(*args)
        self.context = context
        self.changes: list[tuple[str, Any, Any]] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.changes.append(("set", key, self.context.current))
        super().__setitem__(key, value)

    def pop(self, key: Any, default: Any = None) -> Any:
        self.changes.append(("pop", key, self.context.current))
        return super().pop(key, default)


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
