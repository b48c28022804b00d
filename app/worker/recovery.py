"""Table recovery that stays exact when the changelogs are written in multi-record batches on the
embedded broker.

faust restores a table partition by reading its changelog up to the end offset the broker reports
(`Recovery._build_highwaters`). Tansu reports the base offset of a partition's last batch + 1, so with
real batches the rest of that batch lies past the reported end: a worker restarted on its own RocksDB
then finds its persisted offset beyond the "end" and stops with faust's ConsistencyError, and a worker
taking a partition over may stop reading before the batch's last records. Here the end is found by
reading past the reported one (`app.kafka.exact_end_offsets`) before recovery starts; on Apache Kafka,
whose end offsets are exact, nothing changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

#: Given the end offsets the broker reports, the real ones (None: trust the broker).
EndOffsets = Callable[[Mapping[TP, int]], Awaitable[Mapping[TP, int]]]


class ExactEndRecovery(Recovery):
    """faust's recovery with each changelog partition's end counted by reading when the app asks for it
    (`KsegApp.changelog_ends`)."""

    async def _build_highwaters(self, consumer: Any, tps: Any, destination: Counter[TP], title: str) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        ends: EndOffsets | None = getattr(self.app, "changelog_ends", None)
        if ends is None or not tps:
            return
        # faust keeps end - 1 (the last offset), -1 for an empty partition.
        reported = {tp: destination[tp] + 1 for tp in tps if destination.get(tp, -1) >= 0}
        exact = await ends(reported)
        moved = {tp: end for tp, end in exact.items() if end != reported.get(tp)}
        for tp, end in moved.items():
            destination[tp] = end - 1
        if moved:
            self.log.info(
                "Changelog ends past the reported ones (%s): %s",
                title,
                ", ".join(
                    f"{tp.topic}[{tp.partition}] {reported[tp]}->{end}" for tp, end in sorted(moved.items())
                ),
            )

    async def _build_offsets(self, consumer: Any, tps: Any, destination: Counter[TP], title: str) -> None:
        """Where reading starts: the persisted offset, else the beginning. faust also skips to the
        earliest offset the broker reports, which once came back as the partition's end from the
        embedded broker for a worker taking partitions over (it then restored nothing); nothing is ever
        deleted from the embedded broker's in-memory changelogs, so reading from 0 loses nothing."""
        if getattr(self.app, "changelog_ends", None) is None:
            await super()._build_offsets(consumer, tps, destination, title)
            return
        for tp in tps:
            if destination.get(tp) is None:
                destination[tp] = -1


class KsegTableManager(TableManager):
    """faust's table manager with `ExactEndRecovery` (faust's `TableManager` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ExactEndRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
