"""kseg's settings, one section per domain; `app.config.Settings` joins them into the one environment surface.

Each domain takes the section it owns (its fields, ranges, validators and derived values), so a function
typed `settings: SegmentSettings` cannot read a Kochava key, and mypy says so. Only the processes' roots
see the whole `Settings`. Every secret is a `SecretStr`: it never shows in a repr, a log line or an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

SEGMENT_US_ENDPOINT = "https://api.segment.io"
SEGMENT_EU_ENDPOINT = "https://events.eu1.segmentapis.com"
KOCHAVA_REPORTING_URL = "https://reporting.api.kochava.com/v1.4"
KOCHAVA_TRACKING_URL = "https://control.kochava.com"


#: Default `KSEG_LTV_TIERS`: tier name = lowest lifetime revenue (reporting currency) of the tier.
DEFAULT_LTV_TIERS = "low=0,medium=20,high=100"


def parse_tiers(text: str) -> list[tuple[str, float]]:
    """`low=0,medium=20,high=100` → [(name, threshold)] ascending; `ValueError` saying what is wrong."""
    tiers: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or " " in name:
            raise ValueError(f"tier {part!r} must be name=threshold, e.g. high=100")
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"tier {name!r}: threshold {value.strip()!r} is not a number") from None
        if threshold < 0 or threshold != threshold:
            raise ValueError(f"tier {name!r}: threshold must be a number >= 0")
        tiers.append((name, threshold))
    if not tiers:
        raise ValueError("at least one tier is needed, e.g. low=0,medium=20,high=100")
    names = [n for n, _ in tiers]
    if len(set(names)) != len(names):
        raise ValueError("tier names must be unique")
    thresholds = [t for _, t in tiers]
    if thresholds != sorted(thresholds) or len(set(thresholds)) != len(thresholds):
        raise ValueError("tier thresholds must strictly increase from left to right")
    return tiers


def split_list(text: str) -> list[str]:
    """A comma-separated setting's entries, stripped; blank entries (a trailing comma) are skipped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def token_profile_pairs(text: str) -> dict[str, str]:
    """`KSEG_TOKEN_PROFILES` (`token=profile,...`) as a dict; `ValueError` naming the bad entry.

    The tokens are secrets, so an error names the entry by its position and its profile, never the token."""
    pairs: dict[str, str] = {}
    entries = split_list(text)
    for number, entry in enumerate(entries, 1):
        token, sep, profile = (part.strip() for part in entry.partition("="))
        where = f"KSEG_TOKEN_PROFILES entry {number} of {len(entries)}"
        if not sep:
            raise ValueError(f"{where} has no '=': write each entry as token=profile")
        if not token:
            raise ValueError(f"{where} (profile {profile!r}) has an empty token: write token=profile")
        if not profile:
            raise ValueError(f"{where} has an empty profile name: write token=profile")
        if token in pairs:
            raise ValueError(f"{where} (profile {profile!r}) repeats the token of an earlier entry")
        pairs[token] = profile
    return pairs


def column_pairs(text: str) -> dict[str, str]:
    """`KOCHAVA_COLUMN_MAP` (`field=column,...`) as a dict; `ValueError` naming the bad entry. Which
    fields exist is the digest's to say (`app.digest.report.column_map`); this checks the shape."""
    pairs: dict[str, str] = {}
    for entry in split_list(text):
        name, sep, column = (part.strip() for part in entry.partition("="))
        if not sep or not name or not column:
            raise ValueError(f"KOCHAVA_COLUMN_MAP entry {entry!r} is not `field=column`")
        if name in pairs:
            raise ValueError(f"KOCHAVA_COLUMN_MAP names field {name!r} twice")
        pairs[name] = column
    return pairs


def reveal(secret: SecretStr | None) -> str:
    """A secret setting's plain text ("" when unset), for the one line that hands it to its user."""
    return secret.get_secret_value() if secret is not None else ""


