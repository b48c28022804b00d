"""The settings: one environment surface composed of per-domain sections, secrets that never show, and
list settings that refuse a malformed entry at start, naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from app import sections
from app.config import Settings
from app.sections import (
    DigestSettings,
    KafkaSettings,
    ReceiverSettings,
    SegmentSettings,
    SharedSettings,
    column_pairs,
    token_profile_pairs,
)
from tests.unit.test_cli import kseg

ROOT = Path(__file__).resolve().parents[2]

#: Every secret setting, with a value that must never show outside its check.
SECRETS = {
    "SEGMENT_WRITE_KEY": "wk-SECRET-write-key",
    "KOCHAVA_API_KEY": "kak-SECRET-api-key",
    "SEGMENT_WEBHOOK_SECRET": "whs-SECRET-signature",
    "SEGMENT_WEBHOOK_HEADER_SECRET": "whh-SECRET-header",
    "KAFKA_SASL_PASSWORD": "sasl-SECRET-password",
    "KSEG_POSTBACK_TOKENS": "pb-SECRET-one,pb-SECRET-two",
    "KSEG_LINK_TOKENS": "ln-SECRET-one",
    "KSEG_TOKEN_PROFILES": "pb-SECRET-one=kochava-default",
}
#: The pieces of `SECRETS` any leak would contain.
SECRET_PIECES = [
    "wk-SECRET",
    "kak-SECRET",
    "whs-SECRET",
    "whh-SECRET",
    "sasl-SECRET",
    "pb-SECRET",
    "ln-SECRET",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No kseg variable from the runner's environment, and a working directory without a `.env`."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def section_of(name: str) -> type:
    """The section class that declares field `name`."""
    owners = [
        cls
        for cls in vars(sections).values()
        if isinstance(cls, type) and issubclass(cls, SharedSettings) and name in cls.__annotations__
    ]
    assert len(owners) == 1, (name, owners)
    return owners[0]


def test_the_whole_is_exactly_its_sections_and_each_key_has_one_owner() -> None:
    owned = {name: section_of(name) for name in Settings.model_fields}
    assert all(owner is not Settings for owner in owned.values())
    for section in {*owned.values()}:
        assert issubclass(Settings, section), section
    assert set(owned) == set(Settings.model_fields)


def test_every_section_reads_the_environment_and_dotenv_by_the_same_names(clean_env: Any) -> None:
    Path(".env").write_text(
        "KSEG_APP_ID=from-dotenv\n"
        "KSEG_HTTP_PORT=9999\n"
        "SEGMENT_BATCH_MAX_MESSAGES=123\n"
        "KOCHAVA_DIGEST_HOUR=9\n"
        "KSEG_WAREHOUSE_BATCH_ROWS=77\n"
        "KSEG_LTV_TIERS=a=0,b=5\n"
        "KSEG_DEDUPE_TTL_HOURS=1.5\n"
    )
    clean_env.setenv("KSEG_HTTP_PORT", "8181")  # the environment wins over .env
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9092")
    clean_env.setenv("KSEG_SHARED_DEVICE_THRESHOLD", "4")
    clean_env.setenv("KOCHAVA_APP_GUID", "koapp-guid")
    clean_env.setenv("KSEG_AUDIENCE_ENTERED_EVENT", "In")
    clean_env.setenv("KSEG_WORKER_WEB_PORT", "7000")
    clean_env.setenv("KSEG_REPORTING_CURRENCY", "EUR")
    clean_env.setenv("SEGMENT_ENDPOINT", "eu")
    settings = Settings(_env_file=".env")  # type: ignore[call-arg]  # unit tests ignore .env by default
    assert settings.kseg_app_id == "from-dotenv" and settings.topic("raw") == "from-dotenv.raw"
    assert settings.kseg_http_port == 8181
    assert settings.segment_batch_max_messages == 123
    assert settings.kochava_digest_hour == 9
    assert settings.kseg_warehouse_batch_rows == 77
    assert settings.warehouse_group == "from-dotenv-warehouse"
    assert settings.kseg_ltv_tiers == "a=0,b=5"
    assert settings.kseg_dedupe_ttl_hours == 1.5
    assert settings.bootstrap == "b1:9092"
    assert settings.kseg_shared_device_threshold == 4
    assert settings.kochava_app_guid == "koapp-guid" and not settings.kochava_dry_run
    assert settings.kseg_audience_entered_event == "In"
    assert settings.kseg_worker_web_port == 7000
    assert settings.kseg_reporting_currency == "EUR"
    assert settings.segment_endpoint == sections.SEGMENT_EU_ENDPOINT


def test_ranges_defaults_and_derived_values_are_unchanged(clean_env: Any) -> None:
    settings = Settings()
    assert settings.dry_run and settings.kochava_dry_run
    assert settings.postback_tokens == [] and settings.token_profiles == {}
    assert settings.producer_max_batch_bytes == 16384 and settings.fetch_max_wait_ms == 500
    assert settings.idempotence is True
    embedded = Settings(kseg_embedded_broker=True)
    assert (embedded.producer_max_batch_bytes, embedded.fetch_max_wait_ms, embedded.idempotence) == (
        1,
        50,
        False,
    )
    with pytest.raises(RuntimeError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        _ = settings.bootstrap
    for bad in (
        {"kseg_topic_partitions": 0},
        {"kochava_digest_hour": 24},
        {"kseg_reporting_currency": "eur"},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)
    # The sections validate on their own too (a test may build just the one it needs).
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME"):
        KafkaSettings(kafka_security_protocol="SASL_SSL")
    assert SegmentSettings(segment_write_key=SecretStr("k")).dry_run is False
    assert SegmentSettings(segment_write_key=SecretStr("")).dry_run is True


@pytest.mark.parametrize("env_name", sorted(SECRETS))
def test_every_secret_is_a_secret_str(env_name: str) -> None:
    annotation = Settings.model_fields[env_name.lower()].annotation
    assert annotation in (SecretStr, SecretStr | None), (env_name, annotation)


def test_no_secret_shows_in_a_repr_a_str_or_a_dump(clean_env: Any) -> None:
    for name, value in SECRETS.items():
        clean_env.setenv(name, value)
    clean_env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("KAFKA_SASL_USERNAME", "user")
    settings = Settings()
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())]
    for text in shown:
        assert not [p for p in SECRET_PIECES if p in text], text
    # ... while the checks still get the plain values.
    assert settings.postback_tokens == ["pb-SECRET-one", "pb-SECRET-two"]
    assert settings.link_tokens == ["ln-SECRET-one"]
    assert settings.token_profiles == {"pb-SECRET-one": "kochava-default"}
    assert sections.reveal(settings.segment_write_key) == "wk-SECRET-write-key"


@pytest.mark.parametrize(
    "bad",
    [
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},  # a whole-settings check: its input is every value
        {"KSEG_HTTP_PORT": "not-a-port"},
        {"KSEG_TOKEN_PROFILES": "pb-SECRET-one:kochava-default"},
    ],
)
def test_a_validation_error_never_echoes_a_secret(clean_env: Any, bad: dict[str, str]) -> None:
    for name, value in (SECRETS | bad).items():
        clean_env.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert next(iter(bad)).lower() in message.lower() or "KAFKA_SASL_USERNAME" in message, message
    assert not [p for p in SECRET_PIECES if p in message], message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("pb-SECRET-one:profile-a", "KSEG_TOKEN_PROFILES entry 1 of 1 has no '='"),
        (
            "pb-SECRET-one=profile-a,=profile-b",
            "KSEG_TOKEN_PROFILES entry 2 of 2 (profile 'profile-b') has an empty token",
        ),
        ("pb-SECRET-one=", "KSEG_TOKEN_PROFILES entry 1 of 1 has an empty profile name"),
        (
            "pb-SECRET-one=a,pb-SECRET-one=b",
            "KSEG_TOKEN_PROFILES entry 2 of 2 (profile 'b') repeats the token",
        ),
    ],
)
def test_a_malformed_token_profile_is_refused_by_position_never_by_token(value: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        token_profile_pairs(value)
    assert says in str(caught.value)
    with pytest.raises(ValidationError) as whole:
        ReceiverSettings(kseg_token_profiles=SecretStr(value))
    assert says in str(whole.value) and "pb-SECRET" not in str(whole.value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("installs", "KOCHAVA_COLUMN_MAP entry 'installs' is not `field=column`"),
        ("installs=install_count,=campaign_name", "KOCHAVA_COLUMN_MAP entry '=campaign_name' is not"),
        ("installs=", "KOCHAVA_COLUMN_MAP entry 'installs=' is not"),
        ("installs=a,installs=b", "KOCHAVA_COLUMN_MAP names field 'installs' twice"),
    ],
)
def test_a_malformed_column_map_is_refused_naming_the_entry(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        DigestSettings(kochava_column_map=value)


def test_well_formed_lists_parse_and_blank_entries_are_skipped() -> None:
    assert token_profile_pairs(" t1 = a , t2=b ,") == {"t1": "a", "t2": "b"}
    assert column_pairs("installs = install_count, campaign=campaign_name,") == {
        "installs": "install_count",
        "campaign": "campaign_name",
    }
    assert ReceiverSettings(kseg_postback_tokens=SecretStr("a, b,,")).postback_tokens == ["a", "b"]


def test_the_receiver_refuses_to_start_on_a_malformed_token_profile_and_names_it() -> None:
    result = kseg(
        "receiver",
        KSEG_POSTBACK_TOKENS="pb-SECRET-one",
        KSEG_TOKEN_PROFILES="pb-SECRET-one:kochava-default",
        SEGMENT_WRITE_KEY="wk-SECRET-write-key",
    )
    assert result.returncode != 0
    assert "KSEG_TOKEN_PROFILES entry 1 of 1 has no '='" in result.stderr, result.stderr
    assert not [p for p in SECRET_PIECES if p in result.stderr + result.stdout], result.stderr


def test_the_worker_refuses_to_start_on_a_malformed_column_map_and_names_it() -> None:
    result = kseg("worker", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", KOCHAVA_COLUMN_MAP="installs")
    assert result.returncode != 0
    assert "KOCHAVA_COLUMN_MAP entry 'installs' is not `field=column`" in result.stderr, result.stderr
