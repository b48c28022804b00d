"""kseg's own per-event CPU in the worker, without a broker: the processing agent's code on plain data.

Why: the pipeline bench measures the whole worker (faust, aiokafka, the broker on the same cores); this
measures only what kseg's code costs per postback, so a change to it can be judged in seconds, A/B, with
CPU time (`time.process_time`) that does not depend much on what else the machine runs.

The postbacks are the pipeline bench's backlog (`bench.run.raw_records`: the same generator, seed and peak
mix, so the same postbacks), as the receiver wrote them. They go through exactly what the processing agent
runs per micro-batch (`app/pipeline/process.py`): `handle_record` for each record of up to `BATCH_MAX`,
then the batch's sends and processing receipt, then each changed device's profile write. A plain dict
stands in for the profiles table and holds each profile as the bytes faust's JSON serialiser (orjson)
would store, decoded again on every read, as the RocksDB store does. Every produced value is already
bytes (the steps encode their records); the profile writes are encoded here.

The device index answers as in the worker: each batch's index updates go through the index's own rule
(`app.identity.index.apply_update`, on plain records), and its notices to device keys are the first
records of the next batch (so a reinstall's parked postbacks are released, as they are in the worker).
The index's CPU is the device-index agent's, not the processing agent's: it is timed apart and left out.

The baseline in the same run is the floor any processor pays per postback: decode the raw record's bytes
and encode one output value. Both are reported in µs of CPU per postback, min and median of the repeats.

    python -m bench.core_bench                   # 8,000 postbacks, 5 repeats
    python -m bench.core_bench -n 2000 -r 9
    python -m bench.core_bench --profile         # cProfile's top entries (cumulative and tottime)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from app import topics
from app.identity.agents import index_limits
from app.identity.index import IndexLimits, apply_update
from app.identity.records import DeviceIndexUpdate, DeviceRecord
from app.mapping import ProfileRegistry
from app.pipeline.steps import Batch, Send, StepConfig, handle_record, processing_receipts
from app.runtime.batching import BATCH_MAX
from app.sections import PipelineSettings
from bench.run import STEADY_MIX, raw_records

#: (key, value) of one `postbacks.raw` record.
RawRecord = tuple[bytes, bytes]


@dataclass
class Drain:
    """One pass of the records through the steps: what it produced (a fresh table each pass)."""

    table: dict[str, bytes] = field(default_factory=dict)
    sends: int = 0
    outputs: int = 0
    receipts: int = 0
    #: Notices from the device index the steps handled (user links, a reinstall's answers).
    notices: int = 0
    #: CPU seconds of the device index's own work (left out of the processing agent's figure).
    index_cpu: float = 0.0
    #: What each postback became, by event id, as the processing receipts say (the latest outcome: a
    #: parked postback is `mapped` once its device's index answers release it).
    outcomes: dict[str, str] = field(default_factory=dict)

    def stored_profile(self, device_key: str) -> dict[str, Any] | None:
        value = self.table.get(device_key)
        return orjson.loads(value) if value is not None else None


@dataclass
class DeviceIndex:
    """The device index on plain records: the device-index agent's rule, its notices as records. Its
    table holds each record as bytes, as the agent's RocksDB table does (so the bench's heap, which the
    garbage collector walks, does not hold thousands of records the worker would not)."""

    limits: IndexLimits
    records: dict[str, bytes] = field(default_factory=dict)

    def answer(self, sends: list[Send]) -> list[RawRecord]:
        """The `identity.device-events` records the batch's index updates lead to (and forwards applied)."""
        queue = [
            DeviceIndexUpdate.model_validate(orjson.loads(v)) for t, _, v in sends if t == topics.DEVICE_INDEX
        ]
        notices: list[RawRecord] = []
        while queue:
            update = queue.pop(0)
            stored = self.records.get(update.device)
            record = DeviceRecord.model_validate(orjson.loads(stored)) if stored else None
            result = apply_update(record, update, self.limits)
            self.records[update.device] = orjson.dumps(result.record.model_dump(mode="json"))
            notices += [(n.device_key.encode(), n.encode()) for n in result.notices]
            queue += result.forward
        return notices


def drain(records: list[RawRecord], config: StepConfig, batch_max: int = BATCH_MAX) -> Drain:
    """The processing agent's loop (`process_batch`) over `records`, in micro-batches of `batch_max`;
    the device index's notices lead each next batch."""
    out = Drain()
    index = DeviceIndex(index_limits(config.settings))
    waiting: list[RawRecord] = []
    position, n = 0, 0
    while position < len(records) or waiting:
        room = max(batch_max - len(waiting), 0)
        items = [*waiting, *records[position : position + room]]
        out.notices += len(waiting)
        position += room
        batch = Batch(stored_profile=out.stored_profile, config=config)
        for key, value in items:
            handle_record(batch, n, key, value, config)
            n += 1
        receipts = processing_receipts(batch)
        sends: list[Send] = [*batch.sends, *receipts]
        out.sends += len(sends)
        out.outputs += sum(len(value) for _, _, value in sends)
        out.receipts += len(receipts)
        for step in batch.steps:
            if step.outcome is not None:
                out.outcomes[step.outcome.event_id] = step.outcome.outcome
        for _event, device_key, state in batch.profile_writes():
            out.table[device_key] = orjson.dumps(state)
        start = time.process_time()
        waiting = index.answer(sends)
        out.index_cpu += time.process_time() - start
    return out


