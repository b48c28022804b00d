"""`kseg mapping try`: what the worker would send for one postback, from the processing core itself.

The postback goes through `app.pipeline.core.process_postback`, the function the worker runs, with the
profile configuration the worker builds (`StepConfig`) and the device's state (empty: a device seen for the
first time; or one passed in), so the Segment calls and warehouse row it prints are the worker's, apart from
the receive time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.lifecycle.currency import RatesError
from app.mapping.preview import parse_try_input
from app.mapping.profile import ProfileError, ProfileRegistry
from app.pipeline.core import ProfileConfigs, process_postback
from app.pipeline.steps import StepConfig
from app.records import (
    AttributionProfile,
    DeadLetter,
    RawPostback,
    device_key_of,
    dumps,
    postback_event_id,
    utc_now_iso,
)
from app.sections import PipelineSettings


def postback_of(params: dict[str, Any], profile_name: str | None, received_at: str) -> RawPostback:
    """The raw record the receiver would store for `params`: without its auth and routing keys, with its
    deterministic event id; `profile_name` (else a `profile=` parameter) names the mapping profile."""
    params = {k: v for k, v in params.items() if k != "token"}
    named = params.pop("profile", None)
    return RawPostback(
        event_id=postback_event_id(params),
        received_at=received_at,
        source="replay",
        profile=profile_name or (str(named) if named else None),
        params=params,
    )


def try_postback(
    raw: RawPostback, state: AttributionProfile, device_key: str, configs: ProfileConfigs, now: str
) -> dict[str, Any]:
    """{"lifecycle": {...}, "segment": [...], "warehouse": {...}} for a mappable postback, else
    {"dead_letter": {...}}: `process_postback`'s outcome for the device in `state`."""
    config = configs.for_postback(raw)
    if isinstance(config, DeadLetter):
        return {"dead_letter": config.model_dump(mode="json")}
    out = process_postback(raw, state, device_key, config, now)
    if out.dead_letter is not None:
        return {"dead_letter": out.dead_letter.model_dump(mode="json")}
    assert out.event is not None  # a mapped postback has its event
    life = out.state.lifecycle
    summary = {
        "acquisition_channel": life.acquisition_channel,
        "acquisition_paid": life.acquisition_paid,
        "event_channel": life.reengagement_channel if out.event.reengagement else None,
        "reengagement": out.event.reengagement,
        "stage": life.stage,
        "revenue_reporting": out.revenue_reporting,
        "reporting_currency": life.reporting_currency,
    }
    return {"lifecycle": summary, "segment": out.calls, "warehouse": out.row}


def cmd_try(
    input_text: str,
    profile_name: str | None,
    settings: PipelineSettings,
    *,
    state_file: Path | str | None = None,
    device_key: str | None = None,
    as_json: bool = False,
) -> int:
    """Map one pasted postback and print the Segment calls and warehouse row (or the dead letter).

    `state_file` holds the device's profile as JSON (default: a device seen for the first time);
    `as_json` prints one compact line (as the worker serialises it) instead of indented JSON.
    Exit 0 when it maps, 1 when it would be dead-lettered, 2 for unusable input, state or profiles.
    """
    try:
        params = parse_try_input(input_text)
        state = _state(state_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        config = StepConfig(settings, ProfileRegistry.load(settings.kseg_mapping_dir))
    except ProfileError as exc:
        print(f"error: cannot load mapping profiles:\n{exc}", file=sys.stderr)
        return 2
    except RatesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = utc_now_iso()
    raw = postback_of(params, profile_name, now)
    key = device_key or device_key_of(raw.params)
    result = try_postback(raw, state, key or "", config.profile_configs, now)
    if key is None and "dead_letter" not in result:
        print(
            "error: the postback carries no usable device id; the receiver answers it 400 missing_device_id",
            file=sys.stderr,
        )
        return 2
    if as_json:
        sys.stdout.write(dumps(result).decode() + "\n")
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if "dead_letter" in result else 0


def _state(path: Path | str | None) -> AttributionProfile:
    """The device profile in `path` (JSON), or an empty one; `ValueError` saying what is wrong."""
    if path is None:
        return AttributionProfile()
    try:
        return AttributionProfile.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read the state file: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"{path}: not a device profile: {exc}") from None
