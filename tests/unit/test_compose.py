"""docker/compose.yaml hands every Kafka setting to every kseg container, and its defaults load.

The file is rendered the way Compose does it (`${VAR:-default}` interpolation; a key with no value
is taken from the host's environment, or left out when the host has none), then fed to `Settings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from app.config import Settings
from tests.ops_files import DOCKER

# `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(rf"\$(?:(\$)|({_NAME})|\{{({_NAME})(?:(:?[-?])([^}}]*))?\}})")
KAFKA = sorted(name.upper() for name in Settings.model_fields if name.startswith("kafka_"))
REQUIRED = {"KSEG_POSTBACK_TOKENS": "secret"}


def _interpolate(value: str, host: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        escaped, bare, name, op, arg = match.groups()
        if escaped:
            return "$"
        name = name or bare
        present = host.get(name)
        unset = not present if op in (":-", ":?") else present is None
        if op and unset:
            if op.endswith("?"):
                raise ValueError(f"{name}: {arg}")
            return arg
        return present or ""

    return _VARIABLE.sub(one, value)


def _kseg_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    return {name: spec for name, spec in services.items() if "build" in spec}


def container_env(service: dict[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    """The environment Compose gives the container of `service`, for the host's environment `host`."""
    env: dict[str, str] = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            if key in host:
                env[key] = host[key]
        else:
            env[key] = _interpolate(str(value), host)
    return env


def test_the_kseg_services_and_kafka_settings_are_found() -> None:
    assert set(_kseg_services()) == {"topics", "receiver", "worker", "warehouse-loader", "console"}
    assert {
        "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE",
        "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SSL_CHECK_HOSTNAME",
    } <= set(KAFKA)  # fmt: skip


@pytest.mark.parametrize("service", sorted(_kseg_services()))
def test_every_kafka_setting_set_on_the_host_reaches_the_container(service: str) -> None:
    host = {name: f"/run/secrets/{name.lower()}-value" for name in KAFKA} | REQUIRED
    env = container_env(_kseg_services()[service], host)
    missing = {name: env.get(name) for name in KAFKA if env.get(name) != host[name]}
    assert not missing, f"{service}: host values not passed through: {missing}"


@pytest.mark.parametrize("service", sorted(_kseg_services()))
def test_the_defaults_load_as_the_settings_defaults(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing set on the host: every Kafka setting but the bootstrap servers keeps kseg's own default."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    env = container_env(_kseg_services()[service], REQUIRED)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    for name in KAFKA:
        if name != "KAFKA_BOOTSTRAP_SERVERS":
            field = name.lower()
            assert getattr(settings, field) == Settings.model_fields[field].default, name
