"""kseg's benchmark suite: every figure next to a baseline measured in the same run, on this machine.

    python -m bench.run                # full suite (about ten minutes); writes bench/results/latest.{json,md}
    python -m bench.run --smoke        # tiny numbers, proves every figure is produced (in `make test`)
    python -m bench.run --only spike   # one scenario (names: see --help); a comma list runs several
    python -m bench.run --render-only  # rewrite latest.md from latest.json (after editing LIMITS)

Everything runs on 127.0.0.1: the embedded Tansu broker, real `kseg receiver` / `kseg worker`
processes, the baselines (each its own process), the Segment emulator (in this process, to time
arrivals), and the load generator. Targets are checked here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app import topics
from app.broker.embedded import EmbeddedBroker, die_with_parent, free_port
from app.loadgen.postbacks import Postback, PostbackGenerator
from app.loadgen.runner import run_load
from app.loadgen.spike import SpikeSpec
from app.receiver.parsing import partition_key
from app.records import RawPostback, postback_event_id, utc_now_iso
from app.sections import SegmentSettings
from bench.broker_profile import perf_sampled
from bench.deployment import Deployment
from bench.profile_breakdown import breakdown
from tests.emulators.segment_api import SegmentEmulator
from tests.parallel import KSEG_RUN_PORTS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = Deployment.token  # the postback token every bench deployment accepts
PARTITIONS = 8  # of every topic: kseg's, the baselines' (KSEG_TOPIC_PARTITIONS in Deployment)


@dataclass
class Profile:
    """How big each scenario is."""

    ingest_rate: float
    ingest_seconds: float
    pipeline_events: int
    latency_rate: float
    latency_seconds: float
    spike_base: float
    spike_before: float
    spike_length: float
    spike_after: float
    drain_timeout: float
    profile_events: int
    #: The 1,000/s scenario's length, and the fixed base rate of the spike scenario that does not follow
    #: the measured throughput.
    latency_1000_seconds: float = 60
    spike_fixed_base: float = 100


FULL = Profile(6000, 15, 8000, 1000, 20, 500, 20, 30, 20, 300, 12000)
#: The smoke runs beside other tests in `make test` (tests/integration/test_bench_smoke.py): a spike that
#: drains late there is not a smoke failure, so its drain wait is long (it ends as soon as all arrived).
SMOKE = Profile(200, 2, 300, 100, 2, 50, 1, 1, 1, 90, 300, latency_1000_seconds=2, spike_fixed_base=20)

#: The bench's targets (same run, same broker).
TARGETS = {
    "receiver_ratio": (">=", 0.90),
    "worker_ratio": (">=", 0.35),
    "worker_vs_faust_shape": (">=", 0.80),
    "e2e_p99_ms": ("<=", 250.0),
    "spike_lost": ("<=", 0),
    # kseg's delivery guarantee, checked on every drain: every prefilled postback reaches Segment.
    "pipeline_undelivered": ("<=", 0),
    "workers2_undelivered": ("<=", 0),
    "spike_drain_seconds": ("<=", 40.0),
    # The capacity targets: a 2-core machine at 1,000 postbacks/s.
    "cpu_per_postback_vs_today": ("<=", 0.34),
    "worker_per_batched_passthrough": (">=", 0.05),
    "worker_events_per_s": (">=", 2000.0),
    "run_1000_p99_ms": ("<=", 2000.0),
    "run_1000_undelivered": ("<=", 0),
    "spike100_drain_seconds": ("<=", 20.0),
    "spike100_lost": ("<=", 0),
    "events_per_segment_request": (">=", 200.0),
    "worker_peak_rss_mb": ("<=", 300.0),
}


#: What limits a figure when it misses its target, and what was tried (printed under the results table).
#: Templates: every `{figure}` is filled in from the run that writes latest.md (`limit_text`), never a
#: number quoted from an older run.
LIMITS = {
    "worker_ratio": (
        "The divisor is the one-record-batch passthrough ({passthrough_events_per_s}/s); the batched one "
        "ran {passthrough_batched_events_per_s}/s ({passthrough_batching_gain}x). Each postback is "
        "{worker_records_per_event} records written by the worker (worker_records_by_topic) plus the ones "
        "its own agents read back, against 2 record operations for the passthrough; a trivial faust agent "
        "with that shape ran {faust_shape_events_per_s}/s (faust_shape_ratio {faust_shape_ratio})."
    ),
    "worker_per_batched_passthrough": (
        "The worker ran {worker_events_per_s}/s at {worker_cpu_s_per_1k} ms CPU per postback plus "
        "{worker_broker_cpu_s_per_1k} ms of the broker's; the batched passthrough "
        "{passthrough_batched_events_per_s}/s at {passthrough_batched_cpu_s_per_1k} ms. The worker's "
        "per-record machinery (faust's streams, the read-back agents, kseg's per-event code) is the "
        "limit: see the profile below."
    ),
    "worker_events_per_s": (
        "{worker_events_per_s}/s at {worker_cpu_s_per_1k} ms of worker CPU per postback: on 2 cores shared "
        "with the broker ({worker_broker_cpu_s_per_1k} ms per postback) one process cannot pass "
        "1,000 / (ms of CPU per postback) postbacks/s per core; see the profile below for where the "
        "worker's CPU goes."
    ),
    "cpu_per_postback_vs_today": (
        "Worker + broker CPU per postback {cpu_ms_per_postback} ms against {today_cpu_ms_per_postback} ms "
        "for the worker of the code the target was set on, draining the same backlog in the same run "
        "(worker {worker_cpu_s_per_1k} vs {today_worker_cpu_s_per_1k} ms, broker "
        "{worker_broker_cpu_s_per_1k} vs {today_worker_broker_cpu_s_per_1k} ms; records written per "
        "postback {worker_records_per_event} vs {today_worker_records_per_event}). What is left is the "
        "worker's own CPU: faust's per-record machinery for the records kseg still writes and reads back "
        "(worker_vs_faust_shape) and kseg's per-event code; see the profiles below."
    ),
    "cpu_per_postback_vs_onerecord": (
        "Worker + broker CPU per postback {cpu_ms_per_postback} ms with batched changelogs against "
        "{onerecord_cpu_ms_per_postback} ms with one-record changelogs in the same run (broker alone: "
        "{worker_broker_cpu_s_per_1k} vs {onerecord_worker_broker_cpu_s_per_1k} ms). Batching the "
        "changelogs cuts the broker's share; the worker's own CPU ({worker_cpu_s_per_1k} vs "
        "{onerecord_worker_cpu_s_per_1k} ms) is the rest."
    ),
    "worker_vs_faust_shape": (
        "The gap between kseg's worker ({worker_events_per_s}/s) and a faust agent that writes the same "
        "records without any kseg code ({faust_shape_events_per_s}/s) is kseg's own per-event work plus "
        "its sinks: see the profile's kseg shares; worker_cpu_vs_faust_shape ({worker_cpu_vs_faust_shape}) "
        "is the same comparison in CPU per event."
    ),
    "e2e_p99_ms": (
        "Measured at {e2e_rate}/s, half the worker throughput of the same run, after a 2 s warm-up "
        "(e2e_cold_p99_ms {e2e_cold_p99_ms} includes it): p50 {e2e_p50_ms} ms. Every delivery waits for "
        "the Segment sink's next linger tick (SEGMENT_BATCH_LINGER) and two consumer fetch waits "
        "(KSEG_FETCH_MAX_WAIT_MS); reinstall postbacks parked for the identity index cross two more hops."
    ),
    "run_1000_p99_ms": (
        "`kseg run` (one worker, receiver, broker, loader and PostgreSQL on the same 2 cores) offered "
        "1,000 installs of new devices per second ({run_1000_achieved_rate}/s accepted): p50 "
        "{run_1000_p50_ms} ms; one worker's drain rate on the bench backlog was {worker_events_per_s}/s, "
        "so above it the backlog grows for the whole run."
    ),
    "run_1000_undelivered": (
        "{run_1000_undelivered} of {run_1000_accepted} accepted postbacks had not reached Segment 30 s "
        "after the run: late (a backlog above the worker's rate), not known lost."
    ),
    "spike_drain_seconds": (
        "Throughput-bound. At a steady rate b = {spike_base_rate}/s and worker throughput "
        "W = {worker_events_per_s}/s a 10x burst of 30 s leaves about (10b - W) * 30 postbacks queued "
        "(peak lag {spike_peak_lag}), which drain at W - b while the steady load goes on. Nothing was lost "
        "(spike_lost {spike_lost}); 503s: {spike_503s}."
    ),
    "spike100_drain_seconds": (
        "At b = {spike100_base_rate}/s and W = {worker_events_per_s}/s the burst leaves about "
        "(10b - W) * 30 queued (peak lag {spike100_peak_lag}), draining at W - b; "
        "lost {spike100_lost}, 503s {spike100_503s}."
    ),
    "events_per_segment_request": (
        "{events_per_segment_request} events ({messages_per_segment_request} messages) per request. "
        "Each postback of this mix made {segment_messages_per_event} Segment messages (the mapping's calls "
        "and the identity's link notices), so a request full to the "
        "500-message cap (SEGMENT_BATCH_MAX_MESSAGES; the 450 KB byte budget binds at about the same "
        "count) carries at most {events_per_request_at_message_cap} events; batches also close at "
        "SEGMENT_BATCH_LINGER and at the end of each consumer batch of the sink."
    ),
    "receiver_ratio": (
        "The receiver answers each postback only after Kafka's ack (acks=all); the postbacks that arrive "
        "while one produce is written share the next batch per partition. It spent "
        "{receiver_cpu_s_per_1k} ms of CPU per postback against the bare handler's "
        "{bare_aiohttp_cpu_s_per_1k} (receiver_cpu_vs_bare {receiver_cpu_vs_bare}x): token check, the "
        "raw record's encoding and the produce are what the bare handler does not do. The load generator "
        "runs in the bench process on the same two cores, so the rates compare less well than the CPU."
    ),
    "worker_peak_rss_mb": "RocksDB block cache and faust's buffers grow with the number of partitions.",
    "pipeline_undelivered": (
        "Prefilled postbacks that had not reached Segment when the drain wait ended: either late (a stalled "
        "partition) or lost; *_undelivered_sample names them, the worker logs (--work) say what happened."
    ),
    "workers2_undelivered": (
        "As pipeline_undelivered, with two workers ({workers2_group_rejoins} group re-joins in this run)."
    ),
    "spike_lost": (
        "Postbacks answered 200 but not delivered when the wait ended; lag at the end {spike_lag_at_end}: "
        "late, not known lost while it is above 0. The delivery tests prove at-least-once under faults."
    ),
    "spike100_lost": "As spike_lost; lag at the end {spike100_lag_at_end}.",
}


class _Figures(dict[str, Any]):
    """`str.format_map` source: a figure of the run, or "n/a" when its scenario did not run."""

    def __missing__(self, key: str) -> str:
        return "n/a"


def limit_text(key: str, results: dict[str, Any]) -> str:
    """LIMITS[key] with this run's figures filled in."""
    template = LIMITS.get(key)
    if template is None:
        return "see bench/README.md"
    return template.format_map(_Figures(results))


