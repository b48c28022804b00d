"""kseg's topic catalogue (`topics/topics.yaml`, packaged as `app.catalogue`), topic names, and the
idempotent creation of missing topics at start-up.

Topics are created up front, by whichever process starts first, exactly as declared, so that the receiver
never relies on broker auto-creation and co-partitioning holds from day one. Changing an existing topic
is `kseg topics apply`'s job (app/admin/), never a side effect of starting a process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from app.kafka import client_config, tls_problem
from app.sections import KafkaSettings

log = logging.getLogger(__name__)

#: The data package holding topics.yaml (`app/catalogue` is a symlink to the top-level `topics/`).
CATALOGUE_PACKAGE = "app.catalogue"
#: The catalogue file itself: `topics/topics.yaml` in a checkout, `app/catalogue/topics.yaml` when installed.
CATALOGUE = (Path(__file__).parent / "catalogue" / "topics.yaml").resolve()

RAW = "postbacks.raw"
LINKS = "identity.links"
DEVICE_INDEX = "identity.device-index"
DEVICE_EVENTS = "identity.device-events"
OUTBOX = "segment.outbox"
WAREHOUSE = "warehouse.events"
DEADLETTER = "deadletter"
SPEND = "campaign.spend"
DIGEST_DAYS = "digest.days"
AUDIENCE_CHANGES = "audiences.changes"
KOCHAVA_OUTBOX = "kochava.outbox"
RECEIPTS = "delivery.receipts"
PROCESSING_RECEIPTS = "processing.receipts"


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic: a kseg topic (`kind="topic"`) or a faust table changelog (`kind="changelog"`)."""

    name: str
    description: str
    retention_hours: float | None
    kind: Literal["topic", "changelog"] = "topic"
    keyed: bool = False
    co_partitioned: str | None = None
    partitioned_by: Literal["key", "source"] = "key"
    #: How the record key encodes the partition key: `raw` bytes, or `json` (faust's str table keys).
    key_format: Literal["raw", "json"] = "raw"
    partitions: int | None = None
    replication: int | None = None
    configs: dict[str, str] = field(default_factory=dict)

    def full_name(self, settings: KafkaSettings, app_id: str | None = None) -> str:
        """The Kafka topic name under KSEG_APP_ID (or another app id: a migration's target generation)."""
        app_id = app_id or settings.kseg_app_id
        if self.kind == "changelog":
            return f"{app_id}-{self.name}-changelog"
        return f"{app_id}.{self.name}"

    def partition_count(self, settings: KafkaSettings) -> int:
        return self.partitions or settings.kseg_topic_partitions

    def replication_factor(self, settings: KafkaSettings) -> int:
        return self.replication or settings.kseg_topic_replication

    def topic_configs(self, settings: KafkaSettings) -> dict[str, str]:
        """The configs this topic should carry on the cluster (as Kafka strings)."""
        configs = dict(self.configs)
        if self.retention_hours is not None:
            configs["retention.ms"] = str(int(self.retention_hours * 3600 * 1000))
        if "min.insync.replicas" in configs:
            configs["min.insync.replicas"] = str(
                min(int(configs["min.insync.replicas"]), self.replication_factor(settings))
            )
        return configs


