"""The worker's live mapping profiles: it reads `mapping.registry` at start and follows it, so a publish
or rollback reaches every running worker within a second or two, without a restart.

Why a plain aiokafka consumer and not a faust agent or GlobalTable: every worker needs every record (a
broadcast, not partitioned work), so there is no consumer group to join or rebalance, no offsets to
commit (each start re-reads the compacted topic from the beginning: a few records per version), and no
changelog or RocksDB state to recover; the switch happens in this process, between two events, at a
point it logs. Each version's `ProfileConfig` is built once, when its pointer arrives.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mode import Service

from app import topics
from app.kafka import consumer_config
from app.mapping.profile import parse_profile_text
from app.mapping.registry import ProfileVersion, RegistryRecord, RegistryState, decode_record
from app.pipeline.core import ProfileConfig
from app.pipeline.steps import StepConfig
from app.sections import MappingSettings

log = logging.getLogger(__name__)

#: Longest wait of one fetch: a publish reaches the worker within about this (plus the fetch itself).
POLL_MS = 500


class RegistryFollower(Service):
    """Started with the faust app before its agents (`add_dependency`): `on_start` applies the whole
    registry, so the first postback already runs with the published versions; then a task follows it."""

    def __init__(self, settings: MappingSettings, config: StepConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.config = config
        self.registry = RegistryState()
        self.topic = settings.topic(topics.MAPPING_REGISTRY)
        self._built: dict[str, ProfileConfig] = {}  # by content hash: one build per version
        self._consumer: Any = None

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        name = f"{self.settings.kseg_app_id}-{self.settings.kseg_worker_id}-registry"
        self._consumer = AIOKafkaConsumer(**consumer_config(self.settings, client_id=name))
        await self._consumer.start()
        partitions: set[int] = set()
        for _ in range(50):  # created at start-up by `ensure_topics`; metadata may lag a moment
            await self._consumer.topics()
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
            if partitions:
                break
            await asyncio.sleep(0.2)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            raise RuntimeError(f"topic {self.topic} does not exist: run `kseg topics apply`")
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        loaded = 0
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            for records in (await self._consumer.getmany(*tps, timeout_ms=POLL_MS)).values():
                for record in records:
                    loaded += self.apply(decode_record(record.value), start=True)
        live = {name: config.profile.version for name, config in self.config.profile_configs.configs.items()}
        log.info("mapping registry: %d record(s) read at start; profiles: %s", loaded, live)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    if self.apply(decode_record(record.value)):
                        log.info("mapping registry: applied offset %d of %s", record.offset, tp.topic)

    def apply(self, record: RegistryRecord | None, *, start: bool = False) -> int:
        """Fold one record; switch the profile when it is an active pointer. Returns 1 if it was a record."""
        if record is None:
            return 0
        self.registry.apply(record)
        if record.kind == "active":
            self.switch(record.name, start=start)
        elif record.kind == "shadow":
            self.shadow(record.name)
        return 1

    def shadow(self, name: str) -> None:
        """Start, replace or stop the shadow run of `name` (its comparisons are `ShadowRuns`')."""
        version = self.registry.shadow_version(name)
        if version is None:
            if name in self.config.shadows.configs:
                log.info("mapping registry: shadow run of %s stopped", name)
            self.config.shadows.stop(name)
            return
        config = self.build(version)
        if config is not None:
            self.config.shadows.start(config)
            log.info("mapping registry: shadow run of %s v%s started (sends nothing)", name, version.version)

    def switch(self, name: str, *, start: bool = False) -> None:
        version = self.registry.active_version(name)
        if version is None:
            log.error(
                "mapping registry: %s points at a version it does not hold; keeping the current one", name
            )
            return
        config = self.build(version)
        if config is None:
            return
        before = self.config.profile_configs.install(config)
        was = before.profile.version if before else None
        if was != config.profile.version or not start:
            pointer = self.registry.active[name]
            log.info(
                "mapping registry: profile %s now v%s (was v%s; %s by %s%s)",
                name,
                config.profile.version,
                was,
                pointer.at,
                pointer.author,
                f": {pointer.note}" if pointer.note else "",
            )

    def build(self, version: ProfileVersion) -> ProfileConfig | None:
        """The version's config, built once (registry versions passed `check` when published)."""
        built = self._built.get(version.sha256)
        if built is not None:
            return built
        profile, problems = parse_profile_text(version.yaml, f"registry:{version.name}/{version.version}")
        if profile is None:
            log.error("mapping registry: %s v%s does not load: %s", version.name, version.version, problems)
            return None
        built = self._built[version.sha256] = self.config.configure(profile)
        return built