class TimedEmulator(SegmentEmulator):
    """The Segment emulator, also noting when each kseg event first arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arrivals: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def _accept(self, batch: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        for msg in batch:
            event_id = ((msg.get("context") or {}).get("kseg") or {}).get("event_id")
            if event_id and event_id not in self.arrivals:
                self.arrivals[event_id] = now
        super()._accept(batch)


@dataclass
class Run:
    """What the scenarios of one bench run share: broker, emulator, sizes, the figures so far."""

    broker: str
    segment: TimedEmulator
    work: Path
    prof: Profile
    results: dict[str, Any]
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The embedded broker's perf profile while the profiled worker drains (bench/broker_profile.py).
    broker_profile: dict[str, float] = field(default_factory=dict)
    #: The one-worker scenario's backlog topic, which the baselines read too (same records, same run).
    backlog_topic: str | None = None
    #: `--steady-rate`: the latency and spike scenarios' steady rate, instead of half the measured throughput.
    steady: float | None = None
    #: The embedded broker's process id: its CPU is counted next to the workers' (it runs on the same cores).
    broker_pid: int | None = None
    _records: list[tuple[bytes, bytes, str]] | None = None

    def records(self) -> list[tuple[bytes, bytes, str]]:
        """The backlog: the same distinct postbacks for every drain scenario."""
        if self._records is None:
            self._records = raw_records(self.prof.pipeline_events)
        return self._records


def event_id_of(query: str) -> str:
    """The event id the receiver will stamp on this query string (same function, same params)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.pop("token", None)
    params.pop("profile", None)
    return postback_event_id(params)


class Stamped(Iterator[Postback]):
    """A postback generator that remembers when each postback left, by event id."""

    def __init__(self, generator: PostbackGenerator) -> None:
        self.generator = generator
        self.sent_at: dict[str, float] = {}

    def __iter__(self) -> Stamped:
        return self

    def __next__(self) -> Postback:
        postback = next(self.generator)
        self.sent_at.setdefault(event_id_of(postback.query), time.perf_counter())
        return postback


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (all its threads), from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_1k(cpu: float | None, events: int) -> float | None:
    """CPU seconds per 1,000 events (equal to CPU milliseconds per event)."""
    return round(cpu / events * 1000, 3) if cpu is not None and events else None


def ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


def say(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


async def flood(url: str, prof: Profile) -> Any:
    """The ingest load: the same seeded postbacks at the same offered rate, for kseg and the baseline."""
    return await run_load(
        url,
        TOKEN,
        rate=prof.ingest_rate,
        duration=prof.ingest_seconds,
        concurrency=128,
        generator=PostbackGenerator(seed=1),
    )


async def scenario_ingest(run: Run) -> dict[str, Any]:
    """1. Receiver ingest with the Kafka ack, next to a bare aiohttp handler under the same load."""
    dep = await Deployment(run.broker, run.segment.url, run.work / "ingest").start("receiver")
    try:
        pid = dep.procs["receiver"].pid
        cpu_before = cpu_seconds(pid)
        report = await flood(dep.url, run.prof)
        cpu_after = cpu_seconds(pid)
    finally:
        dep.stop()
    port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "bench.baselines.bare_receiver", "--port", str(port), "--tokens", TOKEN],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        await _wait_port(port)
        bare_before = cpu_seconds(bare.pid)
        baseline = await flood(f"http://127.0.0.1:{port}/v1/kochava/postbacks", run.prof)
        bare_after = cpu_seconds(bare.pid)
    finally:
        bare.terminate()
        bare.wait(10)
    kseg_rate, bare_rate = report.accepted_rate, baseline.accepted_rate
    return {
        "receiver_accepted_per_s": round(kseg_rate, 1),
        "bare_aiohttp_accepted_per_s": round(bare_rate, 1),
        "receiver_ratio": ratio(kseg_rate, bare_rate),
        "receiver_p99_ms": _r(report.latency_ms(99)),
        "receiver_503s": report.rejected_503,
        "offered_rate": run.prof.ingest_rate,
        "receiver_cpu_s_per_1k": per_1k(_delta(cpu_before, cpu_after), report.accepted),
        "bare_aiohttp_cpu_s_per_1k": per_1k(_delta(bare_before, bare_after), baseline.accepted),
    }


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


async def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


#: The steady-state mix: 10 % installs, the rest in-app events and purchases of devices installed before.
STEADY_MIX = {"install": 0.10, "event": 0.70, "purchase": 0.20}


def raw_records(n: int, mix: dict[str, float] | None = None) -> list[tuple[bytes, bytes, str]]:
    """n distinct postbacks as the receiver would have written them: (key, value, event id). The default
    mix is the generator's peak-campaign one (35 % installs); `STEADY_MIX` the steady state."""
    out = []
    seen: set[str] = set()
    for postback in PostbackGenerator(seed=2, retry_rate=0.0, mix=mix):
        params = dict(parse_qsl(postback.query, keep_blank_values=True))
        event_id = postback_event_id(params)
        if event_id in seen:
            continue
        seen.add(event_id)
        record = RawPostback(
            event_id=event_id, received_at=utc_now_iso(), params=params, ip="127.0.0.1", user_agent="bench"
        )
        out.append((partition_key(params).encode(), record.encode(), event_id))
        if len(out) == n:
            return out
    return out