class SharedSettings(BaseModel):
    """What every section needs: the deployment's names (topics, messageIds), its data directory, this
    process's name and web bind address, and the log level."""

    model_config = ConfigDict(hide_input_in_errors=True)

    kseg_app_id: str = Field(default="kseg", description="Prefix of every topic and the consumer group id.")
    kseg_namespace: str = Field(
        default="kseg", description="Deployment namespace folded into every Segment messageId."
    )
    kseg_topic_partitions: int = Field(default=8, ge=1, description="Partitions of every kseg topic.")
    kseg_topic_replication: int = Field(default=1, ge=1, description="Replication factor of kseg topics.")
    kseg_data_dir: Path = Field(default=Path("./var"), description="Dry-run outbox, table state, exports.")
    kseg_worker_id: str = Field(default="worker-1", description="Names this worker's RocksDB data directory.")
    kseg_worker_web_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the worker's and warehouse loader's pages; loopback unless scraped",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def topic(self, name: str) -> str:
        """Full Kafka topic name for one of kseg's logical topics."""
        return f"{self.kseg_app_id}.{name}"


class KafkaSettings(SharedSettings):
    """How every Kafka client reaches the broker (applied by `app.kafka.client_config`), and the
    producer and consumer knobs that depend on the broker kind."""

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: `kseg run` starts the embedded broker.",
    )
    kafka_enable_idempotence: bool | None = Field(
        default=None,
        description="Idempotent producer. Default: on for a real cluster, off for the embedded Tansu broker.",
    )
    kseg_embedded_broker: bool = Field(
        default=False,
        description="Set by `kseg run` when the bootstrap servers are the embedded Tansu broker.",
    )
    kseg_embedded_broker_port: int = Field(default=0, description="Embedded broker port (0: a free port).")
    kseg_session_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Consumer session timeout in seconds (Tansu joins take half of it; keep it >= 8 there).",
    )
    kseg_producer_max_batch_bytes: int | None = Field(
        default=None,
        description="Producer batch size in bytes. Default 16384; 1 on the embedded broker (see README).",
    )
    kseg_fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Longest time a worker's fetch waits for data, ms. Default 50 on the embedded broker, "
        "which holds an empty fetch for the whole wait (a latency floor per hop), 500 on Apache Kafka, "
        "which answers as soon as data arrives.",
    )
    kseg_data_batch_bytes: int = Field(
        default=65536,
        ge=1,
        description="Batch size in bytes for the data topics (raw postbacks from the receiver, the worker's "
        "outputs), on every broker: unlike the changelogs, their readers need no exact end offsets.",
    )
    kseg_changelog_batch_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Batch size in bytes of faust's producer (the table changelogs). Default 16384 on every "
        "broker; on the embedded broker recovery reads each changelog past its reported end (see README).",
    )
    kseg_changelog_linger_ms: int = Field(
        default=5,
        ge=0,
        description="Milliseconds faust's producer waits to fill a changelog batch. No event waits for it "
        "(outputs go through their own producer); fewer, fuller produce requests cost the worker and the "
        "broker less CPU per postback (bench/results/notes.md).",
    )
    kseg_produce_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a Kafka ack.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients talk to Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (managed).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN",
        description="SASL mechanism for SASL_* protocols: PLAIN (Confluent Cloud), SCRAM-SHA-512 (MSK).",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL username (Confluent Cloud: the API key)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (Confluent Cloud: the API secret)."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signed the brokers' certificates. Unset: the system trust store.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS (MSK with TLS client auth)."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client cert.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker certificate names the host kseg connects to."
    )

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaSettings:
        """Refuse half-configured security at start-up rather than at the first connection."""
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (mutual TLS)")
        return self

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError(
                "KAFKA_BOOTSTRAP_SERVERS is not set. Use `kseg run` to start the embedded broker, "
                "or point KAFKA_BOOTSTRAP_SERVERS at your Kafka cluster."
            )
        return self.kafka_bootstrap_servers

    @property
    def idempotence(self) -> bool:
        if self.kafka_enable_idempotence is not None:
            return self.kafka_enable_idempotence
        return not self.kseg_embedded_broker

    @property
    def producer_max_batch_bytes(self) -> int:
        """Tansu reports a partition's high watermark as the base offset of its last batch + 1, so
        multi-record batches make end offsets lag (breaking faust's recovery check and lag metrics).
        One record per batch keeps them exact on the embedded broker."""
        if self.kseg_producer_max_batch_bytes is not None:
            return self.kseg_producer_max_batch_bytes
        return 1 if self.kseg_embedded_broker else 16384

    def sink_group(self, sink: str) -> str:
        """The consumer group of one sink's outbox consumer (`segment`, `kochava`)."""
        return f"{self.kseg_app_id}-{sink}-sink"

    @property
    def changelog_batch_bytes(self) -> int:
        """faust's producer batch size: real batches on every broker. On the embedded broker, whose end
        offsets count only the first record of a partition's last batch, the worker's table recovery
        finds each changelog's exact end by reading past the reported one (`app.worker.recovery`);
        1 restores the old one-record batches (the bench's A/B)."""
        if self.kseg_changelog_batch_bytes is not None:
            return self.kseg_changelog_batch_bytes
        return 16384

    @property
    def fetch_max_wait_ms(self) -> int:
        """The worker consumer's fetch wait: short on Tansu, where every consumer hop waits it out."""
        if self.kseg_fetch_max_wait_ms is not None:
            return self.kseg_fetch_max_wait_ms
        return 50 if self.kseg_embedded_broker else 500


