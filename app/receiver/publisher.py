"""Durable publishing for HTTP inputs: a record counts as accepted only once Kafka acked it (acks=all).

The number of produces awaiting an ack is bounded; past the bound, or while the broker is unreachable,
`publish` raises `PublishUnavailable` and the handler answers 503 + Retry-After. Nothing is buffered
behind a 200 (docs/reference.md#durable-before-the-200). A request with more records than the bound (a
Segment batch of up to 4,000 calls) goes through `publish_all`, in chunks the bound leaves room for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from app.kafka import data_producer_config, tls_problem
from app.sections import ReceiverSettings
from app.topics import ensure_topics

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """Kafka cannot take the record now; the client should retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Batcher:
    """Records handed over while one is being written go to Kafka together: one aiokafka batch per
    partition, each record awaiting its own future settled by the batch's ack.

    aiokafka's `send` spends more per record than the handler's own work (a metadata wait, a size
    estimate, the partitioner's lists, an accumulator coroutine, a future and a metadata tuple), and
    batches form anyway: aiokafka keeps one produce request in flight per broker. Records are
    partitioned exactly as `send` does (`DefaultPartitioner` over `partitions_for`), appended in the
    order they arrived, and a future is settled only by the ack (or failure) of the batch holding it.
    """

    def __init__(self, producer: AIOKafkaProducer, timeout: float) -> None:
        self.producer = producer
        self.timeout = timeout
        self.partitioner = DefaultPartitioner()
        self.queued: dict[str, list[tuple[bytes, bytes, asyncio.Future[None]]]] = {}
        self.flushers: dict[str, asyncio.Task[None]] = {}
        #: (deadline, future) in the order added, so deadlines only grow: one timer for all of them
        #: instead of an `asyncio.timeout` (a timer handle on the loop's heap) per record.
        self.deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.expirer: asyncio.TimerHandle | None = None

    def add(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        """A future set once Kafka acked the record (or failed to), or with `TimeoutError` when neither
        happened within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        deadlines = self.deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        deadline = loop.time() + self.timeout
        deadlines.append((deadline, done))
        if self.expirer is None:
            self.expirer = loop.call_at(deadline, self._expire)
        queue = self.queued.get(topic)
        if queue is None:
            queue = self.queued[topic] = []
        queue.append((key, value, done))
        if topic not in self.flushers:
            self.flushers[topic] = asyncio.create_task(self._flush(topic))
        return done

    def _expire(self) -> None:
        """Fail the futures past their deadline; wake again at the next pending one's."""
        loop = asyncio.get_running_loop()
        now, deadlines = loop.time(), self.deadlines
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, done = deadlines.popleft()
            if not done.done():
                done.set_exception(TimeoutError())
        self.expirer = loop.call_at(deadlines[0][0], self._expire) if deadlines else None

    async def _flush(self, topic: str) -> None:
        try:
            while queue := self.queued.pop(topic, None):
                await self._write(topic, queue)
        finally:
            del self.flushers[topic]

    async def _write(self, topic: str, records: list[tuple[bytes, bytes, asyncio.Future[None]]]) -> None:
        producer = self.producer
        handed: set[asyncio.Future[None]] = set()  # in a batch aiokafka took: its ack settles them
        try:
            partitions = list(await producer.partitions_for(topic))
            by_partition: dict[int, list[tuple[bytes, bytes, asyncio.Future[None]]]] = {}
            for record in records:
                partition = self.partitioner(record[0], partitions, partitions)
                by_partition.setdefault(partition, []).append(record)
            for partition, share in by_partition.items():
                builder = producer.create_batch()
                members: list[asyncio.Future[None]] = []
                for key, value, done in share:
                    if builder.append(timestamp=None, key=key, value=value) is None:  # full
                        await self._submit(builder, topic, partition, members)
                        handed.update(members)
                        builder, members = producer.create_batch(), []
                        builder.append(timestamp=None, key=key, value=value)  # an empty batch takes any
                    members.append(done)
                await self._submit(builder, topic, partition, members)
                handed.update(members)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else KafkaError("producer stopped")
            for _, _, done in records:
                if done not in handed and not done.done():
                    done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise

    async def _submit(
        self, builder: BatchBuilder, topic: str, partition: int, members: list[asyncio.Future[None]]
    ) -> None:
        acked = await self.producer.send_batch(builder, topic, partition=partition)

        def settle(result: asyncio.Future[object]) -> None:
            failure = None if result.cancelled() else result.exception()
            for done in members:
                if done.done():
                    continue
                if failure is None and not result.cancelled():
                    done.set_result(None)
                else:
                    done.set_exception(failure or KafkaError("produce cancelled"))

        acked.add_done_callback(settle)


class Publisher:
    """One aiokafka producer with a bounded number of in-flight produces and a readiness signal."""

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings
        self.max_pending = settings.kseg_max_pending_produces
        self.timeout = settings.kseg_produce_timeout
        self.pending = 0
        self.producer: AIOKafkaProducer | None = None
        self.last_failure: float | None = None
        self.last_success: float | None = None
        self._connector: asyncio.Task[None] | None = None
        self._ensurer: asyncio.Task[None] | None = None
        self._batcher: _Batcher | None = None
        #: Records at least this large keep aiokafka's own `send` (and its size checks).
        self._batch_bytes = settings.kseg_data_batch_bytes

    @property
    def ready(self) -> bool:
        """Connected, not saturated, and the last produce did not fail (or succeeded since)."""
        if self.producer is None or self.pending >= self.max_pending:
            return False
        if self.last_failure is None:
            return True
        return self.last_success is not None and self.last_success > self.last_failure

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self.producer is None:
            producer = AIOKafkaProducer(
                **data_producer_config(self.settings, f"{self.settings.kseg_app_id}-receiver")
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                # aiokafka only says "Unable to bootstrap"; a TLS problem gets its reason and its fix.
                reason = await tls_problem(self.settings) or str(exc)
                log.warning("Kafka not reachable at %s (%s); retrying", self.settings.bootstrap, reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._batcher = _Batcher(producer, self.timeout)
            self.producer = producer
            log.info("producer connected to %s", self.settings.bootstrap)

    def _recreate_topics_soon(self) -> None:
        """After a failure, make sure the topics exist again (a restarted memory broker has none)."""
        if self._ensurer is not None and not self._ensurer.done():
            return

        async def ensure() -> None:
            with contextlib.suppress(Exception):
                await ensure_topics(self.settings, timeout=self.timeout)
            await asyncio.sleep(2.0)  # at most one attempt every few seconds

        self._ensurer = asyncio.create_task(ensure())

    async def stop(self) -> None:
        if self._ensurer is not None:
            self._ensurer.cancel()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self._batcher is not None:
            for flusher in list(self._batcher.flushers.values()):
                flusher.cancel()
            if self._batcher.expirer is not None:
                self._batcher.expirer.cancel()
            for _, done in self._batcher.deadlines:  # any left after the producer's own flush
                if not done.done():
                    done.set_exception(KafkaError("producer stopped"))
            self._batcher = None

    async def publish(self, topic: str, key: str | None, value: bytes) -> float:
        """Produce and wait for the ack; returns the produce latency in seconds."""
        producer = self.producer
        if producer is None:
            raise PublishUnavailable("kafka_not_connected")
        if self.pending >= self.max_pending:
            raise PublishUnavailable("backpressure")
        self.pending += 1
        started = time.perf_counter()
        try:
            # `asyncio.timeout`, not `wait_for`: the same deadline without a task per produce.
            if key and self._batcher is not None and len(value) < self._batch_bytes:
                await self._batcher.add(topic, key.encode(), value)  # fails with TimeoutError itself
            else:  # no key (aiokafka picks a partition at random) or over a batch: aiokafka's send
                async with asyncio.timeout(self.timeout):
                    await (await producer.send(topic, value=value, key=key.encode() if key else None))
        except (KafkaError, TimeoutError, OSError) as exc:
            self.last_failure = time.monotonic()
            log.warning("produce to %s failed: %r", topic, exc)
            self._recreate_topics_soon()
            raise PublishUnavailable("kafka_unavailable") from exc
        finally:
            self.pending -= 1
        self.last_success = time.monotonic()
        return time.perf_counter() - started

    async def publish_all(self, topic: str, records: Sequence[tuple[str | None, bytes]]) -> None:
        """Make every (key, value) durable, at most half the in-flight bound at a time; any failure
        fails the whole call (the sender retries the request, and its records are the same ones again:
        every consumer of these topics applies a repeated record as a no-op)."""
        chunk = max(1, self.max_pending // 2)
        for start in range(0, len(records), chunk):
            results = await asyncio.gather(
                *(self.publish(topic, key, value) for key, value in records[start : start + chunk]),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