async def produce(broker: str, topic: str, records: list[tuple[bytes, bytes, str]]) -> None:
    from app.config import Settings
    from app.kafka import producer_config

    # kseg's client settings (acks=all; on the embedded broker no idempotence and one record per batch,
    # so the backlog's end offsets are exact), including any KAFKA_SECURITY_* settings.
    settings = Settings(kafka_bootstrap_servers=broker, kseg_embedded_broker=True)
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v, _ in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def backlog(run: Run, dep: Deployment, records: list[tuple[bytes, bytes, str]]) -> None:
    """Create the deployment's topics and prefill its `postbacks.raw` with `records`."""
    from app.config import Settings
    from app.topics import ensure_topics

    dep.data_dir.mkdir(parents=True, exist_ok=True)
    await ensure_topics(
        Settings(kafka_bootstrap_servers=run.broker, kseg_app_id=dep.app_id, kseg_topic_partitions=PARTITIONS)
    )
    await produce(run.broker, dep.topic("postbacks.raw"), records)


async def records_written(broker: str, prefix: str, exclude: set[str]) -> dict[str, int]:
    """Records in every topic named `prefix...` except `exclude`: end offsets, read past the reported
    ones (Tansu reports a partition's end as its last batch's first record + 1; `exact_end_offsets`)."""
    from app.kafka import exact_end_offsets

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        names = [t for t in await consumer.topics() if t.startswith(prefix) and t not in exclude]
        parts = [TopicPartition(n, p) for n in sorted(names) for p in consumer.partitions_for_topic(n) or ()]
        reported = await consumer.end_offsets(parts) if parts else {}
    finally:
        await consumer.stop()
    ends = await exact_end_offsets({"bootstrap_servers": broker}, reported)
    counts: dict[str, int] = {}
    for tp, end in ends.items():
        name = tp.topic[len(prefix) :].lstrip(".-")
        counts[name] = counts.get(name, 0) + end
    return dict(sorted(counts.items()))


@dataclass
class Drain:
    """One drain of a prefilled backlog by kseg workers: what arrived at Segment, when, at what CPU cost."""

    delivered: int
    seconds: float
    cpu: float | None
    #: Each process's CPU seconds from its readiness to the last arrival (`cpu` is their sum).
    cpu_by_role: dict[str, float | None]
    #: The broker's CPU seconds over the same window (from the first worker's readiness to the last arrival).
    broker_cpu: float | None
    ready_gap: float
    #: Each process's readiness, seconds after the clock started (negative: before).
    ready_after: dict[str, float]
    rss: dict[str, float | None]
    processed: dict[str, float]
    #: kseg's own counters summed over the workers (what did not become a delivery, and why).
    counters: dict[str, float]
    #: Up to five event ids that never arrived (empty when all did).
    undelivered: list[str]


async def drain(run: Run, dep: Deployment, wanted: set[str], workers: list[str]) -> Drain:
    """Start `workers` together on a prefilled backlog; time from the first worker's readiness to the last
    arrival at Segment. CPU: every worker's from its own readiness to that last arrival. A "sinks" role
    (`kseg sinks`) does not start the clock (it has nothing to deliver before a worker is ready), but its
    CPU is counted like a worker's."""
    for role in workers:
        dep.spawn(role)
    ready_at: dict[str, float] = {}
    cpu_at_ready: dict[str, float | None] = {}

    async def ready(role: str) -> None:
        await dep.wait_ready(role)
        ready_at[role] = time.perf_counter()
        cpu_at_ready[role] = cpu_seconds(dep.procs[role].pid)

    await asyncio.gather(*(ready(role) for role in workers))
    started = min(at for role, at in ready_at.items() if role != "sinks")
    broker_before = cpu_seconds(run.broker_pid) if run.broker_pid else None
    deadline = time.monotonic() + max(60.0, len(wanted) / 50)
    while not wanted <= run.segment.arrivals.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    cpu_end = {role: cpu_seconds(dep.procs[role].pid) for role in workers}
    broker_after = cpu_seconds(run.broker_pid) if run.broker_pid else None
    arrived = [run.segment.arrivals[e] for e in wanted if e in run.segment.arrivals]
    last = max(arrived, default=started)
    cpu_parts = [_delta(cpu_at_ready[r], cpu_end[r]) for r in workers]
    processed: dict[str, float] = {}
    counters: dict[str, float] = {}
    for role in workers:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            text = await dep.metrics_text(role)
            processed[role] = _metric_sum(text, "kseg_worker_processed_total")
            for name in COUNTERS:
                counters[name] = counters.get(name, 0.0) + _metric_sum(text, f"kseg_{name}_total")
    return Drain(
        delivered=len(arrived),
        seconds=max(last - started, 1e-6),
        cpu=None if None in cpu_parts else sum(c for c in cpu_parts if c is not None),
        cpu_by_role=dict(zip(workers, cpu_parts, strict=True)),
        broker_cpu=_delta(broker_before, broker_after),
        ready_gap=round(max(ready_at.values()) - min(ready_at.values()), 2),
        ready_after={role: round(at - started, 2) for role, at in ready_at.items()},
        rss={role: peak_rss_mb(dep.procs[role].pid) for role in workers},
        processed=processed,
        counters=counters,
        undelivered=sorted(wanted - run.segment.arrivals.keys())[:5],
    )


#: kseg counters read from each worker after a drain (`kseg_<name>_total`).
COUNTERS = ("worker_processed", "worker_parked", "worker_deduplicated", "dead_letters")


def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


#: The old mode, for the A/B in the same run: faust's changelogs in one-record batches, as kseg wrote them
#: on the embedded broker before its recovery read past the reported end offsets.
ONE_RECORD_CHANGELOGS = {"KSEG_CHANGELOG_BATCH_BYTES": "1"}


async def scenario_pipeline(run: Run) -> dict[str, Any]:
    """2, 5, 6. One worker's events/s from a prefilled postbacks.raw to Segment; its records per event."""
    return await pipeline_figures(run, "pipeline", run.records(), {})


async def scenario_pipeline_one_record(run: Run) -> dict[str, Any]:
    """2c. The same backlog drained with one-record changelog batches (the old mode): worker and broker
    CPU per postback next to scenario 2's."""
    figures = await pipeline_figures(run, "pipeline-one-record", run.records(), ONE_RECORD_CHANGELOGS)
    keep = (
        "worker_events_per_s",
        "worker_cpu_s_per_1k",
        "worker_broker_cpu_s_per_1k",
        "worker_records_per_event",
    )
    return {f"onerecord_{key}": figures[key] for key in keep} | {
        "onerecord_pipeline_undelivered": figures["pipeline_undelivered"]
    }


#: A worker that only writes the outboxes; a `kseg sinks` process delivers them (as `kseg run` runs them).
NO_SINKS = {"KSEG_WORKER_SINKS": "false"}


async def scenario_pipeline_split(run: Run) -> dict[str, Any]:
    """2e. The same backlog drained by a worker with KSEG_WORKER_SINKS=false and one `kseg sinks`
    process: `split_worker_cpu_s_per_1k` is both processes' CPU (the sinks' alone in
    `split_sinks_cpu_s_per_1k`), so `split_cpu_ms_per_postback` (+ the broker's) compares with
    `cpu_ms_per_postback`."""
    figures = await pipeline_figures(run, "pipeline-split", run.records(), NO_SINKS, sinks_process=True)
    keep = (
        "worker_events_per_s",
        "worker_cpu_s_per_1k",
        "sinks_cpu_s_per_1k",
        "worker_broker_cpu_s_per_1k",
        "pipeline_undelivered",
        "events_per_segment_request",
        "sinks_ready_after_s",
    )
    return {f"split_{key}": figures[key] for key in keep}