def catalogue_text(name: str = "topics.yaml") -> str:
    """A file of the packaged catalogue (works from the source tree and from an installed wheel)."""
    return resources.files(CATALOGUE_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def schema_text(name: str) -> str:
    """A packaged JSON Schema, e.g. `warehouse-row.schema.json` (`app/schemas` links topics/schemas)."""
    return resources.files("app.schemas").joinpath(name).read_text(encoding="utf-8")


#: A Kafka topic config value as YAML writes it; sent to Kafka as its string.
ConfigValue = StrictStr | StrictInt | StrictFloat


class _Declared(BaseModel):
    """What topics.yaml may say about one topic or changelog: a key it does not know is an error, so a
    misspelt `retention_hour` or `co_partition` fails loudly instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    key: str
    keyed: bool = False
    co_partitioned: str | None = None
    key_format: Literal["raw", "json"] = "raw"
    partitions: PositiveInt | None = None
    replication: PositiveInt | None = None
    configs: dict[str, ConfigValue] = Field(default_factory=dict)


class _DeclaredTopic(_Declared):
    retention_hours: PositiveFloat
    #: The published JSON Schema of the values (`topics/schemas/...`).
    value: str
    #: The record class of the values, `module.Class`, where one exists.
    record: str | None = None


class _DeclaredChangelog(_Declared):
    partitioned_by: Literal["key", "source"] = "key"


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    configs: dict[str, ConfigValue] = Field(default_factory=dict)


class CatalogueFile(BaseModel):
    """The whole of topics.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: _Defaults = Field(default_factory=_Defaults)
    topics: dict[str, _DeclaredTopic]
    changelogs: dict[str, _DeclaredChangelog] = Field(default_factory=dict)


class CatalogueError(ValueError):
    """topics.yaml does not say what kseg understands; the message names each wrong key."""


def parse_catalogue(text: str) -> CatalogueFile:
    """topics.yaml, validated; raises `CatalogueError` naming every unknown, missing or wrong key."""
    try:
        return CatalogueFile.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(file)"
            what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{where}: {what}")
        raise CatalogueError("topics.yaml: " + "; ".join(problems)) from None


def _spec(
    name: str, declared: _Declared, kind: Literal["topic", "changelog"], defaults: _Defaults
) -> TopicSpec:
    configs = {k: str(v) for k, v in (defaults.configs | declared.configs).items()}
    return TopicSpec(
        name=name,
        description=declared.description,
        retention_hours=declared.retention_hours if isinstance(declared, _DeclaredTopic) else None,
        kind=kind,
        keyed=declared.keyed,
        co_partitioned=declared.co_partitioned,
        partitioned_by=declared.partitioned_by if isinstance(declared, _DeclaredChangelog) else "key",
        key_format=declared.key_format,
        partitions=declared.partitions,
        replication=declared.replication,
        configs=configs,
    )


def catalogue(text: str | None = None) -> list[TopicSpec]:
    """Every declared topic: kseg's topics first, then the faust changelogs."""
    parsed = parse_catalogue(text if text is not None else catalogue_text())
    specs = [_spec(name, t, "topic", parsed.defaults) for name, t in parsed.topics.items()]
    specs += [_spec(name, c, "changelog", parsed.defaults) for name, c in parsed.changelogs.items()]
    return specs


def new_topic(
    spec: TopicSpec, settings: KafkaSettings, app_id: str | None = None, partitions: int | None = None
) -> NewTopic:
    return NewTopic(
        name=spec.full_name(settings, app_id),
        num_partitions=partitions or spec.partition_count(settings),
        replication_factor=spec.replication_factor(settings),
        topic_configs=spec.topic_configs(settings),
    )


async def connect_admin(settings: KafkaSettings, timeout: float = 30.0) -> AIOKafkaAdminClient:
    """A started admin client; retries until `timeout`, then says which address did not answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        admin = AIOKafkaAdminClient(**client_config(settings), request_timeout_ms=int(timeout * 1000))
        try:
            await admin.start()
            return admin
        except KafkaError as exc:
            await admin.close()
            if loop.time() > deadline:
                problem = await tls_problem(settings)
                if problem:
                    raise RuntimeError(f"cannot reach Kafka at {settings.bootstrap}: {problem}") from exc
                raise RuntimeError(
                    f"cannot reach Kafka at {settings.bootstrap} "
                    f"({settings.kafka_security_protocol}): {exc!r}"
                ) from exc
            await asyncio.sleep(0.5)


async def ensure_topics(settings: KafkaSettings, timeout: float = 30.0) -> list[str]:
    """Create every catalogued topic that does not exist yet; returns the names created."""
    admin = await connect_admin(settings, timeout)
    try:
        existing = set(await admin.list_topics())
        created: list[str] = []
        for spec in catalogue():
            topic = new_topic(spec, settings)
            if topic.name in existing:
                continue
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()
