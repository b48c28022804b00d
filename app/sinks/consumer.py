"""A sink's outbox consumer: a plain aiokafka consumer group reading batches, outside faust's per-record
machinery (no tables, no per-event stream bookkeeping), in its own task of the worker process or of a
`kseg sinks` process (KSEG_WORKER_SINKS).

The rules it keeps (README "Delivery guarantees"):
- a batch's offsets are committed only after `handle` returned, i.e. after every record in it was
  delivered or dead-lettered (at most `COMMIT_INTERVAL` later; at once when idle, revoked or stopping);
  a batch whose `handle` raised is read again (same messageIds), one that never ends (a sink held by a
  401) is never committed, and the partitions' next owner reads it again;
- records of one partition (one device's) are handed over in partition order, a batch at a time;
- while `handle` runs the consumer keeps polling with its partitions paused, so a long delivery (an
  outage retried with backoff, a held sink) keeps its place in the group instead of being evicted;
- each sink has its own group and task: one sink's outage never holds another's offsets.

On its first assignment a partition with no committed offset in the sink's group starts from the
worker group's committed offset for it (`adopt_from`): a worker upgraded from the faust agents resumes
where they stopped instead of re-reading the whole retained outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service

from app.kafka import client_config
from app.runtime.watchdog import AgentActivity, PartitionOffsets
from app.sections import KafkaSettings

log = logging.getLogger(__name__)

#: Handles one batch: returns once every record is delivered or dead-lettered.
Handle = Callable[[list[ConsumerRecord[Any, Any]]], Awaitable[None]]

#: How often a consumer whose batch is still being delivered polls (paused) to stay in its group.
KEEPALIVE_SECONDS = 1.0
#: Wait before a batch that failed is read again.
RETRY_SECONDS = 1.0
#: Longest time delivered offsets wait to be committed (faust's agents committed every 2.8 s): a commit
#: per interval rather than per batch, and a crash re-delivers at most that much (same messageIds).
COMMIT_INTERVAL = 1.0


class _Adopt(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment: remember each partition's committed offset, adopting the worker group's where the
    sink's own group has none yet."""

    def __init__(self, sink: SinkConsumer) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.flush(force=True)  # still this generation's member: commit what was delivered
        for tp in revoked:
            self.sink.committed.pop(tp, None)
            self.sink.read.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Paused while it looks offsets up: the fetcher runs meanwhile and must not hand out records
        read from the reset position (the earliest) before the adopted offset is in place."""
        consumer = self.sink.consumer
        assert consumer is not None
        consumer.pause(*assigned)
        try:
            await self._place(consumer, assigned)
        finally:
            consumer.resume(*assigned)

    async def _place(self, consumer: AIOKafkaConsumer, assigned: Any) -> None:
        missing: list[TopicPartition] = []
        for tp in assigned:
            offset = await consumer.committed(tp)
            if offset is None:
                missing.append(tp)
            else:
                self.sink.committed[tp] = offset
        if missing and self.sink.adopt_from:
            for tp, offset in (await self.sink.adopted_offsets(missing)).items():
                consumer.seek(tp, offset)
                self.sink.committed[tp] = offset
                log.info("%s: %s[%d] starts at %d, the worker group's offset", self.sink.name, *tp, offset)


class SinkConsumer(Service):
    """One sink's consumer group over its outbox topic; started and stopped with the faust app
    (`faust_app.add_dependency`), after the output producer its dead letters go through."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        name: str,
        topic: str,
        group: str,
        handle: Handle,
        batch_max: int,
        linger: float,
        activity: AgentActivity,
        batch_bytes: int = 2_000_000,
        fetch_wait_ms: int | None = None,
        adopt_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.name = name
        self.topic = topic
        self.group = group
        self.handle = handle
        self.batch_max = batch_max
        #: A batch stops growing past this many value bytes: one packed record holds a partition's share
        #: of a whole micro-batch, so `batch_max` records alone would not bound memory.
        self.batch_bytes = batch_bytes
        #: The fetch wait (default: the worker's KSEG_FETCH_MAX_WAIT_MS). On the embedded broker an empty
        #: fetch is held for all of it, so an idle consumer sends one fetch per wait.
        self.fetch_wait_ms = fetch_wait_ms or settings.fetch_max_wait_ms
        self.linger = linger
        self.activity = activity
        self.adopt_from = adopt_from
        self.consumer: AIOKafkaConsumer | None = None
        #: Next offset to read per assigned partition as committed by this group (what is delivered).
        self.committed: dict[TopicPartition, int] = {}
        #: Offset of the last record handed to `handle` per partition.
        self.read: dict[TopicPartition, int] = {}
        self.batches = 0
        self._task: asyncio.Future[None] | None = None
        #: Next offset per partition of what was delivered but is not committed yet.
        self.delivered: dict[TopicPartition, int] = {}
        self._last_commit = 0.0

    def consumer_config(self) -> dict[str, Any]:
        settings = self.settings
        session_ms = int(settings.kseg_session_timeout * 1000)
        return client_config(settings) | {
            "group_id": self.group,
            "client_id": f"{settings.kseg_app_id}-{settings.kseg_worker_id}-{self.name}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": max(100, min(3000, session_ms // 6)),
            "rebalance_timeout_ms": max(session_ms, 10_000),
            "fetch_max_wait_ms": self.fetch_wait_ms,
            "max_poll_records": self.batch_max,
        }

    async def on_start(self) -> None:
        """Start the consumer, then subscribe: the group join goes on in the background (the first fetch
        waits for it). Subscribed before `start()`, aiokafka waits there for the assignment, and the worker
        started its sinks one after the other, each join (~4 s on the embedded broker) before faust's."""
        self.consumer = AIOKafkaConsumer(**self.consumer_config())
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Adopt(self))
        self._task = asyncio.ensure_future(self._consume())

    async def on_stop(self) -> None:
        """Stop reading first (a batch in delivery is abandoned uncommitted), then leave the group."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush(force=True)
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None

    async def adopted_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The `adopt_from` group's committed offsets for `tps` (those it has)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**client_config(self.settings))
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(self.adopt_from, partitions=tps)
        except KafkaError as exc:
            log.warning("%s: cannot read group %s's offsets (%s)", self.name, self.adopt_from, exc)
            return {}
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in found.items() if tp in tps and meta.offset >= 0}

    def offsets(self) -> dict[Any, PartitionOffsets]:
        """Where each assigned partition stands (the worker's `kseg_consumer_lag` and /debug/partitions)."""
        consumer = self.consumer
        if consumer is None:
            return {}
        paused = consumer.paused()
        return {
            tp: PartitionOffsets(
                self.read.get(tp), self.committed.get(tp), consumer.highwater(tp), tp not in paused
            )
            for tp in consumer.assignment()
        }

    async def _consume(self) -> None:
        while True:
            try:
                batch = await self.take()
            except KafkaError as exc:  # the broker is away: aiokafka reconnects, try again
                log.warning("%s: fetch failed (%s); retrying", self.name, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not batch:
                continue
            try:
                with self.activity.working(self.name):
                    await self.while_polling(self.handle(batch))
            except Exception:
                # Not delivered (e.g. a dead letter could not be written): read the batch again later.
                log.exception(
                    "%s: a batch of %d failed; retrying it from its first offsets", self.name, len(batch)
                )
                self.rewind(batch)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.delivered_batch(batch)
            self.batches += 1
            await self.flush()

    def rewind(self, batch: list[ConsumerRecord[Any, Any]]) -> None:
        """Seek each of the batch's partitions back to its first record in the batch."""
        consumer = self.consumer
        assert consumer is not None
        first: dict[TopicPartition, int] = {}
        for rec in batch:
            first.setdefault(TopicPartition(rec.topic, rec.partition), rec.offset)
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:  # one moved away meanwhile restarts from its committed offset elsewhere
                consumer.seek(tp, offset)

    async def take(self) -> list[ConsumerRecord[Any, Any]]:
        """Up to `batch_max` records: what the first fetch returns, topped up for at most `linger`
        seconds while the batch is below `batch_max` records and `batch_bytes` bytes (each partition's
        records in order)."""
        consumer = self.consumer
        assert consumer is not None
        fetched = await consumer.getmany(timeout_ms=1000, max_records=self.batch_max)
        batch = [rec for recs in fetched.values() for rec in recs]
        if not batch:
            await self.flush(force=True)  # idle: what was delivered is committed now
            return batch
        deadline = time.monotonic() + self.linger
        size = sum(len(rec.value or b"") for rec in batch)
        while len(batch) < self.batch_max and size < self.batch_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await consumer.getmany(
                timeout_ms=int(left * 1000), max_records=self.batch_max - len(batch)
            )
            added = [rec for recs in more.values() for rec in recs]
            batch.extend(added)
            size += sum(len(rec.value or b"") for rec in added)
        for rec in batch:
            self.read[TopicPartition(rec.topic, rec.partition)] = rec.offset
        return batch

    async def while_polling(self, work: Awaitable[None]) -> None:
        """Run `work`, polling with every partition paused meanwhile (membership, not records)."""
        consumer = self.consumer
        assert consumer is not None
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
                if done:
                    task.result()
                    return
                consumer.pause(*consumer.assignment())  # and those a rebalance assigned meanwhile
                fetched = await consumer.getmany(timeout_ms=0)
                for tp, recs in fetched.items():
                    if recs:
                        consumer.seek(tp, recs[0].offset)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.consumer is not None:
                self.consumer.resume(*self.consumer.assignment())

    def delivered_batch(self, batch: list[ConsumerRecord[Any, Any]]) -> None:
        """Note a handled batch's offsets for the next commit."""
        for rec in batch:
            tp = TopicPartition(rec.topic, rec.partition)
            self.delivered[tp] = max(self.delivered.get(tp, 0), rec.offset + 1)

    async def flush(self, *, force: bool = False) -> None:
        """Commit the delivered offsets, at most once per `COMMIT_INTERVAL` unless `force`d (idle, a
        revocation, stopping). A commit refused after a rebalance leaves those batches to the partitions'
        new owner (delivered twice with the same messageIds, never lost)."""
        consumer = self.consumer
        if consumer is None or not self.delivered:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_INTERVAL:
            return
        offsets, self.delivered = self.delivered, {}
        self._last_commit = now
        try:
            await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
        except KafkaError as exc:
            log.warning(
                "%s: offset commit failed after delivery (%s); those records will be redelivered",
                self.name,
                exc,
            )
            return
        self.committed.update(offsets)
