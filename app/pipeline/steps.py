"""The processing agent's per-event logic as plain functions: postback → mapping → dedupe → identity →
Segment outbox + warehouse row, and user-link notices → late authentication.

Nothing here touches faust. A `Batch` reads stored state through the function it is given (the profile
table, which also holds each device's dedupe marks) and collects, per event, the records to produce and
the device states to write once they are durable; `app/pipeline/process.py` does the producing and
writing, and unit tests drive these functions with plain dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from app import topics
from app.audiences.devices import device_facts, with_att
from app.dlq.writer import dead_letter_record
from app.identity.late_auth import apply_link
from app.identity.resolver import observations, resolve, with_first_touch
from app.lifecycle.config import LifecycleConfig, lifecycle_config, load_config_rates
from app.lifecycle.currency import Rates
from app.mapping import (
    MappingProfile,
    ProfileRegistry,
    UnknownProfile,
    dead_letter_unknown_profile,
    event_outputs,
    map_postback,
)
from app.pipeline.metrics import PipelineMetrics
from app.records import (
    AttributionProfile,
    DeadLetter,
    DeviceLinked,
    RawPostback,
    SegmentCalls,
    decode_object,
    dumps,
    utc_now_iso,
    validate_or_dead_letter,
)
from app.sections import PipelineSettings

#: Postbacks a reinstalled device parks at most while it waits for the index's answers.
MAX_PARKED = 200

#: (logical topic name from `app.topics`, key, value) of one record to produce.
Send = tuple[str, bytes, bytes]


@dataclass(frozen=True)
class StepConfig:
    """What the steps need besides state: settings, the mapping profiles, the wall clock (dedupe), the
    currency rates (read from `KSEG_CURRENCY_RATES_FILE` when not given) and the counters (the worker's, on
    its context's registry; a private registry when not given)."""

    settings: PipelineSettings
    profiles: ProfileRegistry
    clock: Callable[[], float] = time.time
    rates: Rates | None = None
    metrics: PipelineMetrics = field(default_factory=lambda: PipelineMetrics.on(CollectorRegistry()))

    def __post_init__(self) -> None:
        if self.rates is None:
            object.__setattr__(self, "rates", load_config_rates(self.settings))

    def lifecycle(self, profile: MappingProfile) -> LifecycleConfig:
        assert self.rates is not None
        return lifecycle_config(profile.lifecycle, self.settings, self.rates)


@dataclass
class Step:
    """What one event produces: records to send, then (once they are durable) its device's new state."""

    event: Any
    sends: list[Send] = field(default_factory=list)
    device_key: str | None = None


@dataclass
class Batch:
    """One micro-batch. Its outputs go to Kafka together and are awaited once; only then is each device's
    final profile written, once per device, so a crash before that replays the whole batch. The profile
    also carries the device's dedupe marks, so an event is marked seen only after its outputs are durable.

    `stored_profile(device_key)` reads the profile table (JSON dict or None). Reads within the batch see
    the batch's own earlier changes."""

    stored_profile: Callable[[str], dict[str, Any] | None]
    config: StepConfig
    steps: list[Step] = field(default_factory=list)
    states: dict[str, AttributionProfile] = field(default_factory=dict)

    def profile(self, device_key: str) -> AttributionProfile:
        if device_key in self.states:
            return self.states[device_key]
        stored = self.stored_profile(device_key)
        return AttributionProfile.model_validate(stored) if stored else AttributionProfile()

    def seen(self, device_key: str, event_id: str) -> bool:
        """Whether the device processed this postback within the dedupe window."""
        at = self.profile(device_key).recent_events.get(event_id)
        return at is not None and self.config.clock() - at < self.config.settings.kseg_dedupe_ttl_hours * 3600

    def add(
        self,
        step: Step,
        device_key: str | None = None,
        state: AttributionProfile | None = None,
        seen_id: str | None = None,
    ) -> None:
        """Record a step; `state` is the device's new profile, `seen_id` a postback id to mark as seen.
        A change the audiences depend on (member, ids, lifecycle signals) also sends the device's facts."""
        if device_key is not None and (state is not None or seen_id):
            state = state or self.profile(device_key)
            if seen_id:
                state = remember(state, seen_id, self.config)
            facts = device_facts(self.profile(device_key), state, device_key, utc_now_iso())
            step.sends += [(topics.AUDIENCE_CHANGES, f.member.encode(), dumps(f)) for f in facts]
            self.states[device_key] = state
            step.device_key = device_key
        self.steps.append(step)

    @property
    def sends(self) -> list[Send]:
        """Every record to produce, in event order (all are awaited before any table write)."""
        return [send for step in self.steps for send in step.sends]

    def profile_writes(self) -> list[tuple[Any, str, dict[str, Any]]]:
        """(event, device key, profile JSON): each changed device's final state once, with the device's last
        event (for its partition). Made only after every send was acked."""
        last: dict[str, Any] = {}
        for step in self.steps:
            if step.device_key is not None:
                last[step.device_key] = step.event
        return [(event, key, self.states[key].model_dump(mode="json")) for key, event in last.items()]


def remember(state: AttributionProfile, event_id: str, config: StepConfig) -> AttributionProfile:
    """`state` with `event_id` marked seen now; ids past the TTL dropped, then the oldest over the cap."""
    now = config.clock()
    horizon = now - config.settings.kseg_dedupe_ttl_hours * 3600
    recent = {k: at for k, at in state.recent_events.items() if at > horizon}
    recent[event_id] = now
    cap = config.settings.kseg_dedupe_max_per_device
    if len(recent) > cap:
        recent = dict(sorted(recent.items(), key=lambda item: item[1])[-cap:])
    return state.model_copy(update={"recent_events": recent})


def segment_calls_record(messages: list[dict[str, Any]]) -> bytes:
    """One outbox record holding all the Segment calls of one event (the sink unpacks it)."""
    return SegmentCalls(messages=messages).encode()


def dead_letter_send(letter: DeadLetter, config: StepConfig) -> Send:
    return (topics.DEADLETTER, *dead_letter_record(letter, config.metrics.dead_letters))


def handle_postback(
    batch: Batch, event: Any, device_key: str, value: dict[str, Any], config: StepConfig
) -> None:
    settings = config.settings
    raw = validate_or_dead_letter(value, RawPostback, stage="mapping", reason="invalid_raw_record")
    if isinstance(raw, DeadLetter):
        batch.add(Step(event, [dead_letter_send(raw, config)]))
        return
    if raw.source != "replay" and batch.seen(device_key, raw.event_id):  # a replay is deliberate
        config.metrics.deduplicated.inc()
        batch.add(Step(event))
        return
    parked = batch.profile(device_key)
    if parked.awaiting_index_answers > 0:
        if len(parked.parked) < MAX_PARKED:
            batch.add(Step(event), device_key, parked.model_copy(update={"parked": [*parked.parked, value]}))
            config.metrics.parked.inc()
            return
        release_parked(batch, event, device_key, parked, config)  # stop waiting rather than grow unbounded
    profile_name = raw.profile or settings.kseg_default_profile
    try:
        profile = config.profiles.get(profile_name)
    except UnknownProfile:
        letter = dead_letter_unknown_profile(raw, profile_name)
        batch.add(Step(event, [dead_letter_send(letter, config)]), device_key, seen_id=raw.event_id)
        return
    mapped = map_postback(raw, profile, settings.kseg_namespace)
    if isinstance(mapped, DeadLetter):
        batch.add(Step(event, [dead_letter_send(mapped, config)]), device_key, seen_id=raw.event_id)
        return

    state = batch.profile(device_key)
    identity, state = resolve(mapped, state, device_key, settings)
    state, index_updates = observations(mapped, state, device_key, settings)
    observed_state = state
    out = event_outputs(mapped, identity, state, config.lifecycle(profile))  # attribution, lifecycle, calls
    state, messages, row = with_att(out.profile, mapped), out.calls, out.row
    index_updates = with_first_touch(mapped, observed_state, state, index_updates, device_key)
    answers = sum(1 for u in index_updates if u.kind == "observed" and u.reprocess_for)
    if mapped.kind == "reinstall" and state.first_touch is None and answers:
        # Wait for the index to say whether this reinstall inherits its original install's first touch,
        # so the device's next purchases carry the install campaign (see docs/identity.md).
        state = state.model_copy(update={"awaiting_index_answers": answers})
    if out.change is not None:
        config.metrics.lifecycle.stage_changes.labels(to=out.change.to_stage).inc()
    if out.unconverted_currency:
        config.metrics.lifecycle.revenue_without_rate.labels(currency=out.unconverted_currency).inc()

    key = device_key.encode()
    sends: list[Send] = [(topics.OUTBOX, key, segment_calls_record(messages))] if messages else []
    sends.append((topics.WAREHOUSE, mapped.event_id.encode(), dumps(row)))
    sends += [(topics.DEVICE_INDEX, u.device.encode(), dumps(u)) for u in index_updates]
    batch.add(Step(event, sends), device_key, state, seen_id=raw.event_id)
    config.metrics.processed.labels(kind=mapped.kind).inc()
    for msg in messages:
        config.metrics.segment_messages.labels(type=msg["type"]).inc()
    config.metrics.warehouse_rows.inc()


def handle_device_linked(
    batch: Batch, event: Any, device_key: str, value: dict[str, Any], config: StepConfig
) -> None:
    notice = validate_or_dead_letter(value, DeviceLinked, stage="identity", reason="invalid_link_notice")
    if isinstance(notice, DeadLetter):
        batch.add(Step(event, [dead_letter_send(notice, config)]))
        return
    state, messages = apply_link(batch.profile(device_key), notice, device_key, config.settings)
    key = device_key.encode()
    sends = [(topics.OUTBOX, key, segment_calls_record(messages))] if messages else []
    batch.add(Step(event, sends), device_key, state)
    for msg in messages:
        config.metrics.segment_messages.labels(type=msg["type"]).inc()
    if notice.answers_reinstall and state.awaiting_index_answers > 0:
        if state.first_touch is not None or state.awaiting_index_answers == 1:
            release_parked(batch, event, device_key, state, config)
        else:
            remaining = state.awaiting_index_answers - 1
            batch.add(Step(event), device_key, state.model_copy(update={"awaiting_index_answers": remaining}))


def release_parked(
    batch: Batch, event: Any, device_key: str, state: AttributionProfile, config: StepConfig
) -> None:
    """Stop waiting for the index and process the parked postbacks, in the order they arrived."""
    parked = state.parked
    batch.add(Step(event), device_key, state.model_copy(update={"awaiting_index_answers": 0, "parked": []}))
    for value in parked:
        handle_postback(batch, event, device_key, value, config)


def handle_record(
    batch: Batch, event: Any, key: bytes | None, value: bytes | None, config: StepConfig
) -> None:
    """Decode one record of the device stream (postback or user-link notice) and hand it to its handler."""
    device_key = (key or b"").decode("utf-8", "replace")
    data = decode_object(value, stage="mapping", reason="undecodable_record")
    if isinstance(data, DeadLetter):  # a record no kseg process wrote: keep it, typed
        batch.add(Step(event, [dead_letter_send(data, config)]))
    elif data.get("kind") == "device_linked":
        handle_device_linked(batch, event, device_key, data, config)
    else:
        handle_postback(batch, event, device_key, data, config)