def floor(records: list[RawRecord]) -> int:
    """The baseline: decode each raw record and encode one output value for it."""
    size = 0
    for _key, value in records:
        size += len(orjson.dumps(orjson.loads(value)))
    return size


def cpu_us_per_event(run: Callable[[], Any], events: int) -> float:
    """CPU µs per event of one call of `run` (less the device index's CPU, when it returns a `Drain`)."""
    start = time.process_time()
    result = run()
    spent = time.process_time() - start
    if isinstance(result, Drain):
        spent -= result.index_cpu
    return spent * 1e6 / events


def step_config() -> StepConfig:
    """The worker's configuration with the product defaults and the built-in profiles."""
    settings = PipelineSettings(_env_file=None)  # type: ignore[call-arg]
    return StepConfig(settings, ProfileRegistry.load(settings.kseg_mapping_dir))


def backlog(n: int, steady: bool = False) -> list[RawRecord]:
    """The pipeline bench's backlog of `n` distinct postbacks (peak mix, or the steady mix)."""
    return [(key, value) for key, value, _ in raw_records(n, STEADY_MIX if steady else None)]


def measure(records: list[RawRecord], repeats: int) -> dict[str, Any]:
    """kseg's steps and the baseline on `records`, alternated repeat by repeat; µs of CPU per postback."""
    config = step_config()
    first = drain(records, config)  # warm-up, and the check that every postback has an outcome
    kseg: list[float] = []
    base: list[float] = []
    for _ in range(repeats):
        base.append(cpu_us_per_event(lambda: floor(records), len(records)))
        fresh = step_config_fresh(config)  # built outside the timing, as the worker builds it once
        kseg.append(cpu_us_per_event(partial(drain, records, fresh), len(records)))
    return {
        "postbacks": len(records),
        "outcomes": len(first.outcomes),
        "outcome_counts": _count(first.outcomes.values()),
        "notices": first.notices,
        "records_sent": first.sends,
        "bytes_sent": first.outputs,
        "profiles_written": len(first.table),
        "kseg_us_min": min(kseg),
        "kseg_us_median": statistics.median(kseg),
        "baseline_us_min": min(base),
        "baseline_us_median": statistics.median(base),
    }


def step_config_fresh(config: StepConfig) -> StepConfig:
    """The same configuration for another pass (the profiles and rates are reused; the drift and shadow
    trackers start empty, as a worker's do after each report)."""
    return StepConfig(config.settings, config.profiles, rates=config.rates, metrics=config.metrics)


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def profile(records: list[RawRecord], top: int) -> str:
    """cProfile of one drain (after a warm-up one): the top entries by cumulative and by own time."""
    config = step_config()
    drain(records, config)
    fresh = step_config_fresh(config)
    profiler = cProfile.Profile()
    profiler.enable()
    drain(records, fresh)
    profiler.disable()
    text = io.StringIO()
    for order in ("cumulative", "tottime"):
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--postbacks", type=int, default=8000, help="postbacks (default 8,000)")
    parser.add_argument("-r", "--repeats", type=int, default=5, help="timed passes of each (default 5)")
    parser.add_argument("--steady", action="store_true", help="the steady mix instead of the peak mix")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries instead")
    parser.add_argument("--top", type=int, default=40, help="entries per cProfile table (default 40)")
    args = parser.parse_args(argv)
    records = backlog(args.postbacks, args.steady)
    if args.profile:
        print(profile(records, args.top))
        return 0
    result = measure(records, args.repeats)
    ratio = result["kseg_us_min"] / result["baseline_us_min"]
    print(
        f"postbacks: {result['postbacks']} ({'steady' if args.steady else 'peak'} mix), "
        f"batches of {BATCH_MAX}, {args.repeats} repeats\n"
        f"outcomes: {result['outcome_counts']}; index notices handled {result['notices']}; "
        f"records sent {result['records_sent']} "
        f"({result['bytes_sent']} bytes), profiles written {result['profiles_written']}\n"
        f"kseg steps   µs CPU per postback: min {result['kseg_us_min']:.1f}, "
        f"median {result['kseg_us_median']:.1f}\n"
        f"baseline     µs CPU per postback: min {result['baseline_us_min']:.1f}, "
        f"median {result['baseline_us_median']:.1f} (decode the raw record, encode one output)\n"
        f"kseg / baseline (min): {ratio:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
