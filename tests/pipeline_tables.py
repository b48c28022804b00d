"""The processing agent's steps driven with plain dicts for its tables, the way `process.py` drives them
with faust tables: read through the batch, produce everything, then write each device's profile (which
holds its dedupe marks) once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app import topics
from app.config import Settings
from app.identity.agents import index_limits
from app.identity.index import apply_update
from app.identity.records import DeviceIndexUpdate, DeviceRecord
from app.mapping import ProfileRegistry
from app.pipeline.steps import Batch, StepConfig, handle_record
from app.records import AttributionProfile, DeviceLinked, RawPostback, postback_event_id


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, kseg_namespace="test-ns", **kw)  # type: ignore[call-arg]


def raw(params: dict[str, Any], source: str = "get", **kw: Any) -> dict[str, Any]:
    """A postbacks.raw record as the receiver writes it."""
    record = RawPostback(
        event_id=postback_event_id(params),
        received_at="2024-05-01T10:00:01.000Z",
        source=source,  # type: ignore[arg-type]
        params=params,
        **kw,
    )
    return record.model_dump(mode="json")


@dataclass
class Tables:
    """A worker's state as dicts: profiles and the device index; `sent` keeps every record produced, by
    logical topic (an outbox record's Segment calls one by one; `records` counts records as produced)."""

    config: StepConfig = field(default_factory=lambda: StepConfig(settings(), ProfileRegistry.load(None)))
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    index: dict[str, DeviceRecord | None] = field(default_factory=dict)
    sent: dict[str, list[tuple[bytes, Any]]] = field(default_factory=dict)

    def run(self, records: list[tuple[str, dict[str, Any]]]) -> Batch:
        """One micro-batch of (device key, record) through the real steps, then its table writes."""
        batch = Batch(stored_profile=self.profiles.get, config=self.config)
        for n, (key, value) in enumerate(records):
            handle_record(batch, n, key.encode(), orjson.dumps(value), self.config)
        for name, key, value in batch.sends:
            self.records[name] = self.records.get(name, 0) + 1
            data = orjson.loads(value)
            for item in data["messages"] if name == topics.OUTBOX else [data]:
                self.sent.setdefault(name, []).append((key, item))
        for _event, device_key, state in batch.profile_writes():
            self.profiles[device_key] = state
        return batch

    def take(self, name: str) -> list[Any]:
        """Values produced to `name` since the last take."""
        return [value for _, value in self.sent.pop(name, [])]

    def profile(self, key: str) -> AttributionProfile:
        return AttributionProfile.model_validate(self.profiles[key])

    def apply_index(self) -> list[DeviceLinked]:
        """Run the index updates produced so far through the device index; the notices it answers."""
        notices: list[DeviceLinked] = []
        queue = [DeviceIndexUpdate.model_validate(value) for value in self.take(topics.DEVICE_INDEX)]
        while queue:
            update = queue.pop(0)
            out = apply_update(self.index.get(update.device), update, index_limits(self.config.settings))
            self.index[update.device] = out.record
            notices += out.notices
            queue += out.forward  # an accepted SDK anonymousId claim's adopts, as the index agent sends them
        return notices
