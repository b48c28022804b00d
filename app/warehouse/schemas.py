"""The published JSON Schemas of kseg's topics (topics/schemas/): reading them, checking rows against them,
and regenerating the ones derived from pydantic records (`python -m app.warehouse.schemas`).

The warehouse row is checked with the published schema except `additionalProperties`: a producer that
is ahead of the schema (a new profile field, the lifecycle traits) must not turn rows into dead
letters; its new columns are added to the table instead (`store.evolve`).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

#: topics/schemas, through the `app/schemas` link so the schemas ship inside the wheel too.
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
WAREHOUSE_ROW = "warehouse-row.schema.json"
CAMPAIGN_SPEND = "campaign-spend.schema.json"


def load_schema(name: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads((directory / name).read_bytes())
    return schema


@lru_cache(maxsize=4)
def validator(name: str, open_ended: bool = False) -> Any:
    """A Draft 2020-12 validator of schema `name`; `open_ended` allows properties it does not list."""
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    if open_ended:
        schema = copy.deepcopy(schema)
        schema["additionalProperties"] = True
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problem(name: str, row: Any, open_ended: bool = False) -> str | None:
    """The first schema violation of `row` as a readable sentence, or None when it is valid."""
    errors = sorted(validator(name, open_ended).iter_errors(row), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(row)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.message[:300]}{more}"


@lru_cache(maxsize=1)
def row_properties() -> dict[str, Any]:
    """Column name → JSON Schema property of the published warehouse row (read once; do not mutate)."""
    props: dict[str, Any] = load_schema(WAREHOUSE_ROW)["properties"]
    return props


#: Schemas derived from the pydantic record of a topic's values: file name -> "module:Class".
MODEL_SCHEMAS = {
    "postback-raw.schema.json": ("app.records:RawPostback", "postbacks.raw"),
    "identity-link-request.schema.json": ("app.identity.records:LinkRequest", "identity.links"),
    "identity-device-index.schema.json": ("app.identity.records:DeviceIndexUpdate", "identity.device-index"),
    "identity-device-linked.schema.json": ("app.records:DeviceLinked", "identity.device-events"),
    "dead-letter.schema.json": ("app.records:DeadLetter", "deadletter"),
    "audience-change.schema.json": (
        "app.audiences.records:MembershipChange|DeviceFacts",
        "audiences.changes",
    ),
    "kochava-request.schema.json": ("app.sinks.kochava.requests:KochavaRequest", "kochava.outbox"),
    "digest-day.schema.json": ("app.digest.schedule:DayState", "digest.days"),
    "delivery-receipt.schema.json": ("app.records:DeliveryReceipt", "delivery.receipts"),
    "processing-receipt.schema.json": ("app.records:ProcessingReceipt", "processing.receipts"),
}


def model_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of the pydantic record behind schema file `name`."""
    import importlib
    from functools import reduce
    from operator import or_

    from pydantic import TypeAdapter

    target, topic = MODEL_SCHEMAS[name]
    module, _, cls = target.partition(":")
    models = [getattr(importlib.import_module(module), c) for c in cls.split("|")]  # a union: one of them
    body: dict[str, Any] = TypeAdapter(reduce(or_, models)).json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kseg.example/schemas/{name}",
        "title": f"kseg {topic} record ({cls})",
        **{k: v for k, v in body.items() if k != "title"},
    }


def write_model_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate every model-derived schema file; returns the paths written."""
    written = []
    for name in MODEL_SCHEMAS:
        path = directory / name
        path.write_bytes(orjson.dumps(model_schema(name), option=orjson.OPT_INDENT_2) + b"\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_model_schemas():
        print(written_path)