class WorkerSettings(KafkaSettings):
    """The worker process (and `kseg sinks`): its pages, its stall watchdog, where the sinks run."""

    kseg_worker_web_port: int = Field(default=6066, description="Worker /metrics, /healthz and /readyz port.")
    kseg_worker_sinks: bool = Field(
        default=True,
        description="The worker runs the Segment and Kochava sinks; false: a `kseg sinks` process runs them.",
    )
    kseg_sinks_web_port: int = Field(
        default=6067, ge=0, le=65535, description="`kseg sinks` /metrics, /healthz and /readyz port."
    )
    kseg_stall_seconds: float = Field(
        default=60.0, gt=0, description="Restart the worker when read events stay unprocessed this long."
    )


class ReceiverSettings(KafkaSettings):
    """The HTTP receiver: bind address, credentials, limits, and the Segment webhook it accepts."""

    kseg_http_host: str = Field(default="127.0.0.1", description="Receiver bind address.")
    kseg_http_port: int = Field(default=8080, description="Receiver port.")
    kseg_postback_tokens: SecretStr = Field(
        default=SecretStr(""), description="Comma-separated accepted postback tokens."
    )
    kseg_link_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated tokens for POST /v1/identity/links; postback tokens are refused there.",
    )
    kseg_token_profiles: SecretStr = Field(
        default=SecretStr(""), description="Profile per postback token: `token1=profile-a,token2=profile-b`."
    )
    kseg_max_body_bytes: int = Field(default=64 * 1024, description="Largest accepted request body.")
    kseg_max_pending_produces: int = Field(
        default=2000, ge=1, description="Produces awaiting a Kafka ack before the receiver answers 503."
    )
    kseg_retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After sent with a 503.")
    segment_webhook_secret: SecretStr | None = Field(
        default=None, description="Shared secret of the Segment webhook."
    )
    segment_webhook_header_name: str = Field(
        default="X-Kseg-Webhook-Secret",
        min_length=1,
        max_length=100,
        description="Custom header carrying SEGMENT_WEBHOOK_HEADER_SECRET on Segment webhook deliveries.",
    )
    segment_webhook_header_secret: SecretStr | None = Field(
        default=None,
        description="Shared header secret: authenticates whole batched Segment webhook deliveries.",
    )
    kseg_rate_limit_per_token: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description="Requests/s allowed per credential (token bucket); 0: off. Excess: 429 + Retry-After.",
    )
    kseg_rate_limit_burst: int = Field(
        default=5000, ge=1, le=10_000_000, description="Token-bucket size: requests a credential may burst."
    )
    kseg_http_header_timeout: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Seconds a connection may take to send its headers, or idle between requests.",
    )
    kseg_http_body_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds a client may take to send a request body (else 408)."
    )
    kseg_http_max_header_bytes: int = Field(
        default=8190, ge=1024, le=65536, description="Longest request line or header field (else 400/431)."
    )
    kseg_http_max_headers: int = Field(
        default=64, ge=8, le=1024, description="Most header fields a request may carry."
    )

    @field_validator("kseg_token_profiles")
    @classmethod
    def _token_profiles_parse(cls, value: SecretStr) -> SecretStr:
        token_profile_pairs(value.get_secret_value())
        return value

    @property
    def postback_tokens(self) -> list[str]:
        return split_list(self.kseg_postback_tokens.get_secret_value())

    @property
    def link_tokens(self) -> list[str]:
        return split_list(self.kseg_link_tokens.get_secret_value())

    @property
    def token_profiles(self) -> dict[str, str]:
        return token_profile_pairs(self.kseg_token_profiles.get_secret_value())


