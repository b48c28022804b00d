"""Declarative, versioned mapping from Kochava postbacks to canonical events, Segment calls and
warehouse rows. Profiles are YAML (see docs/mapping.md); everything here is pure and never touches
Kafka, so the processing core (app.pipeline.core), `kseg mapping try` and the tests share one code path."""

from app.mapping.mapper import (
    DEAD_LETTER_REASONS,
    dead_letter_unknown_profile,
    map_postback,
    parse_revenue,
    parse_timestamp,
)
from app.mapping.outputs import EventOutputs, attributed_outputs, event_outputs
from app.mapping.preview import parse_try_input
from app.mapping.profile import (
    MappingProfile,
    ProfileError,
    ProfileProblem,
    ProfileRegistry,
    UnknownProfile,
    check_profile_file,
    load_profile_file,
)
from app.mapping.segment import build_segment_calls, with_lifecycle
from app.mapping.warehouse import WAREHOUSE_COLUMNS, build_warehouse_row

__all__ = [
    "DEAD_LETTER_REASONS",
    "WAREHOUSE_COLUMNS",
    "EventOutputs",
    "MappingProfile",
    "ProfileError",
    "ProfileProblem",
    "ProfileRegistry",
    "UnknownProfile",
    "attributed_outputs",
    "build_segment_calls",
    "build_warehouse_row",
    "check_profile_file",
    "dead_letter_unknown_profile",
    "event_outputs",
    "load_profile_file",
    "map_postback",
    "parse_revenue",
    "parse_timestamp",
    "parse_try_input",
    "with_lifecycle",
]