#: The figures a drain of another mix or another tree reports next to scenario 2's (under its prefix).
DRAIN_FIGURES = (
    "worker_events_per_s",
    "worker_cpu_s_per_1k",
    "worker_broker_cpu_s_per_1k",
    "worker_records_per_event",
    "pipeline_undelivered",
    "events_per_segment_request",
)


async def scenario_pipeline_steady(run: Run) -> dict[str, Any]:
    """2d. The steady-state mix (10 % installs, the rest events and purchases of known devices)."""
    records = raw_records(run.prof.pipeline_events, STEADY_MIX)
    figures = await pipeline_figures(run, "pipeline-steady", records, {})
    return {f"steady_{key}": figures[key] for key in DRAIN_FIGURES}


#: The code the throughput targets compare with ("today's" when they were set): kseg as of its committed
#: bench run of 2026-12-02 (one worker 491 postbacks/s at 2.04 ms of worker CPU each, one-record changelog
#: batches, one record per event on every internal topic).
TODAY_COMMIT = "b73f16c7f6a3e914d00dfc8f7393bffb192a997b"


def checkout(commit: str, into: Path) -> Path | None:
    """`commit`'s source tree under `into` (git archive of this repository), or None when this is not a git
    clone that has it (a release tarball, a shallow clone)."""
    if (into / "app").is_dir():
        return into
    git = shutil.which("git")
    if git is None:
        return None
    archive = subprocess.run([git, "-C", str(ROOT), "archive", commit], capture_output=True, check=False)
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


async def scenario_pipeline_today(run: Run) -> dict[str, Any]:
    """2f. The same backlog drained by the worker of TODAY_COMMIT (its own code, run from a checkout of it,
    on this run's broker and topics): the CPU per postback the targets divide by, measured in the same run."""
    root = checkout(TODAY_COMMIT, run.work / "today-code")
    if root is None:
        say(f"today: cannot check out {TODAY_COMMIT[:7]} (not a full git clone?); skipped")
        return {}
    figures = await pipeline_figures(run, "pipeline-today", run.records(), {}, worker_root=root)
    return {f"today_{key}": figures[key] for key in DRAIN_FIGURES}


async def pipeline_figures(
    run: Run,
    name: str,
    records: list[tuple[bytes, bytes, str]],
    env: dict[str, str],
    *,
    sinks_process: bool = False,
    worker_root: Path = ROOT,
) -> dict[str, Any]:
    """One worker (with `env` added, run from `worker_root`) draining a prefilled postbacks.raw of
    `records` to Segment; with `sinks_process`, a `kseg sinks` process next to it, its CPU counted with the
    worker's."""
    dep = Deployment(
        run.broker, run.segment.url, run.work / name, extra_env=dict(env), worker_root=worker_root
    )
    await backlog(run, dep, records)
    if name == "pipeline":
        run.backlog_topic = dep.topic("postbacks.raw")
    run.segment.reset()
    run.segment.arrivals.clear()
    requests_before = run.segment.stats()["requests"]
    try:
        roles = ["worker", "sinks"] if sinks_process else ["worker"]
        result = await drain(run, dep, {event_id for _, _, event_id in records}, roles)
        stats = run.segment.stats()
    finally:
        dep.stop()
    written = await records_written(run.broker, dep.app_id, {dep.topic("postbacks.raw")})
    requests = stats["requests"] - requests_before
    messages = stats["messages"]
    per_event = sum(written.values()) / len(records)
    rss = result.rss["worker"]
    return {
        "worker_events_per_s": round(result.delivered / result.seconds, 1),
        "pipeline_events": len(records),
        "pipeline_delivered": result.delivered,
        "pipeline_undelivered": len(records) - result.delivered,
        "worker_cpu_s_per_1k": per_1k(result.cpu, result.delivered),
        "sinks_cpu_s_per_1k": per_1k(result.cpu_by_role.get("sinks"), result.delivered),
        "sinks_ready_after_s": result.ready_after.get("sinks"),
        # The broker's CPU over the same window, per postback: it runs on the same cores.
        "worker_broker_cpu_s_per_1k": per_1k(result.broker_cpu, result.delivered),
        "worker_records_per_event": round(per_event, 2),
        "worker_records_by_topic": {name: round(n / len(records), 2) for name, n in written.items() if n},
        "segment_requests": requests,
        "segment_messages": messages,
        # kseg events per Segment request (one event may become several messages: identify, track, ...).
        "events_per_segment_request": round(result.delivered / requests, 1) if requests else None,
        "messages_per_segment_request": round(messages / requests, 1) if requests else None,
        "per_event_baseline_requests": messages,
        # requests of a one-message-per-request sender / kseg's requests
        "segment_request_ratio": round(messages / requests, 1) if requests else None,
        "worker_peak_rss_mb": round(rss, 1) if rss else None,
        "worker_counters": result.counters,
        **({"pipeline_undelivered_sample": result.undelivered} if result.undelivered else {}),
    }


async def scenario_two_workers(run: Run) -> dict[str, Any]:
    """2b. The same backlog and partitions drained by two worker processes in one consumer group."""
    records = run.records()
    dep = Deployment(run.broker, run.segment.url, run.work / "workers2")
    await backlog(run, dep, records)
    try:
        result = await drain(run, dep, {event_id for _, _, event_id in records}, ["worker", "worker2"])
    finally:
        dep.stop()
    rate = result.delivered / result.seconds
    rejoins = sum(rejoin_lines(dep.data_dir / f"{role}.log") for role in ("worker", "worker2"))
    share = result.processed.get("worker")
    total = sum(result.processed.values())
    return {
        "workers2_events_per_s": round(rate, 1),
        "workers2_delivered": result.delivered,
        "workers2_undelivered": len(records) - result.delivered,
        "workers2_group_rejoins": rejoins,
        "workers2_cpu_s_per_1k": per_1k(result.cpu, result.delivered),
        "workers2_ready_gap_s": result.ready_gap,
        "workers2_first_worker_share": round(share / total, 2) if share is not None and total else None,
        "workers2_counters": result.counters,
        **({"workers2_undelivered_sample": result.undelivered} if result.undelivered else {}),
    }


def rejoin_lines(log: Path) -> int:
    """How often a worker lost its group membership and re-joined (each costs a rebalance)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return text.count("resetting and re-joining group") + text.count("will rejoin")


async def baseline_process(args: list[str], result: Path | None, timeout: float, log: Path) -> dict[str, Any]:
    """Run one baseline as its own process; its JSON result comes from `result` (then it is stopped) or,
    when `result` is None, from its stdout when it exits."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE if result is None else err,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result is not None and result.exists():
                return dict(orjson.loads(result.read_bytes()))
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if result is None and proc.poll() is not None and proc.stdout is not None:
            return dict(orjson.loads(proc.stdout.read().strip().splitlines()[-1]))
        raise RuntimeError(f"baseline {args[0]} gave no result in {timeout:.0f} s; see {log}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def faust_agent_args(
    run: Run, source: str, app_id: str, expected: int, shape: list[str]
) -> tuple[list[str], Path]:
    """The command line of `bench.baselines.faust_agent` and the file it writes its result to."""
    data = run.work / app_id
    data.mkdir(parents=True, exist_ok=True)
    result = data / "result.json"
    args = [
        "bench.baselines.faust_agent",
        "--bootstrap",
        run.broker,
        "--src",
        source,
        "--app-id",
        app_id,
        "--expected",
        str(expected),
        "--partitions",
        str(PARTITIONS),
        "--data-dir",
        str(data),
        "--web-port",
        str(free_port()),
        "--result",
        str(result),
        *shape,
    ]
    return args, result


