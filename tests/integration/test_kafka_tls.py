"""Kafka over TLS for every kseg client, through a TLS-terminating proxy in front of Tansu.

Tansu advertises its own listener in metadata; it is started with the proxy's address as its advertised
listener, so clients that bootstrap through the proxy also reach the partitions' leader through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.kafka import client_config, consumer_config, producer_config
from app.topics import RAW, connect_admin, ensure_topics
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, run_cli, wait_for
from tests.parallel import free_port
from tests.tls_proxy import CertificateAuthority, TLSProxy

INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KITLS1",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "network_name": "ExampleNetwork",
    "campaign_name": "TLS",
    "timestamp": "1735689600",
}


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Tansu on a plaintext loopback port, advertised as the TLS proxy's `localhost:port`."""
    ca = CertificateAuthority(tmp_path)
    other_ca = CertificateAuthority(tmp_path, name="some other CA")
    server = ca.issue("localhost")
    proxy_port = free_port()
    broker = EmbeddedBroker(
        port=free_port(), log_path=tmp_path / "tansu.log", advertised=f"localhost:{proxy_port}"
    ).start()
    try:
        async with TLSProxy(proxy_port, (broker.host, broker.port), server) as proxy:
            yield {
                "bootstrap": f"localhost:{proxy_port}",
                "ca": ca.files.cert,
                "other_ca": other_ca.files.cert,
                "proxy": proxy,
                "plaintext": broker.bootstrap_servers,
            }
    finally:
        broker.stop()


def _settings(bootstrap: str, cafile: Path, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=cafile,
        kseg_embedded_broker=True,
        kseg_app_id="tls",
        kseg_topic_partitions=2,
        **extra,
    )


async def test_admin_producer_and_consumer_verify_the_broker_certificate(tls_broker: dict[str, Any]) -> None:
    settings = _settings(tls_broker["bootstrap"], tls_broker["ca"])
    created = await ensure_topics(settings)
    assert settings.topic(RAW) in created

    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(RAW), b"over-tls", key=b"KITLS1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(RAW), p) for p in range(2)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        batch = await consumer.getmany(*tps, timeout_ms=10_000)
        values = [r.value for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    assert values == [b"over-tls"]
    assert tls_broker["proxy"].handshakes >= 3  # every client went through TLS, none around it
    assert client_config(settings)["ssl_context"].verify_mode.name == "CERT_REQUIRED"


async def test_wrong_ca_fails_with_a_reason_an_operator_can_act_on(tls_broker: dict[str, Any]) -> None:
    settings = _settings(tls_broker["bootstrap"], tls_broker["other_ca"])
    with pytest.raises(RuntimeError) as failure:
        admin = await connect_admin(settings, timeout=2.0)
        await admin.close()
    message = str(failure.value)
    assert "not trusted" in message and "certificate verify failed" in message
    assert "KAFKA_SSL_CAFILE" in message


async def test_kseg_topics_cli_over_tls(tls_broker: dict[str, Any], tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": tls_broker["bootstrap"],
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KSEG_EMBEDDED_BROKER": "true",
        "KSEG_APP_ID": "tlsplan",
        "KSEG_TOPIC_PARTITIONS": "2",
        "PATH": "/usr/bin:/bin",
    }

    async def kseg(*args: str, ca: Path) -> tuple[int, str]:
        code, out, err = await run_cli({**env, "KAFKA_SSL_CAFILE": str(ca)}, *args)
        return code, out + err

    code, out = await kseg("topics", "plan", ca=tls_broker["ca"])
    assert code == 1 and "+ tlsplan.postbacks.raw" in out, out
    code, out = await kseg("topics", "apply", ca=tls_broker["ca"])
    assert code == 0, out
    code, out = await kseg("topics", "plan", ca=tls_broker["ca"])
    assert (code, out.strip().splitlines()[-1]) == (0, "the cluster matches topics.yaml"), out
    code, out = await kseg("topics", "plan", ca=tls_broker["other_ca"])
    assert code == 2 and "not trusted" in out, out


@pytest.mark.long
async def test_receiver_and_worker_deliver_through_tls(
    tls_broker: dict[str, Any], tmp_path: Path, segment: SegmentEmulator
) -> None:
    """The receiver's producer and the faust worker (broker_credentials) both speak TLS."""
    p = Pipeline(
        tls_broker["bootstrap"],
        tmp_path,
        segment.url,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(tls_broker["ca"]),
    )
    try:
        await p.start()
        status, body, _ = await p.get(INSTALL)
        assert (status, body) == (200, {"message": "success"})
        await wait_for(lambda: len(segment.messages) >= 2, 60, "identify + track through TLS")
        assert {m["type"] for m in segment.messages} == {"identify", "track"}
    finally:
        await p.stop()


async def test_receiver_with_the_wrong_ca_answers_503_and_logs_why(
    tls_broker: dict[str, Any], tmp_path: Path
) -> None:
    p = Pipeline(
        tls_broker["bootstrap"],
        tmp_path,
        None,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(tls_broker["other_ca"]),
    )
    try:
        p._spawn("receiver", "receiver", {})
        # aiokafka logs the raw SSL error; kseg's own line says what is wrong and which setting fixes it.
        await wait_for(lambda: "set KAFKA_SSL_CAFILE" in p.tail("receiver"), 90, "kseg's TLS reason")
        assert "is not trusted (certificate verify failed" in p.tail("receiver")
        status, body, headers = await wait_for(lambda: _get(p), 30, "the receiver to answer")
        assert status == 503 and body["error"] and "Retry-After" in headers
    finally:
        await p.stop()


async def _get(p: Pipeline) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    try:
        return await p.get(INSTALL)
    except OSError:
        return None
