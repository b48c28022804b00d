"""The processing agent's micro-batch around the processing core: dedupe, parking, and user-link notices.

A postback's outputs come from `app.pipeline.core.process_postback` (pure); what is left here is the
batch's bookkeeping: dedupe marks, parking a reinstalled device's postbacks while it waits for the index,
late authentication from user-link notices, and coalescing a device's lifetime-revenue identifies to one
per micro-batch. Nothing here touches faust. A `Batch` reads stored state through the function it is given
(the profile table, which also holds each device's dedupe marks) and collects, per event, the records to
produce and the device states to write once they are durable; `app/pipeline/process.py` does the producing
and writing, and unit tests drive these functions with plain dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from app import topics
from app.audiences.devices import device_facts
from app.audiences.records import DeviceFacts
from app.dlq.writer import dead_letter_record
from app.identity.late_auth import apply_link
from app.identity.resolver import IdentityRules
from app.ids import kseg_uuid5
from app.lifecycle.config import load_config_rates
from app.lifecycle.currency import Rates
from app.lifecycle.traits import RIDE_ALONG
from app.mapping import MappingProfile, ProfileRegistry
from app.mapping.drift import DriftTracker
from app.pipeline.core import PostbackOutcome, ProfileConfig, ProfileConfigs, process_postback, profile_config
from app.pipeline.metrics import PipelineMetrics
from app.pipeline.shadow import ShadowRuns
from app.privacy.metrics import PrivacyMetrics
from app.privacy.records import PrivacyErase
from app.privacy.suppression import PrivacyBatch, suppressed_reason
from app.records import (
    AttributionProfile,
    DeadLetter,
    DeviceLinked,
    ProcessedEvent,
    ProcessingOutcome,
    ProcessingReceipt,
    RawPostback,
    dumps,
    unpack,
    utc_now_iso,
    validate_or_dead_letter,
)
from app.sections import PipelineSettings, parse_tiers

#: Postbacks a reinstalled device parks at most while it waits for the index's answers.
MAX_PARKED = 200

#: (logical topic name from `app.topics`, key, value) of one record to produce.
Send = tuple[str, bytes, bytes]


@dataclass(frozen=True)
class StepConfig:
    """What the steps need besides state: settings, the mapping profiles, the wall clock (dedupe), the
    currency rates (read from `KSEG_CURRENCY_RATES_FILE` when not given) and the counters (the worker's, on
    its context's registry; a private registry when not given). Each profile's core configuration
    (`profile_configs`) is built here, once."""

    settings: PipelineSettings
    profiles: ProfileRegistry
    clock: Callable[[], float] = time.time
    rates: Rates | None = None
    metrics: PipelineMetrics = field(default_factory=lambda: PipelineMetrics.on(CollectorRegistry()))
    #: What live postbacks carry that their profile does not expect (`kseg mapping drift`).
    drift: DriftTracker = field(default_factory=DriftTracker)
    #: Candidate profile versions run next to the active ones, sending nothing (`kseg mapping shadow`).
    shadows: ShadowRuns = field(default_factory=ShadowRuns)
    profile_configs: ProfileConfigs = field(init=False)

    def __post_init__(self) -> None:
        rates = self.rates if self.rates is not None else load_config_rates(self.settings)
        object.__setattr__(self, "rates", rates)
        s = self.settings
        rules = IdentityRules(s.kseg_namespace, s.kseg_max_ids_per_profile, s.kseg_allow_raw_email_trait)
        configs = ProfileConfigs.build(
            self.profiles,
            rules,
            rates,
            winback_days=s.kseg_winback_suppress_days,
            tiers=tuple(parse_tiers(s.kseg_ltv_tiers)),
            default_profile=s.kseg_default_profile,
        )
        object.__setattr__(self, "profile_configs", configs)

    def configure(self, profile: MappingProfile) -> ProfileConfig:
        """`profile`'s core configuration with these settings (a registry version the worker switches to)."""
        s = self.settings
        rules = IdentityRules(s.kseg_namespace, s.kseg_max_ids_per_profile, s.kseg_allow_raw_email_trait)
        assert self.rates is not None  # set in __post_init__
        tiers = tuple(parse_tiers(s.kseg_ltv_tiers))
        return profile_config(
            profile, rules, self.rates, winback_days=s.kseg_winback_suppress_days, tiers=tiers
        )


@dataclass
class Step:
    """What one event produces: Segment calls (one outbox record) and other records to send, then (once
    they are durable) its device's new state."""

    event: Any
    sends: list[Send] = field(default_factory=list)
    device_key: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: What became of the postback, for the batch's processing receipt (None for other records).
    outcome: ProcessedEvent | None = None


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
    #: Per device, the batch's last identify that carries only lifetime revenue and purchase count (its step).
    ride_along: dict[str, tuple[Step, dict[str, Any]]] = field(default_factory=dict)
    #: Suppression marks and erasures of this batch (privacy commands), written after the profiles.
    privacy: PrivacyBatch = field(default_factory=PrivacyBatch)
    #: Stored profiles this batch read and validated, by device (the table changes only after the batch).
    read: dict[str, AttributionProfile] = field(default_factory=dict)

    def profile(self, device_key: str) -> AttributionProfile:
        """The device's profile as of this point of the batch: its own latest state, else the stored one
        (read and validated once per batch: dedupe, parking and processing all ask for it)."""
        state = self.states.get(device_key)
        if state is not None:
            return state
        state = self.read.get(device_key)
        if state is None:
            stored = self.stored_profile(device_key)
            state = AttributionProfile.model_validate(stored) if stored else AttributionProfile()
            self.read[device_key] = state
        return state

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
        """Record a step; `state` is the device's new profile, `seen_id` a postback id to mark as seen."""
        if device_key is not None and (state is not None or seen_id):
            state = state or self.profile(device_key)
            if seen_id:
                state = remember(state, seen_id, self.config)
            self.states[device_key] = state
            step.device_key = device_key
        self.steps.append(step)

    def coalesce(self, device_key: str, step: Step, outcome: PostbackOutcome) -> bool:
        """Put the outcome's calls on `step` (a postback's), folding into this event's identify the device's
        earlier identify of this batch that carried only lifetime revenue and purchase count (for the same
        person): such identifies cost one per device per micro-batch, and the one sent has the latest values.
        Returns whether it folded (this identify then replaces one the batch already counted).

        The folded identify's messageId derives from both (batch boundaries decide what is folded, so a
        replay cut differently sends new ids, never a stale value under an id Segment already saw)."""
        step.calls = calls = list(outcome.calls)
        earlier = self.ride_along.pop(device_key, None)
        at = next((i for i, call in enumerate(calls) if call["type"] == "identify"), None)
        if at is None:
            if earlier is not None:
                self.ride_along[device_key] = earlier  # nothing said since: still the device's latest
            return False
        folded = False
        if earlier is not None and _same_person(earlier[1], calls[at]):
            earlier_step, earlier_identify = earlier
            earlier_step.calls = [call for call in earlier_step.calls if call is not earlier_identify]
            ltv = {k: v for k, v in earlier_identify["traits"].items() if k in RIDE_ALONG}
            ids = f"{earlier_identify['messageId']}+{calls[at]['messageId']}"
            message_id = kseg_uuid5(ids)
            calls[at] = {**calls[at], "messageId": message_id, "traits": {**ltv, **calls[at]["traits"]}}
            folded = True
        if outcome.ride_along:
            self.ride_along[device_key] = (step, calls[at])
        return folded

    @property
    def sends(self) -> list[Send]:
        """Every record to produce, in event order (all are awaited before any table write)."""
        out: list[Send] = []
        for step in self.steps:
            if step.calls:
                assert step.device_key is not None  # calls always come with the device's new state
                out.append((topics.OUTBOX, step.device_key.encode(), segment_calls_record(step.calls)))
            out += step.sends
        return out

    def profile_writes(self) -> list[tuple[Any, str, dict[str, Any]]]:
        """(event, device key, profile JSON): each changed device's final state once, with the device's last
        event (for its partition). Made only after every send was acked."""
        last: dict[str, Any] = {}
        for step in self.steps:
            if step.device_key is not None:
                last[step.device_key] = step.event
        return [(event, key, self.states[key].model_dump(mode="json")) for key, event in last.items()]


def _same_person(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("userId"), a.get("anonymousId")) == (b.get("userId"), b.get("anonymousId"))


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
    """One outbox record holding all the Segment calls of one event (the sink unpacks it): the bytes of
    `SegmentCalls(messages=messages).encode()`, without validating and re-dumping every call through
    pydantic (the mapping built them as JSON values; the sink validates each call before sending)."""
    if not messages:
        raise ValueError("an outbox record holds at least one call")
    return orjson.dumps({"kind": "segment_calls", "messages": messages})


def dead_letter_send(letter: DeadLetter, config: StepConfig) -> Send:
    return (topics.DEADLETTER, *dead_letter_record(letter, config.metrics.dead_letters))


def facts_sends(facts: list[DeviceFacts]) -> list[Send]:
    """The audiences agent's records for a device's changed facts (keyed by member)."""
    return [(topics.AUDIENCE_CHANGES, f.member.encode(), dumps(f)) for f in facts]


def _outcome(
    raw: RawPostback,
    device_key: str,
    outcome: ProcessingOutcome,
    profile: str | None = None,
    version: str | None = None,
    reason: str | None = None,
) -> ProcessedEvent:
    return ProcessedEvent(
        event_id=raw.event_id,
        device_key=device_key,
        outcome=outcome,
        profile=profile or raw.profile,
        profile_version=version,
        reason=reason,
    )


def processing_receipts(batch: Batch) -> list[Send]:
    """The batch's processing receipt (what became of each postback), sent with its other records so the
    trace shows an outcome for every postback; none for a batch without postbacks."""
    done = [step.outcome for step in batch.steps if step.outcome is not None]
    if not done:
        return []
    receipt = ProcessingReceipt.model_construct(kind="processing_receipt", at=utc_now_iso(), events=done)
    return [(topics.PROCESSING_RECEIPTS, done[0].event_id.encode(), receipt.encode())]


def handle_postback(
    batch: Batch, event: Any, device_key: str, value: dict[str, Any], config: StepConfig
) -> None:
    raw = validate_or_dead_letter(value, RawPostback, stage="mapping", reason="invalid_raw_record")
    if isinstance(raw, DeadLetter):
        batch.add(Step(event, [dead_letter_send(raw, config)]))
        return
    if raw.source != "replay" and batch.seen(device_key, raw.event_id):  # a replay is deliberate
        config.metrics.deduplicated.inc()
        batch.add(Step(event, outcome=_outcome(raw, device_key, "repeat")))
        return
    parked = batch.profile(device_key)
    if parked.awaiting_index_answers > 0:
        if len(parked.parked) < MAX_PARKED:
            step = Step(event, outcome=_outcome(raw, device_key, "parked", reason="awaiting_index_answers"))
            batch.add(step, device_key, parked.model_copy(update={"parked": [*parked.parked, value]}))
            config.metrics.parked.inc()
            return
        release_parked(batch, event, device_key, parked, config)  # stop waiting rather than grow unbounded
    profile = config.profile_configs.for_postback(raw)
    if isinstance(profile, DeadLetter):
        done = _outcome(
            raw, device_key, "dead_lettered", profile.profile, profile.profile_version, profile.reason
        )
        batch.add(
            Step(event, [dead_letter_send(profile, config)], outcome=done), device_key, seen_id=raw.event_id
        )
        return
    now, before = utc_now_iso(), batch.profile(device_key)
    out = process_postback(raw, before, device_key, profile, now)
    config.drift.note(raw.params, profile.profile, out.event or out.dead_letter, now)
    config.shadows.compare(raw, before, device_key, profile, out, now)
    if out.dead_letter is not None:
        letter = out.dead_letter
        done = _outcome(
            raw, device_key, "dead_lettered", letter.profile, letter.profile_version, letter.reason
        )
        batch.add(
            Step(event, [dead_letter_send(letter, config)], outcome=done), device_key, seen_id=raw.event_id
        )
        return
    assert out.event is not None and out.row is not None  # a mapped postback always has both
    if out.change is not None:
        config.metrics.labelled(config.metrics.lifecycle.stage_changes, out.change.to_stage).inc()
    if out.unconverted_currency:
        config.metrics.lifecycle.revenue_without_rate.labels(currency=out.unconverted_currency).inc()

    sends: list[Send] = [(topics.WAREHOUSE, out.event.event_id.encode(), dumps(out.row))]
    sends += [(topics.DEVICE_INDEX, u.device.encode(), dumps(u)) for u in out.index_updates]
    sends += facts_sends(out.audience_facts)
    done = _outcome(raw, device_key, "mapped", out.event.profile, out.event.profile_version)
    step = Step(event, sends, outcome=done)
    folded = batch.coalesce(device_key, step, out)
    batch.add(step, device_key, out.state, seen_id=raw.event_id)
    config.metrics.labelled(config.metrics.processed, out.event.kind).inc()
    counted = [msg["type"] for msg in step.calls]
    if folded:
        counted.remove("identify")  # it replaces an identify counted with an earlier event
    for kind in counted:
        config.metrics.labelled(config.metrics.segment_messages, kind).inc()
    config.metrics.warehouse_rows.inc()


def handle_device_linked(
    batch: Batch, event: Any, device_key: str, value: dict[str, Any], config: StepConfig
) -> None:
    notice = validate_or_dead_letter(value, DeviceLinked, stage="identity", reason="invalid_link_notice")
    if isinstance(notice, DeadLetter):
        batch.add(Step(event, [dead_letter_send(notice, config)]))
        return
    before = batch.profile(device_key)
    state, messages = apply_link(before, notice, device_key, config.settings)
    batch.ride_along.pop(device_key, None)  # a link may change who the device's calls are for
    facts = facts_sends(device_facts(before, state, device_key, utc_now_iso()))
    batch.add(Step(event, facts, calls=messages), device_key, state)
    for msg in messages:
        config.metrics.labelled(config.metrics.segment_messages, msg["type"]).inc()
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
    """Decode one record of the device stream (postback, user-link notice, or a `Batched` record of
    notices: one partition's share of an index micro-batch) and hand each item to its handler."""
    for item_key, data in unpack(key, value, stage="mapping", reason="undecodable_record"):
        handle_item(batch, event, (item_key or b"").decode("utf-8", "replace"), data, config)


def handle_item(
    batch: Batch, event: Any, device_key: str, data: dict[str, Any] | DeadLetter, config: StepConfig
) -> None:
    if isinstance(data, DeadLetter):  # a record no kseg process wrote: keep it, typed
        batch.add(Step(event, [dead_letter_send(data, config)]))
    elif data.get("kind") == "privacy_erase":
        handle_privacy_erase(batch, event, device_key, data, config)
    elif dropped_for_privacy(batch, event, device_key, data, config):
        return
    elif data.get("kind") == "device_linked":
        handle_device_linked(batch, event, device_key, data, config)
    else:
        handle_postback(batch, event, device_key, data, config)


def dropped_for_privacy(
    batch: Batch, event: Any, device_key: str, data: dict[str, Any], config: StepConfig
) -> bool:
    """Drop (and count, by reason) a record of a deleted or suppressed device: nothing rebuilds its profile.
    No dead letter: it would carry the ids the request removed (docs/privacy.md)."""
    reason = suppressed_reason(batch.privacy, batch.stored_profile, device_key)
    if reason is None:
        return False
    kind = "device_linked" if data.get("kind") == "device_linked" else "postback"
    PrivacyMetrics.on(config.metrics.registry).dropped.labels(reason=reason, kind=kind).inc()
    outcome = None
    event_id = data.get("event_id")
    if kind == "postback" and isinstance(event_id, str):
        # The trace sees the drop, without the device key (the request removed it from the warehouse).
        outcome = ProcessedEvent.model_construct(
            event_id=event_id,
            device_key=None,
            outcome="suppressed",
            profile=None,
            profile_version=None,
            reason=reason,
        )
    batch.add(Step(event, outcome=outcome))
    return True


def handle_privacy_erase(
    batch: Batch, event: Any, device_key: str, data: dict[str, Any], config: StepConfig
) -> None:
    """The privacy agent's command for one device key: erase its profile (attribution, identity, dedupe
    marks) with a tombstone, and set or lift its suppression mark (`app.privacy.suppression`)."""
    command = validate_or_dead_letter(data, PrivacyErase, stage="identity", reason="invalid_privacy_command")
    if isinstance(command, DeadLetter):
        batch.add(Step(event, [dead_letter_send(command, config)]))
        return
    batch.privacy.apply(event, command)
    if command.action == "erase":
        batch.states[device_key] = AttributionProfile()  # later reads in this batch see no state
        batch.ride_along.pop(device_key, None)
    PrivacyMetrics.on(config.metrics.registry).commands.labels(agent="process", action=command.action).inc()
    batch.add(Step(event))
