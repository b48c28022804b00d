"""The topic catalogue points only at published schemas that exist, are valid, and match the records."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from app.topics import CATALOGUE
from app.warehouse.schemas import MODEL_SCHEMAS, SCHEMA_DIR, model_schema

ROOT = CATALOGUE.parent.parent
TOPICS = yaml.safe_load(CATALOGUE.read_text())["topics"]


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_every_topic_value_is_a_published_schema_file(name: str) -> None:
    value = TOPICS[name]["value"]
    path = ROOT / value
    assert value.startswith("topics/schemas/") and path.is_file(), f"{name}: {value} does not exist"
    Draft202012Validator.check_schema(orjson.loads(path.read_bytes()))


def test_no_unlisted_schema_files() -> None:
    listed = {Path(spec["value"]).name for spec in TOPICS.values()}
    assert {p.name for p in SCHEMA_DIR.glob("*.schema.json")} == listed


@pytest.mark.parametrize("name", sorted(MODEL_SCHEMAS))
def test_model_schemas_match_their_records(name: str) -> None:
    """Regenerate with `python -m app.warehouse.schemas` after changing a record."""
    assert orjson.loads((SCHEMA_DIR / name).read_bytes()) == model_schema(name)


def test_records_validate_against_their_schemas() -> None:
    from app.records import DeadLetter, RawPostback

    letter = DeadLetter(stage="warehouse", reason="schema_violation", error="x", payload={"a": 1})
    raw = RawPostback(
        event_id="e1", received_at="2025-01-01T00:00:00.000Z", params={"event_name": "_install"}
    )
    for obj, name in ((letter, "dead-letter.schema.json"), (raw, "postback-raw.schema.json")):
        schema = orjson.loads((SCHEMA_DIR / name).read_bytes())
        Draft202012Validator(schema).validate(orjson.loads(orjson.dumps(obj.model_dump(mode="json"))))
    bad = orjson.loads(orjson.dumps(letter.model_dump(mode="json"))) | {"stage": "nowhere"}
    schema = orjson.loads((SCHEMA_DIR / "dead-letter.schema.json").read_bytes())
    assert not Draft202012Validator(schema).is_valid(bad)
