"""Bodies of `kseg mapping check` and `kseg mapping try` (app/cli.py wires the arguments)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.config import Settings
from app.lifecycle.currency import RatesError, load_rates
from app.mapping.preview import parse_try_input, preview
from app.mapping.profile import ProfileError, ProfileRegistry, check_profile_file, load_profile_file
from app.records import RawPostback, postback_event_id, utc_now_iso


def cmd_check(path: Path | str) -> int:
    """Print `FILE:LINE: message` per problem (exit 1), or `OK profile NAME vVERSION` per file."""
    target = Path(path)
    files = sorted([*target.glob("*.yaml"), *target.glob("*.yml")]) if target.is_dir() else [target]
    if not files:
        print(f"{target}:1: no profile files (*.yaml) found")
        return 1
    failed = False
    for file in files:
        problems = check_profile_file(file)
        for problem in problems:
            print(problem)
        if problems:
            failed = True
            continue
        profile = load_profile_file(file)
        print(f"OK profile {profile.name} v{profile.version}")
    return 1 if failed else 0


def cmd_try(input_text: str, profile_name: str | None, settings: Settings) -> int:
    """Map one pasted postback and print the Segment calls and warehouse row (or the dead letter).

    Exit 0 when it maps, 1 when it would be dead-lettered, 2 for unusable input or profiles.
    """
    try:
        params = parse_try_input(input_text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        registry = ProfileRegistry.load(settings.kseg_mapping_dir)
    except ProfileError as exc:
        print(f"error: cannot load mapping profiles:\n{exc}", file=sys.stderr)
        return 2
    raw = RawPostback(
        event_id=postback_event_id(params),
        received_at=utc_now_iso(),
        source="replay",
        profile=profile_name,
        params=params,
    )
    try:
        rates = load_rates(settings.kseg_currency_rates_file, settings.kseg_reporting_currency)
    except RatesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = profile_name or settings.kseg_default_profile
    result = preview(raw, registry, settings.kseg_namespace, name, settings, rates)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if "dead_letter" in result else 0