async def scenario_baselines(run: Run) -> dict[str, Any]:
    """2a. On the one-worker backlog, each as its own process: the raw aiokafka passthrough, a trivial
    faust agent with one output per event, and one with kseg's record shape (one table write, the rest of
    kseg's measured records per event as sends, one of them read back in the same process)."""
    records = run.records()
    if run.backlog_topic is None:  # `--only baselines`: a backlog of its own
        dep = Deployment(run.broker, run.segment.url, run.work / "baselines")
        await backlog(run, dep, records)
        run.backlog_topic = dep.topic("postbacks.raw")
    source, n = run.backlog_topic, len(records)
    tag = f"base{int(time.time() * 1000) % 10_000_000}"
    log = run.work / "baselines.log"
    timeout = max(120.0, n / 20)

    async def passthrough_with(batch_bytes: int, dst: str) -> dict[str, Any]:
        return await baseline_process(
            [
                "bench.baselines.passthrough",
                "--bootstrap",
                run.broker,
                "--src",
                source,
                "--dst",
                f"{tag}.{dst}",
                "--expected",
                str(n),
                "--timeout",
                str(timeout),
                "--max-batch-size",
                str(batch_bytes),
                "--partitions",
                str(PARTITIONS),
            ],
            None,
            timeout + 30,
            log,
        )

    passthrough = await passthrough_with(1, "passthrough")
    batched = await passthrough_with(16384, "passthrough-batched")
    one_args, one_result = faust_agent_args(run, source, f"{tag}one", n, ["--sends", "1"])
    one = await baseline_process(one_args, one_result, timeout, log)
    shape_records, read_back = kseg_shape(run.results)
    shape_args, shape_result = faust_agent_args(
        run, source, f"{tag}shape", n, shape_args_for(shape_records, read_back)
    )
    shape = await baseline_process(shape_args, shape_result, timeout, log)
    return {
        "passthrough_events_per_s": passthrough["events_per_s"],
        "passthrough_cpu_s_per_1k": per_1k(passthrough.get("cpu_seconds"), passthrough["events"]),
        "passthrough_batched_events_per_s": batched["events_per_s"],
        "passthrough_batched_cpu_s_per_1k": per_1k(batched.get("cpu_seconds"), batched["events"]),
        "faust_one_events_per_s": one["events_per_s"],
        "faust_one_cpu_s_per_1k": per_1k(one["cpu_seconds"], one["events"]),
        "faust_shape_events_per_s": shape["events_per_s"],
        "faust_shape_cpu_s_per_1k": per_1k(shape["cpu_seconds"], shape["events"]),
        "faust_shape_records_per_event": shape_records,
        "faust_shape_read_back_per_event": read_back,
    }


#: kseg topics the worker itself reads back: the sinks' outboxes, the identity agents' index updates and
#: links, the processing agent's device events, the audiences agent's changes.
READ_BACK_TOPICS = (
    topics.OUTBOX,
    topics.KOCHAVA_OUTBOX,
    topics.DEVICE_INDEX,
    topics.LINKS,
    topics.DEVICE_EVENTS,
    topics.AUDIENCE_CHANGES,
)


def kseg_shape(results: dict[str, Any]) -> tuple[int, int]:
    """kseg's record shape measured in this run: (records written per event, of which read back in the
    worker), rounded; one of the records is the baseline's table write. Without a measurement: (5, 1)."""
    records = max(2, round(results.get("worker_records_per_event") or 5))
    by_topic = results.get("worker_records_by_topic") or {}
    read_back = round(sum(by_topic.get(name, 0.0) for name in READ_BACK_TOPICS)) or 1
    return records, min(read_back, records - 1)


def shape_args_for(records: int, read_back: int) -> list[str]:
    """faust_agent options for that shape: a table write plus the other records as sends."""
    return ["--sends", str(records - 1), "--table", "--read-back", str(read_back)]


async def scenario_latency(run: Run) -> dict[str, Any]:
    """3. End-to-end latency at half the worker throughput measured in this run (the target's rate)."""
    rate = steady_rate(run, run.prof.latency_rate / 5)
    return await measure_latency(run, run.work / "latency", rate, "e2e")


async def scenario_latency_1000(run: Run) -> dict[str, Any]:
    """3b. The same at a fixed 1,000 postbacks/s (the rate the earlier bench used)."""
    return await measure_latency(
        run, run.work / "latency-1000", run.prof.latency_rate, "e2e_1000", run.prof.latency_1000_seconds
    )


#: Seconds at the start of a latency run left out of its percentiles: the first second's postbacks meet
#: cold connections and code paths (up to ~0.3 s more, measured); `*_cold_p99_ms` keeps them.
LATENCY_WARMUP = 2.0


@contextlib.asynccontextmanager
async def bench_deployment(run: Run, work: Path) -> AsyncIterator[tuple[str, int | None]]:
    """A receiver and a worker on the bench's broker: (postback URL, receiver pid)."""
    dep = await Deployment(run.broker, run.segment.url, work).start("receiver", "worker")
    try:
        yield dep.url, dep.procs["receiver"].pid
    finally:
        dep.stop()


