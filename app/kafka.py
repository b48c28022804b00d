"""Kafka client settings shared by every kseg client (producers, consumers, admin, faust), so all of them
reach the broker the same way: one address, one security protocol, one set of credentials."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from app.sections import KafkaSettings


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None for plaintext protocols).

    Verifies the broker certificate against KAFKA_SSL_CAFILE (or the system trust store) and its host
    name; presents KAFKA_SSL_CERTFILE/KEYFILE for mutual TLS. Built per call: contexts are cheap and a
    fresh one reads rotated certificate files."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    for name, path in (
        ("KAFKA_SSL_CAFILE", cafile),
        ("KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
        ("KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
    ):
        if path is not None and not path.is_file():
            raise RuntimeError(f"{name}={path} does not exist or is not a file")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
    return context


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka kwargs every client gets: bootstrap servers, security protocol, TLS context, SASL."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        config |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return config


def faust_credentials(settings: KafkaSettings) -> Any:
    """faust's `broker_credentials` for the same security settings (None for PLAINTEXT).

    faust turns these into the same aiokafka kwargs `client_config` builds (faust's
    `credentials_to_aiokafka_auth`), for its consumer, producer and admin client alike."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        ssl_context=context,  # SASL_SSL when set, SASL_PLAINTEXT when None
        mechanism=settings.kafka_sasl_mechanism,
    )


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer kwargs: acks=all always; idempotence and batch size per broker kind."""
    return client_config(settings) | {
        "acks": "all",
        "enable_idempotence": settings.idempotence,
        "max_batch_size": settings.producer_max_batch_bytes,
        "linger_ms": 0,
        "request_timeout_ms": int(settings.kseg_produce_timeout * 1000),
        "client_id": f"{settings.kseg_app_id}-producer",
    }


def data_producer_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """`producer_config` with real multi-record batches (KSEG_DATA_BATCH_BYTES) on every broker, for the
    data topics (raw postbacks, the worker's outputs): nothing needs their end offsets exact, unlike
    the changelogs faust recovers tables from (see `Settings.producer_max_batch_bytes`)."""
    return producer_config(settings) | {
        "max_batch_size": settings.kseg_data_batch_bytes,
        "client_id": client_id,
    }


def consumer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """aiokafka consumer kwargs for kseg's tools (dlq, topics migrate): manual offsets, no group."""
    return client_config(settings) | {"enable_auto_commit": False} | extra


async def tls_problem(settings: KafkaSettings, timeout: float = 5.0) -> str | None:
    """Why a TLS handshake with the first bootstrap server fails, in words an operator can act on
    (None when it succeeds or TLS is off). aiokafka itself only reports "Unable to bootstrap"."""
    context = ssl_context(settings)
    if context is None:
        return None
    first = settings.bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    host = host.strip("[]")
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the TLS certificate of {first} is not trusted (certificate verify failed: "
            f"{exc.verify_message}); set KAFKA_SSL_CAFILE to the CA bundle that signed the brokers' "
            "certificates (or check the host name you connect to)"
        )
    except ssl.SSLError as exc:
        return f"TLS handshake with {first} failed ({exc.reason or exc}); is it a TLS listener?"
    except (OSError, TimeoutError) as exc:
        return f"cannot open a connection to {first} ({exc!r})"
    writer.close()
    return None


async def read_to_end(settings: KafkaSettings, topic: str) -> list[Any]:
    """Every record of `topic` now (for CLIs: dead letters, a table's changelog); see `read_records`."""
    return await read_records(consumer_config(settings), topic)


async def read_records(client: dict[str, Any], topic: str, *, quiet_ms: int = 300) -> list[Any]:
    """Every record of `topic`, from the beginning to its end: aiokafka `ConsumerRecord`s in partition
    order, [] when the topic is missing. `client` holds aiokafka consumer kwargs (`consumer_config`).

    Reads to the end offsets at the call, then on until a fetch stays empty for `quiet_ms`: the
    embedded broker reports a partition's end as its last batch's base offset + 1, so the records of a
    multi-record batch beyond that are only found by reading on."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**(client | {"enable_auto_commit": False}))
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata for every topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        behind = {tp for tp in tps if ends[tp] > 0}
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=2000 if behind else quiet_ms)
            if not batch:
                return out
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    behind.discard(tp)
    finally:
        await consumer.stop()


async def exact_end_offsets(
    client: dict[str, Any], reported: Mapping[Any, int], *, timeout: float = 10.0, quiet_ms: int = 200
) -> dict[Any, int]:
    """Each partition's end offset counted by reading, for the (topic, partition)s of `reported` (their
    end offsets as the broker reports them; partitions reported empty are returned as they are).

    The embedded broker reports a partition's end as the base offset of its last batch + 1, so the rest
    of that batch lies past it. Reading from the reported end - 1 until a fetch brings nothing more finds
    the real end: one short fetch per partition on a broker whose end offsets are exact (Apache Kafka)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends = {tp: end for tp, end in reported.items()}
    wanted = {TopicPartition(tp[0], tp[1]): tp for tp, end in reported.items() if end > 0}
    if not wanted:
        return ends
    consumer = AIOKafkaConsumer(**(client | {"enable_auto_commit": False, "group_id": None}))
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp, original in wanted.items():
            consumer.seek(tp, reported[original] - 1)
        pending = set(wanted)  # not yet seen the record at reported end - 1 (or one after it)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            wait = 1000 if pending else quiet_ms
            batch = await consumer.getmany(*wanted, timeout_ms=wait)
            if not batch and (not pending or asyncio.get_running_loop().time() > deadline):
                return ends
            for tp, records in batch.items():
                if records:
                    original = wanted[tp]
                    ends[original] = max(ends[original], records[-1].offset + 1)
                    pending.discard(tp)
    finally:
        await consumer.stop()


async def group_positions(
    settings: KafkaSettings, group: str, topics: list[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """(end offsets, `group`'s committed offsets) of every partition of `topics`, keyed `topic:partition`;
    a partition the group never committed counts as committed at 0."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_config(settings))
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await admin.start()
    await consumer.start()
    try:
        await consumer.topics()
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or set())
        ]
        if not tps:
            return {}, {}
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        name = {tp: f"{tp.topic}:{tp.partition}" for tp in tps}
        done = {name[tp]: max(0, committed[tp].offset) if tp in committed else 0 for tp in tps}
        return {name[tp]: ends[tp] for tp in tps}, done
    finally:
        await consumer.stop()
        await admin.close()


async def group_lag(settings: KafkaSettings, group: str, topic: str) -> int:
    """Records of `topic` that consumer group `group` has not committed yet (all partitions).

    The digest asks this of the Segment outbox before queueing more, so live traffic goes first."""
    ends, committed = await group_positions(settings, group, [topic])
    return sum(max(0, end - committed[where]) for where, end in ends.items())
