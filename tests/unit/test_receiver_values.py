"""Postback values over real HTTP into a real embedded broker: each key and value arrives in
`postbacks.raw` exactly as sent (percent-decoded once), or the request is a precise 4xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import settings as budget
from hypothesis import strategies as st
from yarl import URL

from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.receiver.errors import ClientError
from app.receiver.parsing import parse_fields
from app.receiver.server import POSTBACK_PATH
from app.topics import RAW
from tests.harness import read_topic
from tests.integration.hostile import meant_postback
from tests.receiver_app import receiver_settings, started_client

AUTH = {"Authorization": "Bearer pb-1"}


@pytest.fixture
async def settings(broker: EmbeddedBroker) -> Settings:
    return receiver_settings(broker, kseg_postback_tokens="pb-1")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c = await started_client(settings)
    yield c
    await c.close()


async def stored(settings: Settings, device: str) -> dict[str, Any]:
    """The params of the one raw record for `device`."""
    records = [v for _, v in await read_topic(settings.bootstrap, settings.topic(RAW))]
    mine = [r["params"] for r in records if r["params"].get("kochava_device_id") == device]
    assert len(mine) == 1, records
    return mine[0]


def test_parse_fields_decodes_once() -> None:
    assert parse_fields(b"a=100%2525off&b=x+y&c&d=%E2%82%AC&a2=%") == {
        "a": "100%25off",
        "b": "x y",
        "c": "",
        "d": "€",
        "a2": "%",
    }


async def test_query_values_are_percent_decoded_once(client: TestClient, settings: Settings) -> None:
    # `100%25off` is the campaign's literal name; Kochava percent-encodes it as 100%2525off.
    query = "kochava_device_id=KD-pct&campaign_name=100%2525off&site_id=a%2Bb+c&creative=%25"
    target = f"{POSTBACK_PATH}?{query}"
    resp = await client.get(URL(target, encoded=True), headers=AUTH)
    assert resp.status == 200, await resp.text()
    params = await stored(settings, "KD-pct")
    assert params["campaign_name"] == "100%25off"
    assert params["site_id"] == "a+b c"
    assert params["creative"] == "%"


async def test_form_body_values_are_decoded_once(client: TestClient, settings: Settings) -> None:
    resp = await client.post(
        POSTBACK_PATH,
        data=b"kochava_device_id=KD-form&campaign_name=100%2525off",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200, await resp.text()
    assert (await stored(settings, "KD-form"))["campaign_name"] == "100%25off"


@pytest.mark.parametrize("where", ["query", "form"])
async def test_value_that_is_not_utf8_is_a_400_naming_the_key(client: TestClient, where: str) -> None:
    fields = b"kochava_device_id=KD-bad&campaign_name=caf%E9"
    if where == "query":
        resp = await client.get(URL(f"{POSTBACK_PATH}?{fields.decode()}", encoded=True), headers=AUTH)
    else:
        resp = await client.post(
            POSTBACK_PATH, data=fields, headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
        )
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert (body["error"], body["field"]) == ("invalid_encoding", "campaign_name")


@given(st.data())
@budget(max_examples=300, deadline=None, database=None)
def test_any_encoding_of_any_value_decodes_to_it_or_names_the_undecodable_key(data: st.DataObject) -> None:
    """The receiver's parser on the integration suite's generator (tests/integration/hostile.py)."""
    fields, encoded, bad, _ = data.draw(meant_postback(0))
    if bad is None:
        assert parse_fields(encoded) == fields
    else:
        with pytest.raises(ClientError) as refused:
            parse_fields(encoded)
        assert (refused.value.status, refused.value.code) == (400, "invalid_encoding")
        bad_key, in_name = bad
        if not in_name:  # an undecodable key is named by its bytes as sent
            assert refused.value.details == {"field": bad_key}


async def test_raw_hash_in_the_query_is_a_400_not_a_silently_dropped_fragment(
    client: TestClient, settings: Settings
) -> None:
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"GET {POSTBACK_PATH}?kochava_device_id=KD-hash&campaign_name=a#b&site_id=s HTTP/1.1\r\n"
        "Host: x\r\nAuthorization: Bearer pb-1\r\nConnection: close\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_query"' in answer, answer
    resp = await client.get(
        URL(f"{POSTBACK_PATH}?kochava_device_id=KD-hash2&campaign_name=a%23b", encoded=True), headers=AUTH
    )
    assert resp.status == 200
    assert (await stored(settings, "KD-hash2"))["campaign_name"] == "a#b"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"kochava_device_id=KD&campaign_name=caf\xe9", "campaign_name"),  # raw byte, nothing to unquote
        (b"kochava_device_id=KD&caf\xe9=x", "caf\\xe9"),  # an undecodable key is named by its bytes
    ],
)
def test_raw_bytes_that_are_not_utf8_are_a_400_naming_the_field(raw: bytes, field: str) -> None:
    """Fields without `%` or `+` skip percent-decoding; a byte that is not UTF-8 is still refused by name."""
    with pytest.raises(ClientError) as refused:
        parse_fields(raw)
    assert (refused.value.status, refused.value.code, refused.value.details) == (
        400,
        "invalid_encoding",
        {"field": field},
    )
