"""Mapping profiles: the declarative, versioned description of how a postback's keys become a canonical
event. Kochava lets the advertiser choose every query-string key (docs/reference.md#kochava-postbacks), so
the key names live in data (YAML), not in code, and each output carries the profile name and version.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.lifecycle.rules import LifecycleRules

#: Directory of the profiles shipped inside the package.
BUILTIN_PROFILE_DIR = Path(__file__).parent / "profiles"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY_RE = re.compile(r"^[^\s{}]{1,128}$")

#: Never copied into properties: credentials (the receiver's token) and identifiers that belong in
#: `context`/identity, not in analytics properties. Shell-style patterns, matched ignoring case.
DEFAULT_DROP_PARAMS = (
    "token",
    "*token*",
    "*secret*",
    "*password*",
    "*api_key*",
    "auth*",
    "signature",
    "sig",
    "*idfa*",
    "*idfv*",
    "*gaid*",
    "adid",
    "adid_*",
    "*android_id*",
    "oaid",
    "*device_id*",
    "*email*",
    "*phone*",
    "ip",
    "*_ip",
    "ip_*",
)


class UnknownProfile(KeyError):
    """A postback or command named a profile that is not loaded."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown mapping profile {self.name!r} (loaded: {', '.join(self.known) or 'none'})"


