"""`kseg warehouse load`: warehouse rows and spend rows from Kafka into the warehouse, exactly once per event.

A sink connector in the manner of Kafka Connect's JDBC sink: its own consumer group, batches of up to
KSEG_WAREHOUSE_BATCH_ROWS records, one database transaction per batch, and the Kafka offsets committed
only after that transaction committed. A crash in between redelivers the batch, and the insert-ignore on
event_id (upsert for spend) makes the redelivery harmless. While the database is down the loader holds
its batch, pauses its partitions (staying in the group), retries with backoff, reports not-ready and
lets the lag grow where Prometheus sees it; the rest of the pipeline does not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from app import topics
from app.dlq.writer import dead_letter_record
from app.kafka import client_config, producer_config
from app.records import (
    DeadLetter,
    DeliveryReceipt,
    ProcessingReceipt,
    RawPostback,
    decode_object,
    decode_or_dead_letter,
)
from app.runtime.health import Health, healthz, readyz_response
from app.sections import WarehouseSettings
from app.warehouse import sql
from app.warehouse.metrics import LoaderMetrics
from app.warehouse.schemas import CAMPAIGN_SPEND, WAREHOUSE_ROW, problem
from app.warehouse.store import ensure_schema, write_batch
from app.warehouse.trace_tables import (
    TraceRows,
    dead_letter_row,
    postback_row,
    processing_rows,
    prune,
    receipt_rows,
    write_trace,
)

log = logging.getLogger(__name__)

#: Seconds between two prunes of the trace tables.
PRUNE_EVERY = 600.0


@dataclass
class Parsed:
    """One polled batch, sorted into event rows, spend rows and dead letters."""

    events: list[dict[str, Any]] = field(default_factory=list)
    spend: list[dict[str, Any]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    trace: TraceRows = field(default_factory=TraceRows)
    #: Records of the dead-letter topic that are not dead letters (logged, not re-lettered).
    skipped: int = 0


def parse_records(
    records: list[ConsumerRecord[Any, Any]], warehouse_topic: str, trace_topics: dict[str, str] | None = None
) -> Parsed:
    """Decode and validate each record against its topic's published schema; failures become letters.
    `trace_topics` maps the full names of the raw, receipt and dead-letter topics to their logical names."""
    out = Parsed()
    trace_topics = trace_topics or {}
    for rec in records:
        logical = trace_topics.get(rec.topic)
        if logical is not None:
            parse_trace(rec, logical, out)
            continue
        is_event = rec.topic == warehouse_topic
        value = decode_object(rec.value, stage="warehouse", reason="undecodable_row")
        if isinstance(value, DeadLetter):
            out.letters.append(value.model_copy(update={"error": f"{_where(rec)}: {value.error}"}))
            continue
        why = problem(WAREHOUSE_ROW, value, open_ended=True) if is_event else problem(CAMPAIGN_SPEND, value)
        if why is not None:
            reason = "schema_violation" if is_event else "invalid_spend_row"
            out.letters.append(_letter(reason, why, value.get("event_id"), value, rec))
        elif is_event:
            out.events.append(value)
        else:
            out.spend.append(value)
    return out


#: The record class of each trace topic (logical name) and the reason its undecodable records get.
TRACE_RECORDS: dict[str, tuple[type[Any], str]] = {
    topics.RAW: (RawPostback, "invalid_trace_postback"),
    topics.RECEIPTS: (DeliveryReceipt, "invalid_delivery_receipt"),
    topics.PROCESSING_RECEIPTS: (ProcessingReceipt, "invalid_processing_receipt"),
    topics.DEADLETTER: (DeadLetter, "invalid_dead_letter"),
}


#: The loader's topics that carry people's data (all but campaign spend): a privacy deletion waits until
#: the loader has passed what they held when the request came (`app.privacy.agents`).
PERSONAL_TOPICS = (topics.WAREHOUSE, *TRACE_RECORDS)


def parse_trace(rec: Any, logical: str, out: Parsed) -> None:
    """A trace topic's record into its table rows. A bad record becomes a dead letter, except on the
    dead-letter topic itself (a letter about a letter would loop): that one is logged and counted."""
    model, reason = TRACE_RECORDS[logical]
    if logical == topics.DEADLETTER:
        letter = _dead_letter(rec)
        if letter is not None:
            out.trace.dead_letters.append(dead_letter_row(letter, rec.value, rec.partition, rec.offset))
        else:
            out.skipped += 1
        return
    found = decode_or_dead_letter(rec.value, model, stage="warehouse", reason=reason)
    if isinstance(found, DeadLetter):
        out.letters.append(found.model_copy(update={"error": f"{_where(rec)}: {found.error}"}))
    elif isinstance(found, RawPostback):
        out.trace.postbacks.append(postback_row(found, rec.partition, rec.offset))
        if found.source == "replay":
            out.trace.replayed.append(found.event_id)
    elif isinstance(found, DeliveryReceipt):
        out.trace.receipts += receipt_rows(found)
    elif isinstance(found, ProcessingReceipt):
        out.trace.processing += processing_rows(found)


def _dead_letter(rec: Any) -> DeadLetter | None:
    """The dead letter in a record of the dead-letter topic, or None (logged) when it is not one."""
    data = decode_object(rec.value, stage="warehouse", reason="invalid_dead_letter")
    error = data.error if isinstance(data, DeadLetter) else None
    if not isinstance(data, DeadLetter):
        try:
            return DeadLetter.model_validate(data)
        except ValidationError as exc:
            error = str(exc)
    log.warning("skipped a record of %s that is not a dead letter: %s", _where(rec), (error or "")[:300])
    return None


def _where(rec: Any) -> str:
    """Where a record was read: `topic[partition]@offset`."""
    return f"{rec.topic}[{rec.partition}]@{rec.offset}"


def _letter(reason: str, error: str, event_id: Any, payload: dict[str, Any], rec: Any) -> DeadLetter:
    return DeadLetter(
        stage="warehouse",
        reason=reason,
        error=f"{_where(rec)}: {error}",
        event_id=str(event_id) if event_id else None,
        payload=payload,
    )


class Loader:
    """The loader's state: consumer, producer (dead letters), database connection, metrics."""

    def __init__(
        self, settings: WarehouseSettings, target_url: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.url = target_url
        self.registry = registry or CollectorRegistry()
        self.metrics = LoaderMetrics.on(self.registry)
        self.health = Health()  # the same readiness rule and page as every process's
        self.health.block("consumer", "starting")
        self.health.block("database", "connecting")
        self.warehouse_topic = settings.topic(topics.WAREHOUSE)
        self.spend_topic = settings.topic(topics.SPEND)
        self.deadletter_topic = settings.topic(topics.DEADLETTER)
        #: The trace topics (full name -> logical name): postbacks, receipts and dead letters as they pass.
        self.trace_topics = {settings.topic(name): name for name in TRACE_RECORDS}
        self.pruned_at = 0.0
        self.committed: dict[TopicPartition, int] = {}
        self.event_commits = 0
        self.stopping = asyncio.Event()
        self._conn: Any = None
        self._columns: dict[str, str] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    # ---- database ------------------------------------------------------------------------------
    async def _connection(self) -> Any:
        from app.warehouse.db import connect_async

        if self._conn is None or self._conn.closed:
            self._conn = await connect_async(self.url)
            self._columns = await ensure_schema(self._conn, self.settings.kseg_reporting_currency)
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def write(self, parsed: Parsed) -> None:
        """Write the batch, retrying while the database is unreachable (never gives up, never skips)."""
        import psycopg

        delay = 0.5
        paused = False
        while True:
            try:
                conn = await self._connection()
                started = time.monotonic()
                result = await write_batch(conn, self._columns, parsed.events, parsed.spend)
                if len(parsed.trace):
                    async with conn.transaction():
                        traced = await write_trace(conn, parsed.trace)
                    self.metrics.rows.labels(table="trace").inc(traced)
                self.metrics.batch_seconds.observe(time.monotonic() - started)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.metrics.db_errors.labels(error=type(exc).__name__).inc()
                self.metrics.db_up.set(0)
                self.health.block("database", f"cannot write to the warehouse: {str(exc).strip()[:200]}")
                log.warning("warehouse unreachable (%s); retrying in %.1fs", str(exc).strip()[:200], delay)
                await self._drop_connection()
                if not paused and self.consumer is not None:
                    self.consumer.pause(*self.consumer.assignment())
                    paused = True
                await self._idle(delay)
                delay = min(delay * 2, self.settings.kseg_warehouse_retry_max)
                if self.stopping.is_set():
                    raise
            except psycopg.Error as exc:
                # The database rejects something in the batch: isolate the rows it rejects.
                await self._drop_connection()
                await self._write_one_by_one(parsed, exc)
                return
        if paused and self.consumer is not None:
            self.consumer.resume(*self.consumer.assignment())
        self._after_commit(result.events_inserted, result.events_duplicate, result.spend_upserted)
        if result.columns_added:
            self.metrics.columns_added.inc(len(result.columns_added))
            log.info("added columns to %s: %s", sql.EVENTS, ", ".join(result.columns_added))

    async def _prune_now_and_then(self) -> None:
        """Delete trace rows past KSEG_TRACE_RETENTION_DAYS, at most every PRUNE_EVERY seconds; a failure
        is logged and retried later (pruning must never stop loading)."""
        import psycopg

        if time.monotonic() - self.pruned_at < PRUNE_EVERY or self._conn is None:
            return
        self.pruned_at = time.monotonic()
        try:
            removed = await prune(self._conn, self.settings.kseg_trace_retention_days)
        except psycopg.Error as exc:
            log.warning("pruning the trace tables failed (%s); will retry", str(exc).strip()[:200])
            return
        if removed:
            log.info(
                "pruned %d trace row(s) older than %d days", removed, self.settings.kseg_trace_retention_days
            )

    async def _write_one_by_one(self, parsed: Parsed, first: Exception) -> None:
        import psycopg

        log.warning("the warehouse rejected a batch (%s); writing its rows one by one", first)
        conn = await self._connection()
        for kind, rows in (("events", parsed.events), ("spend", parsed.spend)):
            for row in rows:
                events, spend = ([row], []) if kind == "events" else ([], [row])
                try:
                    result = await write_batch(conn, self._columns, events, spend)
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                        raise
                    parsed.letters.append(
                        DeadLetter(
                            stage="warehouse",
                            reason="rejected_by_database",
                            error=str(exc).strip()[:2000],
                            event_id=row.get("event_id"),
                            payload=row,
                        )
                    )
                    continue
                self._after_commit(result.events_inserted, result.events_duplicate, result.spend_upserted)
        for single in parsed.trace.one_by_one():
            try:
                async with conn.transaction():
                    await write_trace(conn, single)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    raise
                parsed.letters.append(
                    DeadLetter(
                        stage="warehouse",
                        reason="rejected_by_database",
                        error=str(exc).strip()[:2000],
                        payload={"trace_row": [str(v) for v in single.first()]},
                    )
                )

    def _after_commit(self, inserted: int, duplicate: int, spend: int) -> None:
        self.metrics.db_up.set(1)
        self.health.unblock("database")
        self.metrics.rows.labels(table=sql.EVENTS).inc(inserted)
        self.metrics.rows.labels(table=sql.SPEND).inc(spend)
        self.metrics.duplicates.inc(duplicate)
        self.metrics.last_commit.set(time.time())

    async def _idle(self, seconds: float) -> None:
        """Wait while staying in the consumer group: poll paused partitions, rewind anything fetched."""
        consumer = self.consumer
        if consumer is None:
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping.is_set():
            consumer.pause(*consumer.assignment())  # partitions assigned by a rebalance meanwhile
            fetched = await consumer.getmany(timeout_ms=int(min(1.0, seconds) * 1000))
            for tp, recs in fetched.items():
                if recs:
                    consumer.seek(tp, recs[0].offset)

    # ---- Kafka ---------------------------------------------------------------------------------
    async def send_letters(self, letters: list[DeadLetter]) -> None:
        assert self.producer is not None
        futures = []
        for letter in letters:
            self.metrics.dead_letters.labels(reason=letter.reason).inc()
            key, value = dead_letter_record(letter, self.metrics.all_dead_letters)
            futures.append(await self.producer.send(self.deadletter_topic, key=key, value=value))
        for fut in futures:
            await fut

    async def commit(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
        except KafkaError as exc:
            # Partitions moved to another loader: it redelivers them, the insert-ignore absorbs it.
            self.metrics.commit_failures.inc()
            log.warning(
                "offset commit failed after the database commit (%s); records will be redelivered", exc
            )
            return
        self.committed.update(offsets)

    async def update_lag(self) -> None:
        """Lag = end offset - committed offset by topic (committed, not fetched: what is in the DB)."""
        consumer = self.consumer
        if consumer is None:
            return
        assigned = list(consumer.assignment())
        if not assigned:
            return
        ends = await consumer.end_offsets(assigned)
        per_topic: dict[str, int] = {
            self.warehouse_topic: 0,
            self.spend_topic: 0,
            **dict.fromkeys(self.trace_topics, 0),
        }
        for tp in assigned:
            if tp not in self.committed:
                self.committed[tp] = (await consumer.committed(tp)) or 0
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends[tp] - self.committed[tp])
        for topic, lag in per_topic.items():
            self.metrics.lag.labels(topic=topic).set(lag)

    async def _lag_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.update_lag()
            except Exception as exc:  # the lag view must never stop the loader
                log.debug("lag update failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 2.0)

    # ---- main loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.settings
        await topics.ensure_topics(settings)
        session_ms = int(settings.kseg_session_timeout * 1000)
        self.consumer = AIOKafkaConsumer(
            self.warehouse_topic,
            self.spend_topic,
            *self.trace_topics,
            **client_config(settings),  # bootstrap servers, TLS and SASL like every kseg client
            group_id=settings.warehouse_group,
            client_id=f"{settings.kseg_app_id}-warehouse-loader",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 4),
            max_poll_records=settings.kseg_warehouse_batch_rows,
        )
        self.producer = AIOKafkaProducer(**producer_config(settings))
        await self.producer.start()
        await self.consumer.start()
        lag_task = asyncio.create_task(self._lag_loop())
        self.health.unblock("consumer")
        try:
            try:
                await self._connection()
                self.metrics.db_up.set(1)
                self.health.unblock("database")
            except Exception as exc:
                log.warning("warehouse not reachable at start (%s); will retry with the first batch", exc)
                self.metrics.db_up.set(0)
                self.health.block("database", f"cannot reach the warehouse: {str(exc).strip()[:200]}")
            while not self.stopping.is_set():
                fetched = await self.consumer.getmany(
                    timeout_ms=int(settings.kseg_warehouse_batch_wait * 1000),
                    max_records=settings.kseg_warehouse_batch_rows,
                )
                records = [rec for recs in fetched.values() for rec in recs]
                if not records:
                    if self._conn is None:
                        with contextlib.suppress(Exception):
                            await self._connection()
                            self.metrics.db_up.set(1)
                            self.health.unblock("database")
                    continue
                parsed = parse_records(records, self.warehouse_topic, self.trace_topics)
                await self.write(parsed)
                await self._prune_now_and_then()
                if parsed.letters:
                    await self.send_letters(parsed.letters)
                self.event_commits += 1 if parsed.events else 0
                if parsed.events and self.event_commits == settings.kseg_warehouse_fault_kill_after_commits:
                    log.error(
                        "fault injection: SIGKILL after database commit %d holding events, before the Kafka "
                        "commit",
                        self.event_commits,
                    )
                    os.kill(os.getpid(), signal.SIGKILL)
                await self.commit(records)
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            with contextlib.suppress(Exception):
                await self.producer.stop()
            await self._drop_connection()


def pages(loader: Loader) -> web.Application:
    """/metrics, /healthz, /readyz of the loader process."""

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(loader.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(_request: web.Request) -> web.Response:
        return readyz_response(loader.health.blocked_reasons)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(settings: WarehouseSettings, target_url: str) -> None:
    """Run the loader and its pages until SIGTERM/SIGINT."""
    loader = Loader(settings, target_url)
    runner = web.AppRunner(pages(loader), access_log=None)
    await runner.setup()
    # Internal pages: loopback unless configured, like the worker's (docs/security.md).
    site = web.TCPSite(runner, settings.kseg_worker_web_host, settings.kseg_warehouse_web_port)
    await site.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loader.stopping.set)
    log.info(
        "warehouse loader: %s + %s -> %s (group %s); pages on http://%s:%d",
        loader.warehouse_topic,
        loader.spend_topic,
        _redact(target_url),
        settings.warehouse_group,
        settings.kseg_worker_web_host,
        settings.kseg_warehouse_web_port,
    )
    try:
        await loader.run()
    finally:
        await runner.cleanup()


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
