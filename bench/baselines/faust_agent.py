"""Trivial faust agents on kseg's own faust settings: the framework's ceiling for a given record shape.

Why: the raw aiokafka passthrough shows what the broker costs; these show what faust adds on top, with no
kseg code at all, so the worker's figure splits into "broker", "faust" and "kseg". The faust App is built
by kseg's own `app.worker.app.build_faust_app` (rocksdb store, the `ksegkafka://` transport with its
100 ms fetch wait, the worker's changelog batches and recovery on the embedded broker, acks=all, the
same poll and session settings) and run by kseg's `KsegWorker` (faust's terminal spinner dropped), so
the baseline cannot drift from the worker's settings.

Two shapes (one process each, run one after the other by `bench/run.py`):

- `--sends N --table --read-back R` (kseg's shape): per event one table write (one changelog record) and N
  sends, the first R to an `outbox` topic that a second agent in the same process reads back (as kseg's
  Segment sink reads its outbox and its identity agents read the index updates the worker wrote), the rest
  to an `other` topic. Done when every send is acknowledged and every outbox record was read back.
- `--sends 1` (one output per event): faust's cost over the passthrough for the same work.

The events are read as raw bytes and copied out unchanged (no JSON, no kseg code). The process writes its
result (events, seconds from the first event to the last completion, events_per_s, cpu_seconds of this
process in that window) as JSON to `--result` and keeps running until it is stopped.

    python -m bench.baselines.faust_agent --bootstrap 127.0.0.1:9092 --src bench1.postbacks.raw \\
        --app-id fb1 --expected 20000 --sends 5 --table --read-back 3 --data-dir /tmp/fb1 \\
        --web-port 6099 --result /tmp/fb1.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from app.config import Settings
from app.runtime.topics import raw_topic
from app.worker.app import build_faust_app, state_dir
from app.worker.main import KsegWorker
from bench.baselines.passthrough import ensure_topics


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (faust's consumer runs in a thread)."""
    times = os.times()
    return times.user + times.system


class Progress:
    """Counts events, acknowledged sends and read-back records; writes the result once all are in."""

    def __init__(self, expected: int, sends: int, read_back: int, result: Path) -> None:
        self.expected, self.sends, self.reads, self.result = expected, sends, read_back, result
        self.processed = self.acked = self.read_back = 0
        self.first: float | None = None
        self.cpu_first = 0.0
        self.finished = False

    def start(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_first = cpu_seconds()
            self.result.with_suffix(".started").touch()  # a profiler may attach from here on

    def on_acked(self, _message: Any) -> None:
        self.acked += 1
        self.check()

    def on_read_back(self) -> None:
        self.read_back += 1
        self.check()

    def on_processed(self) -> None:
        self.processed += 1
        self.check()

    def check(self) -> None:
        if self.finished or self.first is None:
            return
        done = (
            self.processed >= self.expected
            and self.acked >= self.expected * self.sends
            and self.read_back >= self.expected * self.reads
        )
        if not done:
            return
        self.finished = True
        seconds = time.perf_counter() - self.first
        report = {
            "events": self.processed,
            "seconds": round(seconds, 4),
            "events_per_s": round(self.processed / seconds, 1) if seconds > 0 else 0.0,
            "cpu_seconds": round(cpu_seconds() - self.cpu_first, 3),
            "sends_per_event": self.sends,
            "read_back_per_event": self.reads,
        }
        tmp = self.result.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(report))
        tmp.rename(self.result)  # the bench polls for the file: it appears complete or not at all


def build(args: argparse.Namespace, progress: Progress) -> Any:
    """The faust App with the baseline's agents, on kseg's faust settings."""
    settings = Settings(
        kafka_bootstrap_servers=args.bootstrap,
        kseg_embedded_broker=args.embedded,
        kseg_app_id=args.app_id,
        kseg_data_dir=args.data_dir,
        kseg_worker_web_port=args.web_port,
        kseg_topic_partitions=args.partitions,
        kseg_session_timeout=args.session_timeout,
    )
    state_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    faust_app = build_faust_app(settings)

    def topic(name: str) -> Any:
        return raw_topic(faust_app, name, partitions=args.partitions)

    source, outbox, other = topic(args.src), topic(settings.topic("outbox")), topic(settings.topic("other"))
    table = faust_app.Table("state", default=None, partitions=args.partitions) if args.table else None

    @faust_app.agent(source, name="baseline")
    async def baseline(stream: Any) -> None:
        async for key, value in stream.items():
            progress.start()
            if table is not None:
                table[key.decode() if key else ""] = value.decode()
            for i in range(args.sends):
                target = outbox if i < args.read_back else other
                await target.send(key=key, value=value, callback=progress.on_acked)
            progress.on_processed()

    if args.read_back:

        @faust_app.agent(outbox, name="sink")
        async def sink(stream: Any) -> None:
            async for _ in stream:
                progress.on_read_back()

    return faust_app, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True, help="loopback broker host:port")
    parser.add_argument("--src", required=True, help="topic to read (from the beginning)")
    parser.add_argument("--app-id", required=True, help="faust app id (consumer group, topic prefix)")
    parser.add_argument("--expected", type=int, required=True, help="events to process")
    parser.add_argument("--sends", type=int, default=1, help="records sent per event")
    parser.add_argument("--table", action="store_true", help="one table write per event")
    parser.add_argument(
        "--read-back",
        type=int,
        default=0,
        help="of the sends, how many a second agent in the process reads back",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--embedded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the broker is the embedded Tansu (its settings and table recovery, like the worker)",
    )
    parser.add_argument("--session-timeout", type=float, default=6.0)
    parser.add_argument("--data-dir", type=Path, required=True, help="RocksDB state directory root")
    parser.add_argument("--web-port", type=int, required=True, help="faust web port (as the worker has one)")
    parser.add_argument("--result", type=Path, required=True, help="where the JSON result is written")
    args = parser.parse_args(argv)
    if args.sends < 1 or args.expected < 1 or not 0 <= args.read_back <= args.sends:
        parser.error("--sends and --expected must be >= 1, --read-back between 0 and --sends")
    host = args.bootstrap.split(",")[0].rsplit(":", 1)[0].strip("[]")
    if host not in ("localhost", "::1") and not host.startswith("127."):
        parser.error(f"refusing non-loopback bootstrap {args.bootstrap!r}")
    prefix = args.app_id
    asyncio.run(ensure_topics(args.bootstrap, [f"{prefix}.outbox", f"{prefix}.other"], args.partitions))
    progress = Progress(args.expected, args.sends, args.read_back, args.result)
    faust_app, _ = build(args, progress)
    KsegWorker(faust_app, loglevel="warn", quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