class ProfileError(ValueError):
    """A profile file that cannot be loaded; carries every problem found in it."""

    def __init__(self, problems: list[ProfileProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class ProfileProblem:
    """One thing wrong with a profile file, located by 1-based line so editors can jump to it."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _as_key_list(value: Any) -> Any:
    """A single key may be written as a plain string; the model always holds a list."""
    if isinstance(value, str):
        return [value]
    return value


class FieldKeys(BaseModel):
    """Which incoming keys feed each canonical field, in priority order (first present value wins).

    Keys are matched case-insensitively. Every key consumed here is kept out of event properties.
    """

    model_config = ConfigDict(extra="forbid")

    event_name: list[str] = Field(default_factory=lambda: ["event_name"])
    # device ids
    kochava_device_id: list[str] = Field(default_factory=list)
    idfa: list[str] = Field(default_factory=list)
    idfv: list[str] = Field(default_factory=list)
    adid: list[str] = Field(default_factory=list)
    android_id: list[str] = Field(default_factory=list)
    platform: list[str] = Field(default_factory=list)
    # event data
    timestamp: list[str] = Field(default_factory=list)
    revenue: list[str] = Field(default_factory=list)
    currency: list[str] = Field(default_factory=list)
    order_id: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)
    event_data: list[str] = Field(default_factory=list)
    # attribution
    network: list[str] = Field(default_factory=list)
    campaign: list[str] = Field(default_factory=list)
    ad_group: list[str] = Field(default_factory=list)
    creative: list[str] = Field(default_factory=list)
    site: list[str] = Field(default_factory=list)
    sub_site: list[str] = Field(default_factory=list)
    tracker: list[str] = Field(default_factory=list)
    click_id: list[str] = Field(default_factory=list)
    country: list[str] = Field(default_factory=list)
    attribution_type: list[str] = Field(default_factory=list)
    # install lifecycle
    install_id: list[str] = Field(default_factory=list)
    reprocess_for: list[str] = Field(default_factory=list)
    is_first_install: list[str] = Field(default_factory=list)
    # request context and people
    ip: list[str] = Field(default_factory=list)
    user_agent: list[str] = Field(default_factory=list)
    user_id: list[str] = Field(default_factory=list)
    email: list[str] = Field(default_factory=list)
    phone: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_key_list(value)

    @field_validator("*")
    @classmethod
    def _key_shape(cls, value: list[str]) -> list[str]:
        for key in value:
            if not _KEY_RE.match(key):
                raise ValueError(f"key {key!r} must be 1-128 characters without spaces or braces")
        return value


class ProductKeys(BaseModel):
    """Item-data keys folded into Segment's product fields (Kochava uses `content_id`, `sum`)."""

    model_config = ConfigDict(extra="forbid")

    product_id: list[str] = Field(default_factory=lambda: ["product_id", "content_id", "id"])
    sku: list[str] = Field(default_factory=lambda: ["sku"])
    name: list[str] = Field(default_factory=lambda: ["name"])
    category: list[str] = Field(default_factory=lambda: ["category"])
    brand: list[str] = Field(default_factory=lambda: ["brand"])
    variant: list[str] = Field(default_factory=lambda: ["variant"])
    price: list[str] = Field(default_factory=lambda: ["price", "sum"])
    quantity: list[str] = Field(default_factory=lambda: ["quantity"])

    @field_validator("*", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_key_list(value)


class ProfileShape(BaseModel):
    """The structure of a profile file; `MappingProfile` adds the cross-field checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    description: str = ""
    install_event: str = "_install"
    purchase_events: list[str] = Field(default_factory=lambda: ["Purchase"])
    conversion_events: list[str] = Field(default_factory=lambda: ["Subscribe", "Start Trial"])
    event_names: dict[str, str] = Field(default_factory=dict)
    fields: FieldKeys = Field(default_factory=FieldKeys)
    product_keys: ProductKeys = Field(default_factory=ProductKeys)
    drop_params: list[str] = Field(default_factory=lambda: list(DEFAULT_DROP_PARAMS))
    #: Channel table, organic and re-engagement markers, conversion rules (app.lifecycle.rules).
    lifecycle: LifecycleRules = Field(default_factory=LifecycleRules)
    #: Events the profile does not name (not in event_names, install, purchase or conversion events):
    #: `send` them as tracks under their Kochava name, or `quarantine` them as dead letters
    #: (`unknown_event`, replayable once the profile names them).
    unknown_events: Literal["send", "quarantine"] = "send"
    #: Keys expected as plain event properties: not reported as drift (`kseg mapping drift`).
    known_keys: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("name must be lowercase letters, digits, '.', '_' or '-' (max 64)")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads `version: 3` as an int; a version is a label, so keep it as text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        if not value.strip() or len(value) > 32:
            raise ValueError("version must be a non-empty label of at most 32 characters")
        return value.strip()

    @field_validator("event_names")
    @classmethod
    def _segment_names(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not source.strip() or not target.strip():
                raise ValueError("event names must be non-empty")
        return value


def semantic_issues(shape: ProfileShape) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field mistakes pydantic cannot see field by field, each with the path it is at."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    owner: dict[str, str] = {}
    for field_name in FieldKeys.model_fields:
        for i, key in enumerate(getattr(shape.fields, field_name)):
            low = key.lower()
            if low in owner and owner[low] != field_name:
                issues.append(
                    (("fields", field_name, i), f"key {key!r} is already used for field {owner[low]!r}")
                )
            elif low in owner:
                issues.append((("fields", field_name, i), f"key {key!r} is listed twice for {field_name!r}"))
            else:
                owner[low] = field_name
    if not shape.fields.event_name:
        issues.append((("fields", "event_name"), "event_name needs at least one key"))
    purchases = {e.strip().lower() for e in shape.purchase_events}
    for i, name in enumerate(shape.conversion_events):
        if name.strip().lower() in purchases:
            issues.append((("conversion_events", i), f"{name!r} is both a purchase and a conversion event"))
    for i, name in enumerate(shape.purchase_events + shape.conversion_events):
        if name.strip().lower() == shape.install_event.strip().lower():
            where = (
                ("purchase_events", i)
                if i < len(shape.purchase_events)
                else ("conversion_events", i - len(shape.purchase_events))
            )
            issues.append((where, f"{name!r} is the install event"))
    seen: dict[str, str] = {}
    for source in shape.event_names:
        low = source.strip().lower()
        if low in seen:
            issues.append(
                (("event_names", source), f"{source!r} duplicates {seen[low]!r} (names ignore case)")
            )
        seen[low] = source
    return issues


class MappingProfile(ProfileShape):
    """A validated profile, ready for `map_postback`. Lookup tables are precomputed once."""

    @model_validator(mode="after")
    def _semantics(self) -> MappingProfile:
        issues = semantic_issues(self)
        if issues:
            raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in issues))
        return self

    @property
    def lookups(self) -> ProfileLookups:
        """This profile's lookup tables (built on first use, then shared by every postback it maps)."""
        return profile_lookups(self)

    def segment_name(self, kochava_name: str) -> str | None:
        """Mapped Segment event name, matched ignoring case and surrounding spaces."""
        return self.lookups.segment_names.get(kochava_name.strip().lower())

    def is_install(self, name: str) -> bool:
        return name.strip().lower() == self.lookups.install_event

    def is_purchase(self, name: str) -> bool:
        return name.strip().lower() in self.lookups.purchase_events

    def is_conversion(self, name: str) -> bool:
        return name.strip().lower() in self.lookups.conversion_events

    def names_event(self, name: str) -> bool:
        """Whether the profile says anything about this Kochava event (else it is drift)."""
        return (
            self.segment_name(name) is not None
            or self.is_install(name)
            or self.is_purchase(name)
            or self.is_conversion(name)
        )


@dataclass(frozen=True)
class ProfileLookups:
    """What mapping one postback needs from its profile, in the form it is looked up in: keys lowercased
    (they match ignoring case), the drop patterns as one compiled expression. Built once per profile (a
    profile is frozen), not per postback."""

    #: Per `FieldKeys` field, its keys lowercased, in priority order.
    fields: dict[str, tuple[str, ...]]
    #: Every field's keys, lowercased: the params a postback's mapped fields consume.
    field_keys: frozenset[str]
    #: `field_keys` with `known_keys`: what drift does not report as an unknown key.
    declared_keys: frozenset[str]
    #: `ProductKeys` field -> its keys lowercased, in priority order.
    product_keys: dict[str, tuple[str, ...]]
    #: Event names (stripped, lowercased) -> Segment name; the first of equal names wins, as in the file.
    segment_names: dict[str, str]
    install_event: str
    purchase_events: frozenset[str]
    conversion_events: frozenset[str]
    #: `drop_params` (shell patterns, ignoring case) as one expression, matched against a lowercased key.
    drop: re.Pattern[str] | None

    def dropped(self, key: str) -> bool:
        """Whether `key` matches one of the profile's `drop_params` (ignoring case)."""
        return self.drop is not None and self.drop.match(key.lower()) is not None


def _build_lookups(profile: ProfileShape) -> ProfileLookups:
    fields = {
        name: tuple(key.lower() for key in getattr(profile.fields, name)) for name in FieldKeys.model_fields
    }
    field_keys = frozenset(key for keys in fields.values() for key in keys)
    names: dict[str, str] = {}
    for source, target in profile.event_names.items():
        names.setdefault(source.strip().lower(), target)
    # fnmatch.fnmatchcase(low, pat.lower()) is re.match(fnmatch.translate(pat.lower()), low), for each.
    patterns = [fnmatch.translate(pat.lower()) for pat in profile.drop_params]
    return ProfileLookups(
        fields=fields,
        field_keys=field_keys,
        declared_keys=field_keys | {key.lower() for key in profile.known_keys},
        product_keys={
            name: tuple(key.lower() for key in getattr(profile.product_keys, name))
            for name in ProductKeys.model_fields
        },
        segment_names=names,
        install_event=profile.install_event.strip().lower(),
        purchase_events=frozenset(e.strip().lower() for e in profile.purchase_events),
        conversion_events=frozenset(e.strip().lower() for e in profile.conversion_events),
        drop=re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None,
    )


#: id(profile) -> (profile, its lookups). Holding the profile keeps its id from being reused while cached.
_LOOKUPS: dict[int, tuple[ProfileShape, ProfileLookups]] = {}
#: Profiles whose lookups are kept (a worker holds a handful of versions; `kseg mapping` tools a few more).
_LOOKUPS_MAX = 256


def profile_lookups(profile: ProfileShape) -> ProfileLookups:
    """`profile`'s lookups, built on its first use. Kept by identity, not in the model: a frozen profile's
    fields never change, and a copy (a new object) gets its own."""
    hit = _LOOKUPS.get(id(profile))
    if hit is not None and hit[0] is profile:
        return hit[1]
    if len(_LOOKUPS) >= _LOOKUPS_MAX:
        _LOOKUPS.clear()
    lookups = _build_lookups(profile)
    _LOOKUPS[id(profile)] = (profile, lookups)
    return lookups


# ---------------------------------------------------------------------------------------------
# Loading and checking files
# ---------------------------------------------------------------------------------------------


def _compose(text: str) -> yaml.Node | None:
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest node reachable along a pydantic/semantic error path."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    current: yaml.Node = node
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    nxt = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            nxt = current.value[part] if 0 <= part < len(current.value) else None
        if nxt is None:
            break
        current = nxt
        line = current.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node | None, path: str) -> list[ProfileProblem]:
    """PyYAML silently keeps the last of two equal keys; a profile author never means that."""
    problems: list[ProfileProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(ProfileProblem(path, key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            seen.add(key)
            problems.extend(_duplicate_keys(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems.extend(_duplicate_keys(item, path))
    return problems


def _loc_text(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _parse(text: str, path: str) -> tuple[MappingProfile | None, list[ProfileProblem]]:
    try:
        node = _compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return None, [ProfileProblem(path, line, f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [ProfileProblem(path, 1, f"YAML error: {exc}")]
    problems = _duplicate_keys(node, path)
    if not isinstance(data, dict):
        return None, [*problems, ProfileProblem(path, 1, "a profile must be a YAML mapping")]
    try:
        shape = ProfileShape.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(ProfileProblem(path, _line_of(node, loc), f"{_loc_text(loc)}: {err['msg']}"))
        return None, problems
    for loc, msg in semantic_issues(shape):
        problems.append(ProfileProblem(path, _line_of(node, loc), f"{_loc_text(loc)}: {msg}"))
    if problems:
        return None, problems
    return MappingProfile.model_validate(data), []


def parse_profile_text(text: str, path: str) -> tuple[MappingProfile | None, list[ProfileProblem]]:
    """A profile from YAML text (a file's, or a registry record's), or every problem with its line."""
    return _parse(text, path)


def line_of_key(text: str, *loc: str | int) -> int:
    """1-based line of the key at `loc` in profile text (1 when it is not there)."""
    try:
        return _line_of(_compose(text), loc)
    except yaml.YAMLError:
        return 1


def check_profile_file(path: Path | str) -> list[ProfileProblem]:
    """Every problem in one profile file (syntax, structure, semantics), each with its line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [ProfileProblem(str(p), 1, f"cannot read file: {exc}")]
    return _parse(text, str(p))[1]


def load_profile_file(path: Path | str) -> MappingProfile:
    """One profile, or `ProfileError` listing everything wrong with it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([ProfileProblem(str(p), 1, f"cannot read file: {exc}")]) from exc
    profile, problems = _parse(text, str(p))
    if profile is None:
        raise ProfileError(problems)
    return profile


def profile_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


class ProfileRegistry:
    """The loaded profiles by name. Built-in profiles load first; the extra directory may override
    one of them by name (an operator pinning their own version), but two files in one directory
    with the same name are an error, because which one won would depend on file order."""

    def __init__(self, profiles: dict[str, MappingProfile]) -> None:
        self._profiles = dict(profiles)

    @classmethod
    def load(cls, extra_dir: Path | None = None) -> ProfileRegistry:
        profiles: dict[str, MappingProfile] = {}
        for directory in [BUILTIN_PROFILE_DIR, *([Path(extra_dir)] if extra_dir else [])]:
            if not directory.is_dir():
                raise ProfileError([ProfileProblem(str(directory), 1, "mapping directory does not exist")])
            from_here: dict[str, Path] = {}
            for file in profile_files(directory):
                profile = load_profile_file(file)
                if profile.name in from_here:
                    raise ProfileError(
                        [
                            ProfileProblem(
                                str(file),
                                1,
                                f"profile {profile.name!r} is also defined in {from_here[profile.name]}",
                            )
                        ]
                    )
                from_here[profile.name] = file
                profiles[profile.name] = profile
        return cls(profiles)

    def get(self, name: str) -> MappingProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise UnknownProfile(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def __contains__(self, name: object) -> bool:
        return name in self._profiles