class IdentitySettings(SharedSettings):
    """Identity resolution: when a device counts as shared, how many ids a profile keeps, raw email."""

    kseg_shared_device_threshold: int = Field(
        default=2, ge=1, description="A device seen with more than this many userIds is shared: never merges."
    )
    kseg_max_ids_per_profile: int = Field(
        default=5, ge=1, description="Device ids kept per type and profile."
    )
    kseg_allow_raw_email_trait: bool = Field(
        default=False, description="Send raw email as a trait (else hashed)."
    )


class CurrencySettings(SharedSettings):
    """The reporting currency and its rate file (lifecycle revenue, warehouse columns, digest ROAS)."""

    kseg_reporting_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 currency of ltv_revenue and revenue_reporting (needs a rate in the rate file).",
    )
    kseg_currency_rates_file: Path | None = Field(
        default=None,
        description="Versioned currency rate file (YAML); unset: the packaged app/lifecycle/rates.yaml.",
    )


class LifecycleSettings(CurrencySettings):
    """Lifecycle signals: winback suppression and LTV tiers, in the reporting currency."""

    kseg_winback_suppress_days: float = Field(
        default=14.0,
        ge=0,
        le=365,
        description="Days after a re-engagement during which winback_suppress_until excludes the user.",
    )
    kseg_ltv_tiers: str = Field(
        default=DEFAULT_LTV_TIERS,
        description="ltv_tier thresholds in the reporting currency: name=lowest lifetime revenue, ascending.",
    )

    @field_validator("kseg_ltv_tiers")
    @classmethod
    def _tiers_parse(cls, value: str) -> str:
        parse_tiers(value)
        return value


class PipelineSettings(IdentitySettings, LifecycleSettings):
    """The postback pipeline: mapping profiles and dedupe, plus the identity and lifecycle it runs."""

    kseg_mapping_dir: Path | None = Field(default=None, description="Extra mapping profiles (YAML).")
    kseg_default_profile: str = Field(
        default="kochava-default", description="Profile used when none is named."
    )
    kseg_dedupe_ttl_hours: float = Field(
        default=24.0, gt=0, description="Dedupe window for repeated postbacks."
    )
    kseg_dedupe_max_per_device: int = Field(
        default=500, ge=1, le=100_000, description="Postback ids remembered per device for dedupe (newest)."
    )


class MappingSettings(KafkaSettings, PipelineSettings):
    """The live mapping registry: the pipeline's profiles as published in `mapping.registry`, followed by
    every worker, with drift reports and shadow runs."""

    kseg_drift_report_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How often each worker publishes its mapping drift summary."
    )
    kseg_shadow_sample_rate: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of a profile's postbacks a shadow candidate also maps (compared, never sent).",
    )


