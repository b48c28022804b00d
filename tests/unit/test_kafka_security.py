"""The Kafka security settings reach every client kseg builds, identically.

SASL is not tested against a server here (Tansu's `--authentication` is unverified); these tests check
that the settings become the same aiokafka arguments for kseg's own clients and for faust's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from app.config import Settings
from app.kafka import client_config, consumer_config, faust_credentials, producer_config

SECURITY_KEYS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def _settings(**kw: object) -> Settings:
    return Settings(kafka_bootstrap_servers="broker-1:9092", **kw)  # type: ignore[arg-type]


def test_plaintext_is_the_default_and_has_no_tls_or_sasl() -> None:
    config = client_config(_settings())
    assert config == {"bootstrap_servers": "broker-1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(_settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_reaches_producer_consumer_admin_and_faust_alike(mechanism: str) -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="api-key",
        kafka_sasl_password="api-secret",
    )
    base = client_config(settings)
    assert base["security_protocol"] == "SASL_SSL"
    assert (base["sasl_mechanism"], base["sasl_plain_username"], base["sasl_plain_password"]) == (
        mechanism,
        "api-key",
        "api-secret",
    )
    assert base["ssl_context"].check_hostname is True
    for config in (producer_config(settings), consumer_config(settings)):
        assert {k: config[k] for k in SECURITY_KEYS} == {k: base[k] for k in SECURITY_KEYS}
    # faust's own translation of broker_credentials yields the same aiokafka arguments.
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert {k: faust_kwargs[k] for k in SECURITY_KEYS} == {k: base[k] for k in SECURITY_KEYS}
    assert faust_kwargs["ssl_context"] is not None


def test_sasl_plaintext_has_no_tls_context_in_either_client() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p"
    )
    assert "ssl_context" not in client_config(settings)
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert faust_kwargs["security_protocol"] == "SASL_PLAINTEXT" and faust_kwargs["ssl_context"] is None


def test_ssl_for_faust_is_the_same_protocol() -> None:
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials(_settings(kafka_security_protocol="SSL")))
    assert faust_kwargs["security_protocol"] == "SSL" and faust_kwargs["ssl_context"] is not None


def test_half_configured_security_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        _settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together"):
        _settings(kafka_security_protocol="SSL", kafka_ssl_certfile=Path("/x.pem"))
    with pytest.raises(ValidationError):
        _settings(kafka_security_protocol="TLS")


def test_a_missing_ca_file_is_named() -> None:
    settings = _settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path("/nonexistent/ca.pem"))
    with pytest.raises(RuntimeError, match=r"KAFKA_SSL_CAFILE=/nonexistent/ca\.pem does not exist"):
        client_config(settings)


def test_the_password_never_shows_in_settings_repr() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="hunter2"
    )
    assert "hunter2" not in repr(settings)