@contextlib.asynccontextmanager
async def kseg_run(run: Run, work: Path) -> AsyncIterator[tuple[str, int | None]]:
    """`kseg run` as an operator starts it on this machine: its own embedded broker, receiver, worker,
    warehouse loader and PostgreSQL, delivering to the bench's Segment emulator. Stopped with SIGINT
    (Ctrl-C) when done, killed if it does not stop."""
    work.mkdir(parents=True, exist_ok=True)
    # Never a default port: a test may run its own `kseg run` beside the bench smoke.
    ports = {name: str(free_port()) for name in KSEG_RUN_PORTS}
    port = int(ports["KSEG_HTTP_PORT"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_"))}
    env |= ports | {
        "KSEG_DATA_DIR": str(work),
        "KSEG_APP_ID": "benchrun",
        "KSEG_POSTBACK_TOKENS": TOKEN,
        "SEGMENT_WRITE_KEY": "bench-key",
        "SEGMENT_ENDPOINT": run.segment.url,
        "SEGMENT_MAX_REQUESTS_PER_SECOND": "1000",
        "LOG_LEVEL": "warning",
    }
    screen = work / "run.log"
    with screen.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "kseg run: ready after" not in screen.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kseg run did not get ready; see {screen}")
            await asyncio.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1/kochava/postbacks", None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def scenario_kseg_run_1000(run: Run) -> dict[str, Any]:
    """3c. `kseg run` with everything on this machine, offered 1,000 postbacks/s of distinct devices
    (installs of new devices) for 60 s: end-to-end latency and what was delivered."""
    return await measure_latency(
        run,
        kseg_run(run, run.work / "kseg-run"),
        run.prof.latency_rate,
        "run_1000",
        run.prof.latency_1000_seconds,
        PostbackGenerator(seed=5, retry_rate=0.0, mix={"install": 1.0}),
    )


async def measure_latency(
    run: Run,
    target: contextlib.AbstractAsyncContextManager[tuple[str, int | None]] | Path,
    rate: float,
    name: str,
    seconds: float | None = None,
    generator: PostbackGenerator | None = None,
) -> dict[str, Any]:
    """End-to-end latency: postback request → first arrival of its event at the Segment emulator, at a
    steady rate (postbacks sent in the first LATENCY_WARMUP seconds count only in `*_cold_p99_ms`).
    `target` is a running kseg (`kseg_run`), or a work directory for a `bench_deployment`."""
    if isinstance(target, Path):
        target = bench_deployment(run, target)
    stamped = Stamped(generator or PostbackGenerator(seed=3, retry_rate=0.0))
    accepted: set[str] = set()
    seconds = seconds or run.prof.latency_seconds
    warmup = min(LATENCY_WARMUP, seconds / 4)  # the smoke run is only 2 s long
    async with target as (url, receiver_pid):
        started = time.perf_counter()
        report = await run_load(
            url,
            TOKEN,
            rate=rate,
            duration=seconds,
            concurrency=128,
            generator=stamped,
            on_accepted=lambda pb: accepted.add(event_id_of(pb.query)),
        )
        deadline = time.monotonic() + 30
        while not accepted <= run.segment.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        receiver_rss = peak_rss_mb(receiver_pid) if receiver_pid else None
    arrivals = run.segment.arrivals
    timed = [
        (stamped.sent_at[e] - started, (arrivals[e] - stamped.sent_at[e]) * 1000)
        for e in accepted
        if e in arrivals
    ]
    every = [latency for _, latency in timed]
    steady = [latency for sent, latency in timed if sent >= warmup]
    return {
        f"{name}_rate": rate,
        f"{name}_accepted": len(accepted),
        f"{name}_delivered": len(every),
        f"{name}_undelivered": len(accepted) - len(every),
        f"{name}_p50_ms": _r(percentile(steady, 50)),
        f"{name}_p95_ms": _r(percentile(steady, 95)),
        f"{name}_p99_ms": _r(percentile(steady, 99)),
        f"{name}_cold_p99_ms": _r(percentile(every, 99)),
        f"{name}_achieved_rate": round(report.accepted_rate, 1),
        ("receiver_peak_rss_mb" if name == "e2e" else f"{name}_receiver_peak_rss_mb"): (
            round(receiver_rss, 1) if receiver_rss else None
        ),
    }


def _r(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def steady_rate(run: Run, fallback: float) -> float:
    """The target's steady rate: `--steady-rate`, else half the worker throughput measured in this run,
    else `fallback` (the pipeline scenario did not run)."""
    if run.steady:
        return run.steady
    measured = run.results.get("worker_events_per_s")
    return round(measured / 2, 1) if measured else fallback


async def scenario_spike(run: Run) -> dict[str, Any]:
    """4. The steady rate (half the worker throughput) with a 10x burst: lost count, peak consumer lag,
    drain time after the burst."""
    return await measure_spike(run, steady_rate(run, run.prof.spike_base), "spike")


async def scenario_spike_fixed(run: Run) -> dict[str, Any]:
    """4b. A 10x burst over a fixed 100/s base (whatever the worker's throughput)."""
    figures = await measure_spike(run, run.prof.spike_fixed_base, "spike-fixed")
    return {key.replace("spike_", "spike100_", 1): value for key, value in figures.items()}


async def measure_spike(run: Run, base: float, name: str) -> dict[str, Any]:
    """`base` postbacks/s with a 10x burst, on a deployment of its own (`name`)."""
    prof = run.prof
    dep = await Deployment(run.broker, run.segment.url, run.work / name).start("receiver", "worker")
    accepted: set[str] = set()
    peak_lag = 0.0
    duration = prof.spike_before + prof.spike_length + prof.spike_after
    spike = SpikeSpec(multiplier=10, start=prof.spike_before, length=prof.spike_length)
    began = time.perf_counter()

    async def watch_lag() -> None:
        nonlocal peak_lag
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                peak_lag = max(peak_lag, await dep.raw_lag())
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_lag())
    try:
        report = await run_load(
            dep.url,
            TOKEN,
            rate=base,
            duration=duration,
            concurrency=256,
            spike=spike,
            generator=PostbackGenerator(seed=4),
            on_accepted=lambda pb: accepted.add(event_id_of(pb.query)),
        )
        burst_end = began + prof.spike_before + prof.spike_length
        deadline = time.monotonic() + prof.drain_timeout
        while not accepted <= run.segment.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        drained_at = time.perf_counter()
        lag_at_end: float | None = None
        with contextlib.suppress(aiohttp.ClientError, OSError):
            lag_at_end = await dep.lag()  # every input topic: raw, outboxes, index updates
    finally:
        watcher.cancel()
        dep.stop()
    undelivered = len(accepted - run.segment.arrivals.keys())
    # Not drained within the wait: what is still queued on any of the worker's input topics (raw, the
    # outboxes, the identity index) is late, not lost, so `lost` is only known when nothing is queued.
    lost = undelivered if undelivered == 0 or lag_at_end == 0 else None
    return {
        "spike_base_rate": base,
        "spike_offered": report.sent,
        "spike_accepted": len(accepted),
        "spike_503s": report.rejected_503,
        # Neither 200 nor 503: timeouts, refused connections, other statuses (offered - accepted is
        # mostly the generator's Kochava-style retries, which share an event id with their original).
        "spike_errors": sum(report.errors.values()) + sum(report.other_statuses.values()),
        "spike_client_saturated": report.client_saturated,
        "spike_lost": lost,
        "spike_undelivered_at_end": undelivered,
        "spike_lag_at_end": lag_at_end,
        "spike_peak_lag": peak_lag,
        "spike_drain_seconds": round(max(0.0, drained_at - burst_end), 1) if undelivered == 0 else None,
    }


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, or on PATH); None when it is not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def sampled(pid: int, out: Path, until: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """py-spy raw samples of `pid` (non-idle, all threads, 100 Hz) while `until()` runs, as shares."""
    spy = py_spy()
    if spy is None:
        return {}
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--full-filenames",
            "--nonblocking",
            "--rate",
            "100",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        await until()
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return breakdown(out) if out.exists() else {}


async def scenario_profile(run: Run) -> dict[str, Any]:
    """7. Where the CPU goes: py-spy on a worker draining a backlog (and perf on the broker meanwhile), and
    py-spy on the faust agent with kseg's shape draining the same one (full runs only; needs
    `pip install py-spy` in the venv, and linux-perf for the broker's)."""
    if py_spy() is None:
        say("profile: py-spy is not installed (pip install py-spy); skipped")
        return {}
    records = raw_records(run.prof.profile_events)
    wanted = {event_id for _, _, event_id in records}
    dep = Deployment(run.broker, run.segment.url, run.work / "profile")
    await backlog(run, dep, records)
    dep.spawn("worker")
    try:
        await dep.wait_ready("worker")

        async def delivered() -> None:
            deadline = time.monotonic() + max(60.0, len(wanted) / 20)
            while not wanted <= run.segment.arrivals.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

        pid = dep.procs["worker"].pid

        async def worker_sampled() -> None:
            run.profile["kseg worker"] = await sampled(pid, run.work / "worker.pyspy", delivered)

        if run.broker_pid is None:
            await worker_sampled()
        else:
            run.broker_profile = await perf_sampled(run.broker_pid, run.work / "broker.perf", worker_sampled)
            if not run.broker_profile:
                say("profile: no perf samples of the broker (is linux-perf installed? may it sample it?)")
    finally:
        dep.stop()
    shape_records, read_back = kseg_shape(run.results)
    args, result = faust_agent_args(
        run,
        dep.topic("postbacks.raw"),
        f"{dep.app_id}shape",
        len(records),
        shape_args_for(shape_records, read_back),
    )
    log = run.work / "profile-baseline.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=err, stderr=err, preexec_fn=die_with_parent
        )

    started = result.with_suffix(".started")
    deadline = time.monotonic() + 90
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # profile the drain, not faust's startup

    async def finished() -> None:
        deadline = time.monotonic() + max(60.0, len(records) / 20)
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    try:
        label = f"faust agent, kseg's shape ({shape_records} records/event, {read_back} read back)"
        run.profile[label] = await sampled(proc.pid, run.work / "shape.pyspy", finished)
    finally:
        proc.terminate()
        proc.wait(20)
    return {"profile_events": len(records)}


#: Short name (for --only), title, scenario. Order matters: the baselines take kseg's measured record
#: shape from the pipeline, the latency its rate from the worker's throughput.
Scenario = Callable[[Run], Awaitable[dict[str, Any]]]
SCENARIOS: tuple[tuple[str, str, Scenario], ...] = (
    ("ingest", "receiver ingest", scenario_ingest),
    ("pipeline", "worker pipeline, one worker", scenario_pipeline),
    ("pipeline1", "worker pipeline, one-record changelogs (the old mode)", scenario_pipeline_one_record),
    ("today", f"worker pipeline, the code of {TODAY_COMMIT[:7]} (today's)", scenario_pipeline_today),
    ("steady", "worker pipeline, steady-state mix", scenario_pipeline_steady),
    ("split", "worker pipeline, sinks in their own process (kseg sinks)", scenario_pipeline_split),
    ("baselines", "passthrough and trivial faust agents on the same backlog", scenario_baselines),
    ("workers2", "worker pipeline, two workers", scenario_two_workers),
    ("latency", "end-to-end latency at half the worker throughput", scenario_latency),
    ("latency1000", "end-to-end latency at 1,000/s", scenario_latency_1000),
    ("run1000", "kseg run, everything on this machine, 1,000/s of new devices", scenario_kseg_run_1000),
    ("spike", "spike", scenario_spike),
    ("spike100", "spike over a fixed 100/s base", scenario_spike_fixed),
    ("profile", "profile (py-spy) of a draining worker and of the faust baseline", scenario_profile),
)
#: Not in --smoke: py-spy is not a project dependency, and today's code needs a clone with its commit.
FULL_ONLY = {"profile", "today"}


def selected(only: str | None, smoke: bool) -> list[tuple[str, str, Scenario]]:
    """Scenarios to run: all (the smoke without FULL_ONLY), or those `--only` names (short name, or a
    word of the title)."""
    if not only:
        return [s for s in SCENARIOS if not (smoke and s[0] in FULL_ONLY)]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    shorts = {s[0] for s in SCENARIOS}
    chosen = [s for s in SCENARIOS if any(w == s[0] or (w not in shorts and w in s[1]) for w in wanted)]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no scenario; names: {', '.join(s[0] for s in SCENARIOS)}")
    return chosen


#: What each ratio divides by (shown next to it in latest.md): every ratio names its divisor.
DIVISORS = {
    "receiver_ratio": "bare_aiohttp_accepted_per_s",
    "worker_ratio": "passthrough_events_per_s (one-record batches)",
    "worker_per_batched_passthrough": "passthrough_batched_events_per_s",
    "receiver_cpu_vs_bare": "bare_aiohttp_cpu_s_per_1k (receiver CPU / bare handler CPU)",
    "worker_vs_faust_shape": "faust_shape_events_per_s",
    "faust_shape_ratio": "passthrough_events_per_s (one-record batches)",
    "faust_one_ratio": "passthrough_events_per_s (one-record batches)",
    "passthrough_batching_gain": "passthrough_events_per_s (one-record batches)",
    "workers2_scaling": "worker_events_per_s",
    "split_events_vs_pipeline": "worker_events_per_s (sinks in the worker, same run)",
    "split_cpu_vs_pipeline": "cpu_ms_per_postback (sinks in the worker, same run)",
    "worker_cpu_ratio": "worker_cpu_s_per_1k (passthrough CPU / worker CPU)",
    "worker_cpu_vs_faust_shape": "worker_cpu_s_per_1k (faust shape CPU / worker CPU)",
    "cpu_per_postback_vs_today": f"today_cpu_ms_per_postback (same run, the worker of {TODAY_COMMIT[:7]})",
    "broker_cpu_vs_today": "today_worker_broker_cpu_s_per_1k",
    "worker_events_vs_today": "today_worker_events_per_s",
    "cpu_per_postback_vs_onerecord": "onerecord_cpu_ms_per_postback (same run, one-record changelogs)",
    "broker_cpu_vs_onerecord": "onerecord_worker_broker_cpu_s_per_1k",
    "segment_request_ratio": "segment_requests (one request per message / kseg's requests)",
}


def _sum(*values: Any) -> float | None:
    return round(sum(values), 3) if all(v is not None for v in values) else None


#: Segment messages per /v1/batch request at most (SEGMENT_BATCH_MAX_MESSAGES's default).
SEGMENT_MESSAGE_CAP: int = SegmentSettings.model_fields["segment_batch_max_messages"].default


def derive(results: dict[str, Any]) -> None:
    """Ratios between figures of different scenarios (present when both sides ran)."""
    worker, passthrough = results.get("worker_events_per_s"), results.get("passthrough_events_per_s")
    results["cpu_ms_per_postback"] = _sum(
        results.get("worker_cpu_s_per_1k"), results.get("worker_broker_cpu_s_per_1k")
    )
    results["onerecord_cpu_ms_per_postback"] = _sum(
        results.get("onerecord_worker_cpu_s_per_1k"), results.get("onerecord_worker_broker_cpu_s_per_1k")
    )
    results["today_cpu_ms_per_postback"] = _sum(
        results.get("today_worker_cpu_s_per_1k"), results.get("today_worker_broker_cpu_s_per_1k")
    )
    results["steady_cpu_ms_per_postback"] = _sum(
        results.get("steady_worker_cpu_s_per_1k"), results.get("steady_worker_broker_cpu_s_per_1k")
    )
    results["split_cpu_ms_per_postback"] = _sum(
        results.get("split_worker_cpu_s_per_1k"), results.get("split_worker_broker_cpu_s_per_1k")
    )
    cpu_keys = (
        "cpu_ms_per_postback",
        "onerecord_cpu_ms_per_postback",
        "today_cpu_ms_per_postback",
        "steady_cpu_ms_per_postback",
    )
    for key in (*cpu_keys, "split_cpu_ms_per_postback"):
        if results[key] is None:
            del results[key]
    derived = {
        "cpu_per_postback_vs_today": ratio(
            results.get("cpu_ms_per_postback"), results.get("today_cpu_ms_per_postback")
        ),
        "broker_cpu_vs_today": ratio(
            results.get("worker_broker_cpu_s_per_1k"), results.get("today_worker_broker_cpu_s_per_1k")
        ),
        "worker_events_vs_today": ratio(worker, results.get("today_worker_events_per_s")),
        "cpu_per_postback_vs_onerecord": ratio(
            results.get("cpu_ms_per_postback"), results.get("onerecord_cpu_ms_per_postback")
        ),
        "broker_cpu_vs_onerecord": ratio(
            results.get("worker_broker_cpu_s_per_1k"), results.get("onerecord_worker_broker_cpu_s_per_1k")
        ),
        "worker_per_batched_passthrough": ratio(worker, results.get("passthrough_batched_events_per_s")),
        "receiver_cpu_vs_bare": ratio(
            results.get("receiver_cpu_s_per_1k"), results.get("bare_aiohttp_cpu_s_per_1k")
        ),
        "passthrough_batching_gain": ratio(results.get("passthrough_batched_events_per_s"), passthrough),
        "worker_ratio": ratio(worker, passthrough),
        "worker_vs_faust_shape": ratio(worker, results.get("faust_shape_events_per_s")),
        "faust_shape_ratio": ratio(results.get("faust_shape_events_per_s"), passthrough),
        "faust_one_ratio": ratio(results.get("faust_one_events_per_s"), passthrough),
        "workers2_scaling": ratio(results.get("workers2_events_per_s"), worker),
        "split_events_vs_pipeline": ratio(results.get("split_worker_events_per_s"), worker),
        "split_cpu_vs_pipeline": ratio(
            results.get("split_cpu_ms_per_postback"), results.get("cpu_ms_per_postback")
        ),
        # The same comparisons in CPU per event (less sensitive to a CPU shared with other processes).
        "worker_cpu_ratio": ratio(
            results.get("passthrough_cpu_s_per_1k"), results.get("worker_cpu_s_per_1k")
        ),
        "worker_cpu_vs_faust_shape": ratio(
            results.get("faust_shape_cpu_s_per_1k"), results.get("worker_cpu_s_per_1k")
        ),
        # Segment messages per postback of the peak-mix drain, and how many events a request full to the
        # message cap would carry at that rate (the ceiling of events_per_segment_request).
        "segment_messages_per_event": ratio(
            results.get("segment_messages"), results.get("pipeline_delivered")
        ),
    }
    per_event = derived["segment_messages_per_event"]
    if per_event:
        derived["events_per_request_at_message_cap"] = round(SEGMENT_MESSAGE_CAP / per_event, 1)
    results.update({key: value for key, value in derived.items() if value is not None})


#: Targets measured by one full-run-only scenario: a run without that scenario (`--smoke`, `--only`) has
#: no verdict for them, rather than a "missing" one.
TARGET_SCENARIO = {"cpu_per_postback_vs_today": "today"}


def check(results: dict[str, Any], ran: Iterable[str] | None = None) -> dict[str, str]:
    """Each target's verdict: met, missed, or missing (its scenario ran and gave no figure). `ran`: the
    scenarios of the run (all when None)."""
    scenarios = None if ran is None else set(ran)
    verdicts = {}
    for key, (op, bound) in TARGETS.items():
        needs = TARGET_SCENARIO.get(key)
        if needs is not None and scenarios is not None and needs not in scenarios:
            continue
        value = results.get(key)
        if value is None:
            verdicts[key] = "missing"
        else:
            ok = value >= bound if op == ">=" else value <= bound
            verdicts[key] = "met" if ok else "missed"
    return verdicts


def side_by_side(results: dict[str, Any]) -> list[str]:
    """The drain figures in one table: how much of the worker's cost is the broker, faust, and kseg."""
    rows = (
        ("raw aiokafka passthrough (1 record out)", "passthrough", 1),
        ("trivial faust agent, 1 output per event", "faust_one", 1),
        (
            f"trivial faust agent, kseg's shape (table write + sends, "
            f"{results.get('faust_shape_read_back_per_event')} read back)",
            "faust_shape",
            results.get("faust_shape_records_per_event"),
        ),
        ("kseg worker, 1 process", "worker", results.get("worker_records_per_event")),
        ("kseg worker, 2 processes", "workers2", results.get("worker_records_per_event")),
    )
    passthrough = results.get("passthrough_events_per_s")
    lines = [
        "",
        "## Side by side: the same backlog, the same broker, one process each",
        "",
        "| stage | events/s | x passthrough | CPU s per 1,000 events | records written per event |",
        "|---|---|---|---|---|",
    ]
    for label, prefix, records in rows:
        rate = results.get(f"{prefix}_events_per_s")
        if rate is None:
            continue
        cpu = results.get(f"{prefix}_cpu_s_per_1k")
        share = ratio(rate, passthrough) or ""
        lines.append(f"| {label} | {rate} | {share} | {cpu or ''} | {records or ''} |")
    if results.get("receiver_cpu_s_per_1k") is not None:
        lines += [
            "",
            "| receiver | postbacks/s | CPU s per 1,000 postbacks |",
            "|---|---|---|",
            f"| bare aiohttp handler | {results.get('bare_aiohttp_accepted_per_s')} | "
            f"{results.get('bare_aiohttp_cpu_s_per_1k')} |",
            f"| kseg receiver (Kafka ack) | {results.get('receiver_accepted_per_s')} | "
            f"{results.get('receiver_cpu_s_per_1k')} |",
        ]
    return lines


def profile_lines(profile: dict[str, dict[str, float]]) -> list[str]:
    """The profile section: share of non-idle samples per component, one column per profiled process."""
    if not profile:
        return []
    names = list(profile)
    components: list[str] = []
    for shares in profile.values():
        components += [c for c in shares if c != "samples" and c not in components]
    lines = [
        "",
        "## Profile: where the CPU goes while draining (py-spy, % of non-idle samples)",
        "",
        "| component | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for component in components:
        cells = " | ".join(str(profile[n].get(component, 0.0)) for n in names)
        lines.append(f"| {component} | {cells} |")
    lines.append("| samples | " + " | ".join(str(int(profile[n].get("samples", 0))) for n in names) + " |")
    return lines


def broker_profile_lines(shares: dict[str, float]) -> list[str]:
    """The broker's profile section: share of perf samples per component (bench/broker_profile.py)."""
    if not shares:
        return []
    lines = [
        "",
        "## Profile of the embedded broker while the worker above drains (perf, kernel stacks, % of samples)",
        "",
        "Tansu's binary is stripped: its own functions have no names, the kernel frames say what it asked of",
        "the kernel (`python -m bench.broker_profile` reads a perf.data file the same way).",
        "",
        "| component | % of samples |",
        "|---|---|",
    ]
    lines += [f"| {name} | {share} |" for name, share in shares.items() if name != "samples"]
    lines.append(f"| samples | {int(shares.get('samples', 0))} |")
    return lines


def markdown(
    results: dict[str, Any],
    verdicts: dict[str, str],
    meta: dict[str, Any],
    profile: dict[str, dict[str, float]] | None = None,
    notes: str = "",
    broker_profile: dict[str, float] | None = None,
) -> str:
    lines = [
        "# kseg benchmark results",
        "",
        f"Run {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs), mode `{meta['mode']}`, "
        f"{meta['seconds']} s in all. Embedded Tansu broker, Segment emulator, loopback only.",
        "",
        "| figure | value | divides by | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for key, value in results.items():
        target = TARGETS.get(key)
        target_text = f"{target[0]} {target[1]}" if target else ""
        divisor = DIVISORS.get(key, "")
        lines.append(f"| {key} | {value} | {divisor} | {target_text} | {verdicts.get(key, '')} |")
    lines += side_by_side(results)
    met = [key for key, verdict in verdicts.items() if verdict == "met"]
    missed = [key for key, verdict in verdicts.items() if verdict != "met"]
    lines += ["", "## Targets", "", f"Met: {', '.join(met) or 'none'}."]
    if missed:
        lines += ["", "Missed (what limits each, what was tried):", ""]
        for key in missed:
            lines.append(f"- **{key}** ({verdicts[key]}): {limit_text(key, results)}")
    lines += profile_lines(profile or {})
    lines += broker_profile_lines(broker_profile or {})
    if notes:
        lines += ["", notes.rstrip()]
    return "\n".join(lines) + "\n"


NOTES = "notes.md"  # hand-written analysis appended to latest.md (kept in bench/results/)


def render_only(out_dir: Path) -> int:
    """Rewrite latest.md from latest.json (after editing the explanations, without re-running); the
    derived figures are worked out again from the measured ones (a ratio added since the run shows)."""
    report = orjson.loads((out_dir / "latest.json").read_bytes())
    derive(report["results"])
    report["targets"] = check(report["results"], report["meta"].get("scenarios"))
    (out_dir / "latest.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    notes = (out_dir / NOTES).read_text() if (out_dir / NOTES).exists() else ""
    text = markdown(
        report["results"],
        report["targets"],
        report["meta"],
        report.get("profile"),
        notes,
        report.get("broker_profile"),
    )
    (out_dir / "latest.md").write_text(text)
    print(text)
    return 0


async def main_async(args: argparse.Namespace) -> int:
    if args.render_only:
        return render_only(Path(args.out))
    prof = SMOKE if args.smoke else FULL
    scenarios = selected(args.only, args.smoke)
    began = time.perf_counter()
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.work:  # kept: process logs, py-spy samples
            work = Path(args.work)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kseg-bench-")))
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            segment = TimedEmulator(write_key="bench-key", store_messages=False)
            async with segment:
                run = Run(broker.bootstrap_servers, segment, work, prof, results, steady=args.steady_rate)
                run.broker_pid = broker.process.pid if broker.process else None
                for _, name, scenario in scenarios:
                    say(f"{name} ...")
                    segment.reset()
                    segment.arrivals.clear()
                    figures = await scenario(run)
                    say(f"{name}: {figures}")
                    results.update(figures)
                profile = run.profile
                broker_profile = run.broker_profile
    derive(results)
    verdicts = check(results, [short for short, _, _ in scenarios])
    meta = {
        "when": utc_now_iso(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "mode": "smoke" if args.smoke else "full",
        "scenarios": [short for short, _, _ in scenarios],
        "seconds": round(time.perf_counter() - began, 1),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_bytes(
        orjson.dumps(
            {
                "meta": meta,
                "results": results,
                "targets": verdicts,
                "profile": profile,
                "broker_profile": broker_profile,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    notes = (out_dir / NOTES).read_text() if (out_dir / NOTES).exists() else ""
    text = markdown(results, verdicts, meta, profile, notes, broker_profile)
    (out_dir / "latest.md").write_text(text)
    print(text)
    return 0


def main() -> int:
    names = ", ".join(f"{short} ({title})" for short, title, _ in SCENARIOS)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny, fast run that checks every figure exists")
    parser.add_argument("--only", help=f"run only these scenarios (comma-separated): {names}")
    parser.add_argument("--out", default=str(RESULTS), help="where latest.json and latest.md go")
    parser.add_argument("--work", help="keep logs and py-spy samples in this directory (default: a temp dir)")
    parser.add_argument("--render-only", action="store_true", help="rewrite latest.md from latest.json")
    parser.add_argument(
        "--steady-rate",
        type=float,
        help="postbacks/s of the latency and spike scenarios (default: half the measured worker throughput)",
    )
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