class SegmentSettings(KafkaSettings):
    """The Segment sink: write key (unset: dry run), region, batching and rate; it consumes its outbox."""

    segment_write_key: SecretStr | None = Field(
        default=None, description="Segment source write key; unset: dry run."
    )
    segment_endpoint: str = Field(default=SEGMENT_US_ENDPOINT, description="Segment API host, or `us`/`eu`.")
    segment_max_requests_per_second: float = Field(default=500.0, gt=0, description="Request-rate ceiling.")
    segment_batch_max_messages: int = Field(default=500, ge=1, le=2500)
    segment_batch_max_bytes: int = Field(default=450_000, ge=1024, le=500_000)
    segment_request_timeout: float = Field(default=15.0, gt=0)
    segment_gzip: bool = True
    segment_batch_linger: float = Field(
        default=0.1, gt=0, description="Longest wait, seconds, for a batch to fill: latency against requests."
    )

    @field_validator("segment_endpoint")
    @classmethod
    def _resolve_region(cls, value: str) -> str:
        aliases = {"us": SEGMENT_US_ENDPOINT, "eu": SEGMENT_EU_ENDPOINT}
        return aliases.get(value.lower(), value).rstrip("/")

    @property
    def dry_run(self) -> bool:
        return not reveal(self.segment_write_key)


class KochavaSettings(KafkaSettings):
    """The Kochava S2S sink (audience events, IdentityLink): app GUID (unset: dry run), host and rate;
    it consumes its outbox."""

    kochava_app_guid: str | None = Field(
        default=None, description="Kochava app GUID (kochava_app_id); unset: the Kochava sink runs dry."
    )
    kochava_tracking_url: str = Field(
        default=KOCHAVA_TRACKING_URL,
        description="Host of Kochava's S2S /track/json and /v1/cpi/identityLink.php.",
    )
    kochava_max_requests_per_second: float = Field(
        default=50.0, gt=0, le=10_000, description="Request-rate ceiling of the Kochava sink (per worker)."
    )
    kochava_request_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds per Kochava POST."
    )
    kochava_concurrency: int = Field(default=8, ge=1, le=64, description="Kochava POSTs in flight per batch.")

    @property
    def kochava_dry_run(self) -> bool:
        return not self.kochava_app_guid


class AudienceSettings(SharedSettings):
    """kseg's own audiences: their definitions and the S2S event names of an entry and an exit."""

    kseg_audience_entered_event: str = Field(
        default="Audience Entered", min_length=1, description="S2S event name for an audience entry."
    )
    kseg_audience_exited_event: str = Field(
        default="Audience Exited", min_length=1, description="S2S event name for an audience exit."
    )
    kseg_audiences_file: Path | None = Field(
        default=None,
        description="kseg's own audiences (YAML); default: the packaged app/audiences/audiences.yaml.",
    )


class WarehouseSettings(KafkaSettings, CurrencySettings):
    """The warehouse: its database, and the loader that fills it from Kafka."""

    kseg_warehouse_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the warehouse. Unset: embedded server under KSEG_DATA_DIR/postgres.",
    )
    kseg_warehouse_group: str | None = Field(
        default=None, description="Warehouse loader consumer group (default `<KSEG_APP_ID>-warehouse`)."
    )
    kseg_warehouse_web_port: int = Field(
        default=6068, ge=0, le=65535, description="Warehouse loader /metrics, /healthz and /readyz port."
    )
    kseg_warehouse_batch_rows: int = Field(
        default=2000, ge=1, le=100_000, description="Most records the loader writes in one transaction."
    )
    kseg_warehouse_batch_wait: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Idle timeout of one loader fetch when no record is waiting (never a fill wait).",
    )
    kseg_warehouse_retry_max: float = Field(
        default=10.0, gt=0, le=600, description="Longest wait between retries while the database is down."
    )
    kseg_trace_retention_days: int = Field(
        default=7,
        ge=1,
        le=3650,
        description="Days the loader keeps the trace tables' rows (postbacks, outcomes, receipts, letters).",
    )
    kseg_warehouse_fault_kill_after_commits: int = Field(
        default=0,
        ge=0,
        description="Testing only: the loader SIGKILLs itself after this many database commits that held "
        "warehouse event rows, before committing the Kafka offsets (0: never).",
    )

    @property
    def warehouse_group(self) -> str:
        return self.kseg_warehouse_group or f"{self.kseg_app_id}-warehouse"


