"""Raw aiokafka consume → produce passthrough: the ceiling for one Kafka stage on this machine.

Why: a faust agent that reads one topic and writes another can never beat a bare aiokafka loop doing
the same with the same producer settings (acks=all). Comparing the worker with this number shows
what faust, mapping and identity cost, separately from what the broker costs.

The loop consumes a fetch batch, produces every record, and waits for all acks before fetching
again — the same at-least-once shape as "commit only after the produce is acknowledged".

    python bench/baselines/passthrough.py --bootstrap 127.0.0.1:9092 --fill 20000 --expected 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 1) -> None:
    """Create the topics if missing (an existing topic is fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in topics:  # one by one: a batch fails entirely when one topic exists
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def fill_topic(
    bootstrap: str, topic: str, count: int, *, seed: int = 0, max_batch_size: int = 1
) -> int:
    """Produce `count` realistic raw-postback records (keyed by device) to `topic`.

    max_batch_size=1 by default: against Tansu, end offsets are only exact with one record per batch.
    """
    from urllib.parse import parse_qsl

    import orjson

    from app.loadgen.postbacks import PostbackGenerator  # lazy: the script adds the repo root first
    from app.records import postback_event_id, utc_now_iso

    generator = PostbackGenerator(seed)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, max_batch_size=max_batch_size
    )
    await producer.start()
    try:
        futures = []
        for _ in range(count):
            postback = next(generator)
            params = dict(parse_qsl(postback.query))
            record = {
                "kind": "postback",
                "event_id": postback_event_id(params),
                "received_at": utc_now_iso(),
                "source": "get",
                "profile": None,
                "params": params,
            }
            key = postback.device.encode()
            futures.append(await producer.send(topic, value=orjson.dumps(record), key=key))
            if len(futures) >= 1000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def run_passthrough(
    bootstrap: str,
    src_topic: str,
    dst_topic: str,
    expected: int,
    timeout: float,
    *,
    max_batch_size: int = 16384,
    linger_ms: int = 0,
    max_records: int = 500,
) -> dict[str, Any]:
    """Consume `expected` records from `src_topic` (from the beginning), produce each to `dst_topic`.

    Returns events, seconds (first record fetched → last ack), events_per_s, startup_seconds,
    timed_out and cpu_seconds (this process's CPU in that window; meaningful when run as its own
    process). Stops at `expected` events or after `timeout` seconds in total, whichever comes first.
    """
    if expected < 1 or timeout <= 0:
        raise ValueError("expected must be >= 1 and timeout > 0")
    began = time.perf_counter()
    deadline = began + timeout
    # No consumer group: a group join on Tansu takes half the session timeout (design notes §10),
    # and the join is not what this baseline measures.
    consumer = AIOKafkaConsumer(
        src_topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id=f"kseg-passthrough-{uuid.uuid4().hex[:8]}",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=max_batch_size,
        linger_ms=linger_ms,
    )
    await consumer.start()
    await producer.start()
    events = 0
    first: float | None = None
    last = began
    cpu_first = cpu_last = 0.0
    try:
        while events < expected:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            wait_ms = int(min(remaining, 0.5) * 1000)
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
            futures: list[asyncio.Future[Any]] = []
            for records in batch.values():
                for record in records:
                    if events + len(futures) >= expected:
                        break
                    if first is None:
                        first = time.perf_counter()
                        cpu_first = _cpu_seconds()
                    futures.append(await producer.send(dst_topic, value=record.value, key=record.key))
            if futures:
                left = max(0.1, deadline - time.perf_counter())
                await asyncio.wait_for(asyncio.gather(*futures), timeout=left)
                events += len(futures)
                last = time.perf_counter()
                cpu_last = _cpu_seconds()
    except TimeoutError:
        pass  # reported through timed_out
    finally:
        await consumer.stop()
        await producer.stop()
    seconds = (last - first) if first is not None else 0.0
    return {
        "events": events,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds, 1) if seconds > 0 else 0.0,
        "startup_seconds": round((first or last) - began, 3),
        "timed_out": events < expected,
        "max_batch_size": max_batch_size,
        "cpu_seconds": round(cpu_last - cpu_first, 3),
    }


def _cpu_seconds() -> float:
    """User + system CPU of this process (all threads)."""
    times = os.times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aiokafka consume→produce passthrough baseline")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--src", default="bench.passthrough.src")
    parser.add_argument("--dst", default="bench.passthrough.dst")
    parser.add_argument("--expected", type=int, default=10_000, help="records to pass through")
    parser.add_argument("--timeout", type=float, default=120.0, help="overall limit in seconds")
    parser.add_argument("--max-batch-size", type=int, default=16384, help="passthrough producer batch bytes")
    parser.add_argument("--linger-ms", type=int, default=0)
    parser.add_argument("--fill", type=int, default=0, help="first produce this many records to --src")
    parser.add_argument(
        "--fill-batch-size",
        type=int,
        default=1,
        help="batch bytes for --fill (1: exact end offsets on Tansu)",
    )
    parser.add_argument("--partitions", type=int, default=1, help="partitions when creating the topics")
    args = parser.parse_args(argv)
    host = args.bootstrap.split(",")[0].rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        print(f"refusing non-loopback bootstrap {args.bootstrap!r}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `app`
    import orjson

    async def go() -> dict[str, Any]:
        await ensure_topics(args.bootstrap, [args.src, args.dst], args.partitions)
        if args.fill:
            t0 = time.perf_counter()
            await fill_topic(args.bootstrap, args.src, args.fill, max_batch_size=args.fill_batch_size)
            print(f"filled {args.fill} records in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return await run_passthrough(
            args.bootstrap,
            args.src,
            args.dst,
            args.expected,
            args.timeout,
            max_batch_size=args.max_batch_size,
            linger_ms=args.linger_ms,
        )

    result = asyncio.run(go())
    print(orjson.dumps(result).decode())
    return 0 if not result["timed_out"] else 1


if __name__ == "__main__":
    sys.exit(main())