class DigestSettings(WarehouseSettings, KochavaSettings):
    """The campaign digest: Kochava Reporting API, schedule and pacing; it reads and writes the warehouse."""

    kochava_api_key: SecretStr | None = Field(
        default=None, description="Kochava Reporting API key (the user's key); unset: no digest runs."
    )
    kochava_reporting_url: str = Field(
        default=KOCHAVA_REPORTING_URL, description="Reporting API v1.4 base URL (every call is a POST)."
    )
    kochava_time_zone: str = Field(
        default="UTC", description="The app's reporting time zone: digest days and report windows."
    )
    kochava_digest_hour: int = Field(
        default=6, ge=0, le=23, description="Local hour (KOCHAVA_TIME_ZONE) of the daily digest run."
    )
    kochava_digest_check_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="How often the leader worker checks whether a digest day is due.",
    )
    kochava_digest_days: int = Field(
        default=7,
        ge=1,
        le=100,
        description="Days of spend re-fetched and replaced on every run (restatements).",
    )
    kochava_spend_currency: str = Field(
        default="USD", min_length=3, max_length=3, description="Currency of the report's spend figures."
    )
    kochava_column_map: str = Field(
        default="",
        description="Report column names, `installs=install_count,...` (see `kseg digest columns`).",
    )
    kochava_poll_first_wait: float = Field(
        default=15.0, ge=0, le=300, description="Seconds before the first progress poll."
    )
    kochava_poll_max_wait: float = Field(
        default=10.0, gt=0, le=300, description="Longest pause between progress polls (backoff cap)."
    )
    kochava_report_timeout: float = Field(
        default=1800.0,
        gt=0,
        le=86400,
        description="Give up on a report not completed after this many seconds.",
    )
    kochava_reporting_timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds per HTTP call.")
    kochava_reporting_retries: int = Field(
        default=5, ge=0, le=50, description="Retries of one call after a 5xx, 429 or timeout."
    )
    kochava_digest_max_backlog: int = Field(
        default=10_000,
        ge=0,
        le=10_000_000,
        description="Pause the digest's fan-out while the Segment outbox lag exceeds this (0: never).",
    )
    kochava_digest_rate: float = Field(
        default=200.0, gt=0, le=10000, description="Digest identifies queued per second (live traffic first)."
    )

    @field_validator("kochava_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as America/Toronto"
            ) from None
        return value

    @field_validator("kochava_column_map")
    @classmethod
    def _column_map_parse(cls, value: str) -> str:
        column_pairs(value)
        return value


SEGMENT_PUBLIC_API_US = "https://api.segmentapis.com"
SEGMENT_PUBLIC_API_EU = "https://eu1.api.segmentapis.com"
KOCHAVA_PRIVACY_URL = "https://nng.kochava.com"
#: Every device id type kseg holds; Kochava's page shows `idfa` and `adid` only (the rest is assumed).
KOCHAVA_PRIVACY_ID_TYPES = "kochava_device_id,idfa,idfv,adid,android_id"


class PrivacySettings(DigestSettings):
    """Privacy requests: the API's credential, Segment's Public API (regulations), Kochava's Data Subject
    Request API (scrub), retries and the alert. The privacy agent also deletes warehouse rows, and the scrub
    key defaults to the digest's KOCHAVA_API_KEY (hence the digest's section underneath)."""

    kseg_privacy_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated tokens for /v1/privacy/requests; every other token is refused there.",
    )
    segment_public_api_token: SecretStr | None = Field(
        default=None, description="Segment Public API token (regulations); unset: Segment is not configured."
    )
    segment_public_api_url: str = Field(
        default=SEGMENT_PUBLIC_API_US, description="Segment Public API host; `us` or `eu` select a region."
    )
    kochava_privacy_url: str = Field(
        default=KOCHAVA_PRIVACY_URL, description="Host of Kochava's Data Subject Request API (scrub)."
    )
    kochava_account_id: str | None = Field(
        default=None, pattern=r"^[0-9]+$", description="Kochava numeric account id (scrub path)."
    )
    kochava_app_id: str | None = Field(
        default=None, pattern=r"^[0-9]+$", description="Kochava numeric app id (scrub path)."
    )
    kochava_privacy_api_key: SecretStr | None = Field(
        default=None, description="Kochava key for the scrub (`Authentication-Key`); default KOCHAVA_API_KEY."
    )
    kochava_privacy_id_types: str = Field(
        default=KOCHAVA_PRIVACY_ID_TYPES,
        description="Device id types sent in a scrub (Kochava documents idfa and adid; the rest is assumed).",
    )
    kochava_privacy_status_path: str = Field(
        default="",
        description="Scrub job status path under the privacy URL, `{job_id}` filled in; empty: not polled.",
    )
    kseg_privacy_alert_days: float = Field(
        default=25.0,
        gt=0,
        le=365,
        description="Alert when a privacy request is not done after this many days.",
    )
    kseg_privacy_retry_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="First retry delay of a failed privacy target (doubles)."
    )
    kseg_privacy_retry_max_seconds: float = Field(
        default=3600.0, gt=0, le=86400, description="Longest delay between retries of a privacy target."
    )
    kseg_privacy_request_timeout: float = Field(
        default=15.0, gt=0, le=300, description="Seconds per call to Segment's or Kochava's privacy API."
    )

    @field_validator("segment_public_api_url")
    @classmethod
    def _resolve_public_region(cls, value: str) -> str:
        aliases = {"us": SEGMENT_PUBLIC_API_US, "eu": SEGMENT_PUBLIC_API_EU}
        return aliases.get(value.lower(), value).rstrip("/")

    @property
    def privacy_tokens(self) -> list[str]:
        return split_list(self.kseg_privacy_tokens.get_secret_value())

    @property
    def kochava_privacy_key(self) -> str:
        return reveal(self.kochava_privacy_api_key) or reveal(self.kochava_api_key)

    @property
    def kochava_privacy_configured(self) -> bool:
        return bool(self.kochava_account_id and self.kochava_app_id and self.kochava_privacy_key)

    @property
    def privacy_id_types(self) -> list[str]:
        return split_list(self.kochava_privacy_id_types)


class ConsoleSettings(MappingSettings, WarehouseSettings):
    """The web console: where it listens, who may use it (viewer and operator tokens), how its session
    cookies are signed, and the reconciliation gap it flags. It reads the warehouse and maps with the
    loaded profiles (the mapping studio), hence its bases."""

    kseg_console_host: str = Field(default="127.0.0.1", description="Console bind address (loopback).")
    kseg_console_port: int = Field(default=6070, ge=0, le=65535, description="Console port.")
    kseg_console_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Console credentials, `viewer=TOKEN,operator=TOKEN2` (several of each); unset: no login "
        "(`kseg run` makes a development operator token and prints it).",
    )
    kseg_console_secret: SecretStr | None = Field(
        default=None,
        description="Key signing console session cookies; unset: a random one per start (sessions end).",
    )
    kseg_reconcile_gap_pct: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="Reconciliation: a campaign day whose installs delivered fall short of Kochava's by "
        "more than this percentage is flagged (console, metric, alert).",
    )

    @field_validator("kseg_console_tokens")
    @classmethod
    def _console_tokens_parse(cls, value: SecretStr) -> SecretStr:
        console_token_roles(value.get_secret_value())
        return value

    @property
    def console_tokens(self) -> dict[str, str]:
        """Token -> role ("viewer" or "operator")."""
        return console_token_roles(self.kseg_console_tokens.get_secret_value())


CONSOLE_ROLES = ("viewer", "operator")


def console_token_roles(text: str) -> dict[str, str]:
    """`viewer=T1,operator=T2,viewer=T3` as {token: role}; a `ValueError` naming the bad entry's position
    (never its value: it holds a secret)."""
    roles: dict[str, str] = {}
    for position, item in enumerate(split_list(text), start=1):
        role, sep, token = item.partition("=")
        role, token = role.strip(), token.strip()
        if not sep or role not in CONSOLE_ROLES or not token:
            raise ValueError(
                f"KSEG_CONSOLE_TOKENS entry {position} is not `viewer=TOKEN` or `operator=TOKEN`"
            )
        if len(token) < 8:
            raise ValueError(f"KSEG_CONSOLE_TOKENS entry {position}: a token needs at least 8 characters")
        if roles.get(token, role) != role:
            raise ValueError(f"KSEG_CONSOLE_TOKENS entry {position}: one token given two roles")
        roles[token] = role
    return roles
