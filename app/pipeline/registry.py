"""`kseg mapping publish | history | rollback`: the registry's Kafka reads and writes, and the checks a
profile passes before it goes live (the records and rules are `app.mapping.registry`'s).

A publish is refused, changing nothing, when the file fails `check`, when its version is already
published with other content, or when it dead-letters a packaged golden postback that the active version
maps (the golden postbacks run through `process_postback`, as `kseg mapping try` runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from app import topics
from app.kafka import consumer_config, producer_config, read_to_end
from app.mapping.drift import DriftEntry, DriftReport, aggregate
from app.mapping.profile import (
    MappingProfile,
    ProfileProblem,
    ProfileRegistry,
    line_of_key,
    parse_profile_text,
)
from app.mapping.registry import (
    LocalProfile,
    ProfilePointer,
    ProfileVersion,
    RegistryRecord,
    RegistryState,
    content_hash,
    decode_record,
    local_profiles,
    publish_problems,
    record_key,
)
from app.mapping.shadow import ShadowReport, ShadowSummary, differences
from app.pipeline.core import process_postback
from app.pipeline.shadow import outputs_of
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, RawPostback, device_key_of, dumps, postback_event_id, utc_now_iso
from app.sections import MappingSettings


@dataclass(frozen=True)
class Sample:
    """One packaged golden postback (app/mapping/samples/, the inputs of tests/golden/)."""

    name: str
    params: dict[str, Any]
    received_at: str


def golden_samples() -> list[Sample]:
    text = resources.files("app.mapping").joinpath("samples/golden-postbacks.json").read_text("utf-8")
    return [Sample(s["name"], s["params"], s["received_at"]) for s in json.loads(text)]


def sample_problems(
    path: str, text: str, candidate: MappingProfile, current: MappingProfile | None, config: StepConfig
) -> list[ProfileProblem]:
    """Golden postbacks the candidate breaks: one it cannot map at all (`mapping_error`), or one the
    current version of its name maps and the candidate dead-letters."""
    problems: list[ProfileProblem] = []
    new_config = config.configure(candidate)
    old_config = config.configure(current) if current is not None else None
    for sample in golden_samples():
        raw = RawPostback(
            event_id=postback_event_id(sample.params),
            received_at=sample.received_at,
            source="replay",
            profile=candidate.name,
            params=sample.params,
        )
        key = device_key_of(sample.params) or ""
        out = process_postback(raw, AttributionProfile(), key, new_config, sample.received_at)
        letter = out.dead_letter
        if letter is None:
            continue
        where = ("fields", "event_name") if letter.reason == "missing_event_name" else ("fields",)
        line = line_of_key(text, *where) if letter.reason != "mapping_error" else 1
        if letter.reason == "mapping_error":
            problems.append(ProfileProblem(path, line, f"golden postback {sample.name}: {letter.error}"))
        elif old_config is not None:
            before = process_postback(raw, AttributionProfile(), key, old_config, sample.received_at)
            if before.dead_letter is None:
                problems.append(
                    ProfileProblem(
                        path,
                        line,
                        f"golden postback {sample.name}: v{current.version if current else ''} maps it, this "
                        f"file dead-letters it ({letter.reason}: {letter.error})",
                    )
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------


async def read_registry(settings: MappingSettings) -> RegistryState:
    """The registry now: every record of `mapping.registry` folded in log order."""
    state = RegistryState()
    for record in await read_to_end(settings, settings.topic(topics.MAPPING_REGISTRY)):
        decoded = decode_record(record.value)
        if decoded is not None:
            state.apply(decoded)
    return state


async def write_records(settings: MappingSettings, records: list[RegistryRecord]) -> None:
    """Append `records` in order, each acked before the next (a version before the pointer naming it)."""
    from aiokafka import AIOKafkaProducer

    await topics.ensure_topics(settings)
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                settings.topic(topics.MAPPING_REGISTRY), value=record.encode(), key=record_key(record)
            )
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def seed_record(local: LocalProfile, now: str) -> ProfileVersion:
    """The local file a name ran with before its first publish, so `rollback` can go back to it."""
    return ProfileVersion(
        name=local.profile.name,
        version=local.profile.version,
        yaml=local.text,
        sha256=content_hash(local.text),
        published_at=now,
        author="seed",
        note=f"the profile file this name ran with before the registry ({Path(local.path).name})",
    )


def current_profile(state: RegistryState, local: dict[str, LocalProfile], name: str) -> MappingProfile | None:
    """The profile workers run for `name`: the registry's active version, else the local file's."""
    active = state.active_version(name)
    if active is not None:
        return parse_profile_text(active.yaml, f"registry:{name}/{active.version}")[0]
    seeded = local.get(name)
    return seeded.profile if seeded else None


def with_seeds(
    state: RegistryState, local: dict[str, LocalProfile], name: str, now: str
) -> list[ProfileVersion]:
    """The seed record to write before a name's first registry change (none once it has versions)."""
    if state.versions.get(name) or name not in local:
        return []
    seed = seed_record(local[name], now)
    state.apply(seed)
    return [seed]


def cmd_publish(settings: MappingSettings, file: str, note: str, author: str | None) -> int:
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1: cannot read file: {exc}")
        return 1
    candidate, problems = parse_profile_text(text, str(path))
    if candidate is None:
        for problem in problems:
            print(problem)
        return 1
    state = asyncio.run(read_registry(settings))
    local = local_profiles(settings.kseg_mapping_dir)
    now = utc_now_iso()
    seeds = with_seeds(state, local, candidate.name, now)
    problems = publish_problems(str(path), text, candidate, state)
    config = StepConfig(settings, ProfileRegistry({}))
    current = current_profile(state, local, candidate.name)
    problems += sample_problems(str(path), text, candidate, current, config)
    if problems:
        for problem in problems:
            print(problem)
        print(f"not published: {len(problems)} problem(s); the registry is unchanged", file=sys.stderr)
        return 1
    who = author or getpass.getuser()
    records: list[RegistryRecord] = list(seeds)
    if candidate.version not in state.versions.get(candidate.name, {}):
        records.append(
            ProfileVersion(
                name=candidate.name,
                version=candidate.version,
                yaml=text,
                sha256=content_hash(text),
                published_at=now,
                author=who,
                note=note,
            )
        )
    records.append(
        ProfilePointer(
            kind="active", name=candidate.name, version=candidate.version, at=now, author=who, note=note
        )
    )
    asyncio.run(write_records(settings, records))
    print(f"published {candidate.name} v{candidate.version}")
    return 0


def cmd_history(settings: MappingSettings, name: str) -> int:
    state = asyncio.run(read_registry(settings))
    local = local_profiles(settings.kseg_mapping_dir)
    versions = state.versions.get(name, {})
    if not versions and name not in local:
        print(f"no profile named {name!r} in the registry or the local profiles", file=sys.stderr)
        return 1
    pointer = state.active.get(name)
    active = pointer.version if pointer else None
    print(f"{'':2}{'version':12} {'published':24} {'author':16} {'sha256':12} note")
    for version in sorted(versions.values(), key=lambda v: v.published_at):
        mark = "* " if version.version == active else "  "
        when, who, digest = version.published_at, version.author, version.sha256[:12]
        print(f"{mark}{version.version:12} {when:24} {who:16} {digest} {version.note}")
    if not versions:
        seed = local[name]
        digest = content_hash(seed.text)[:12]
        print(f"* {seed.profile.version:12} {'(local file)':24} {'-':16} {digest} {seed.path}")
        print(f"\n{name}: not published yet; workers run the local file v{seed.profile.version}")
    elif pointer is not None:
        why = f": {pointer.note}" if pointer.note else ""
        print(f"\nactive: v{pointer.version} since {pointer.at} ({pointer.author}{why})")
    shadow = state.shadow.get(name)
    if shadow is not None and shadow.version is not None:
        print(f"shadow: v{shadow.version} since {shadow.at}")
    return 0


def cmd_rollback(settings: MappingSettings, name: str, to: str, author: str | None) -> int:
    state = asyncio.run(read_registry(settings))
    local = local_profiles(settings.kseg_mapping_dir)
    now = utc_now_iso()
    seeds = with_seeds(state, local, name, now)
    versions = state.versions.get(name, {})
    if to not in versions:
        known = ", ".join(sorted(versions)) or "none"
        print(f"{name} has no version {to!r} in the registry (versions: {known})", file=sys.stderr)
        return 1
    pointer = state.active.get(name)
    was = pointer.version if pointer else (local[name].profile.version if name in local else None)
    who = author or getpass.getuser()
    note = f"rollback from v{was}" if was else "rollback"
    records: list[RegistryRecord] = [
        *seeds,
        ProfilePointer(kind="active", name=name, version=to, at=now, author=who, note=note),
    ]
    asyncio.run(write_records(settings, records))
    print(f"{name} now at v{to} (was v{was})")
    return 0


async def read_reports(settings: MappingSettings) -> list[DriftReport | ShadowReport]:
    """Every worker run's newest drift and shadow summaries (`mapping.reports`)."""
    newest: dict[bytes, DriftReport | ShadowReport] = {}
    for record in await read_to_end(settings, settings.topic(topics.MAPPING_REPORTS)):
        if record.value and record.key:
            with contextlib.suppress(ValueError):  # a value no kseg worker wrote: not a report
                newest[record.key] = (
                    ShadowReport.decode(record.value)
                    if record.key.startswith(b"shadow/")
                    else DriftReport.decode(record.value)
                )
    return list(newest.values())


async def read_drift(settings: MappingSettings, name: str | None) -> list[DriftEntry]:
    """Every worker run's newest drift summary, added up."""
    return aggregate([r for r in await read_reports(settings) if isinstance(r, DriftReport)], name)


def cmd_drift(settings: MappingSettings, name: str | None, as_json: bool) -> int:
    entries = asyncio.run(read_drift(settings, name))
    if as_json:
        sys.stdout.write(dumps({"drift": [e.model_dump() for e in entries]}).decode() + "\n")
        return 0
    if not entries:
        print(f"no mapping drift reported{' for ' + name if name else ''}")
        return 0
    head = ("profile", "ver", "kind", "item", "count", "first seen", "last seen")
    print("{:18} {:6} {:14} {:32} {:>7} {:24} {:24} example".format(*head))
    for e in entries:
        print(
            f"{e.profile:18} {e.version:6} {e.kind:14} {e.item:32} {e.count:7} {e.first_seen:24} "
            f"{e.last_seen:24} {e.example}"
        )
    return 0


def cmd_shadow(settings: MappingSettings, file: str, note: str, author: str | None) -> int:
    """Run FILE as the shadow of its profile on every worker (checked like `publish`, sends nothing)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1: cannot read file: {exc}")
        return 1
    candidate, problems = parse_profile_text(text, str(path))
    if candidate is None:
        for problem in problems:
            print(problem)
        return 1
    state = asyncio.run(read_registry(settings))
    local = local_profiles(settings.kseg_mapping_dir)
    now, who = utc_now_iso(), author or getpass.getuser()
    current = current_profile(state, local, candidate.name)
    if current is None:
        print(f"{path}:1: no active profile {candidate.name!r} to compare a shadow with; publish it instead")
        return 1
    seeds = with_seeds(state, local, candidate.name, now)
    problems = publish_problems(str(path), text, candidate, state)
    if candidate.version == current.version:
        problems.append(
            ProfileProblem(
                str(path),
                line_of_key(text, "version"),
                f"v{candidate.version} is the active version; give the shadow candidate a new version",
            )
        )
    if problems:
        for problem in problems:
            print(problem)
        return 1
    records: list[RegistryRecord] = list(seeds)
    if candidate.version not in state.versions.get(candidate.name, {}):
        records.append(
            ProfileVersion(
                name=candidate.name,
                version=candidate.version,
                yaml=text,
                sha256=content_hash(text),
                published_at=now,
                author=who,
                note=note,
            )
        )
    records.append(
        ProfilePointer(
            kind="shadow", name=candidate.name, version=candidate.version, at=now, author=who, note=note
        )
    )
    asyncio.run(write_records(settings, records))
    print(f"shadow {candidate.name} v{candidate.version} against active v{current.version}")
    return 0


def cmd_shadow_stop(settings: MappingSettings, name: str, author: str | None) -> int:
    state = asyncio.run(read_registry(settings))
    running = state.shadow_version(name)
    if running is None:
        print(f"{name} has no shadow run", file=sys.stderr)
        return 1
    who = author or getpass.getuser()
    stop = ProfilePointer(
        kind="shadow", name=name, version=None, at=utc_now_iso(), author=who, note="stopped"
    )
    asyncio.run(write_records(settings, [stop]))
    print(f"stopped the shadow run of {name} v{running.version}")
    return 0


def cmd_promote(settings: MappingSettings, name: str, author: str | None) -> int:
    """Make the shadow candidate the active version (and end its shadow run)."""
    state = asyncio.run(read_registry(settings))
    candidate = state.shadow_version(name)
    if candidate is None:
        print(f"{name} has no shadow run to promote", file=sys.stderr)
        return 1
    local = local_profiles(settings.kseg_mapping_dir)
    current = current_profile(state, local, name)
    now, who = utc_now_iso(), author or getpass.getuser()
    note = f"promoted from shadow (was v{current.version if current else '-'})"
    records: list[RegistryRecord] = [
        *with_seeds(state, local, name, now),
        ProfilePointer(kind="active", name=name, version=candidate.version, at=now, author=who, note=note),
        ProfilePointer(kind="shadow", name=name, version=None, at=now, author=who, note="promoted"),
    ]
    asyncio.run(write_records(settings, records))
    print(f"promoted {name} v{candidate.version} (was v{current.version if current else '-'})")
    return 0


def shadow_summaries(reports: list[DriftReport | ShadowReport], name: str) -> list[ShadowSummary]:
    """The workers' comparisons of `name`, added up per (active version, shadow version)."""
    merged: dict[tuple[str, str], ShadowSummary] = {}
    for report in reports:
        if not isinstance(report, ShadowReport):
            continue
        for run in report.runs:
            if run.profile != name:
                continue
            key = (run.active_version, run.shadow_version)
            if key in merged:
                merged[key].merge(run)
            else:
                merged[key] = run.model_copy(deep=True)
    return sorted(merged.values(), key=lambda r: (r.shadow_version, r.active_version))


def cmd_shadow_report(settings: MappingSettings, name: str, as_json: bool) -> int:
    state = asyncio.run(read_registry(settings))
    running = state.shadow_version(name)
    runs = shadow_summaries(asyncio.run(read_reports(settings)), name)
    if running is not None:
        runs = [r for r in runs if r.shadow_version == running.version]
    if as_json:
        body = {
            "profile": name,
            "shadow": running.version if running else None,
            "runs": [r.model_dump() | {"paths": [p.model_dump() for p in r.paths.values()]} for r in runs],
        }
        sys.stdout.write(dumps(body).decode() + "\n")
        return 0
    if running is None:
        print(f"{name}: no shadow run now" + ("; earlier runs:" if runs else ""))
    if not runs:
        print(f"{name}: no comparison reported yet" if running else "")
        return 0
    for run in runs:
        print(
            f"{name}: shadow v{run.shadow_version} against active v{run.active_version}: "
            f"{run.compared} compared, {run.identical} identical, {run.differing} differing"
        )
        for diff in sorted(run.paths.values(), key=lambda d: (-d.count, d.path)):
            examples = "; ".join(f"{e.active!r} -> {e.shadow!r}" for e in diff.examples)
            print(f"  {diff.path:48} {diff.count:6}  {examples}")
    return 0


async def recent_postbacks(settings: MappingSettings, limit: int) -> list[RawPostback]:
    """The newest `limit` raw postbacks (spread over the partitions), oldest first; undecodable skipped."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topic(topics.RAW)
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    out: list[RawPostback] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        share = max(1, limit // len(tps))
        behind = set()
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - share))
            if ends[tp] > starts[tp]:
                behind.add(tp)
        while True:  # to the end offsets, then on until quiet (see `app.kafka.read_records`)
            batch = await consumer.getmany(*tps, timeout_ms=2000 if behind else 300)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    with contextlib.suppress(ValueError):
                        out.append(RawPostback.decode(record.value))
                if records and records[-1].offset + 1 >= ends[tp]:
                    behind.discard(tp)
    finally:
        await consumer.stop()
    return sorted(out, key=lambda r: r.received_at)[-limit:]


def version_text(state: RegistryState, local: dict[str, LocalProfile], name: str, version: str) -> str | None:
    """A version's YAML: the registry's, else the local file's when it has that version."""
    published = state.versions.get(name, {}).get(version)
    if published is not None:
        return published.yaml
    seeded = local.get(name)
    return seeded.text if seeded and seeded.profile.version == version else None


def cmd_diff(settings: MappingSettings, name: str, v1: str, v2: str, sample: int, as_json: bool) -> int:
    """The YAML difference of two versions, and how their outputs differ on recent real postbacks."""
    import difflib

    state = asyncio.run(read_registry(settings))
    local = local_profiles(settings.kseg_mapping_dir)
    texts = {v: version_text(state, local, name, v) for v in (v1, v2)}
    missing = [v for v, t in texts.items() if t is None]
    if missing:
        known = ", ".join(sorted(state.versions.get(name, {}))) or "none"
        print(f"{name} has no version {missing[0]!r} (registry versions: {known})", file=sys.stderr)
        return 1
    profiles = {v: parse_profile_text(t or "", f"{name} v{v}")[0] for v, t in texts.items()}
    first, second = profiles[v1], profiles[v2]
    if first is None or second is None:
        print(f"{name}: a version does not load", file=sys.stderr)
        return 1
    lines = difflib.unified_diff(
        (texts[v1] or "").splitlines(keepends=True),
        (texts[v2] or "").splitlines(keepends=True),
        f"{name} v{v1}",
        f"{name} v{v2}",
    )
    yaml_diff = "".join(lines)
    config = StepConfig(settings, ProfileRegistry({}))
    old, new = config.configure(first), config.configure(second)
    summary = ShadowSummary(profile=name, active_version=v1, shadow_version=v2)
    for raw in asyncio.run(recent_postbacks(settings, sample)):
        if (raw.profile or settings.kseg_default_profile) != name:
            continue
        key = device_key_of(raw.params) or ""
        a = process_postback(raw, AttributionProfile(), key, old, raw.received_at)
        b = process_postback(raw, AttributionProfile(), key, new, raw.received_at)
        summary.add(raw.event_id, differences(outputs_of(a), outputs_of(b)), first, second)
    if as_json:
        body = summary.model_dump() | {
            "paths": [d.model_dump() for d in summary.paths.values()],
            "yaml_diff": yaml_diff,
        }
        sys.stdout.write(dumps(body).decode() + "\n")
        return 0
    print(yaml_diff or f"(v{v1} and v{v2} have the same text)")
    print(
        f"on the newest {summary.compared} postback(s) of {name} (each as a first-seen device): "
        f"{summary.identical} identical, {summary.differing} differing"
    )
    for diff in sorted(summary.paths.values(), key=lambda d: (-d.count, d.path)):
        examples = "; ".join(f"{e.active!r} -> {e.shadow!r}" for e in diff.examples)
        print(f"  {diff.path:48} {diff.count:6}  {examples}")
    return 0


def add_parsers(msub: Any, runner: Any) -> None:
    """`kseg mapping publish|history|rollback`; `runner(command, args)` supplies the settings (and checks
    Kafka is set)."""
    text = (
        "validate a profile, run the packaged golden postbacks through it, and make it the active version "
        "on every worker (refused, changing nothing, on any problem)"
    )
    p = msub.add_parser("publish", help=text, description=text)
    p.add_argument("file", help="a mapping profile (YAML)")
    p.add_argument("--note", default="", help="why this version (shown by history)")
    p.add_argument("--author", help="who publishes (default: the OS user)")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_publish(s, a.file, a.note, a.author), args))
    text = "a profile's versions: time, author, note, content hash, which is active"
    p = msub.add_parser("history", help=text, description=text)
    p.add_argument("name", help="profile name")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_history(s, a.name), args))
    text = "make an earlier published version of a profile active again on every worker"
    p = msub.add_parser("rollback", help=text, description=text)
    p.add_argument("name", help="profile name")
    p.add_argument("--to", required=True, metavar="VERSION", help="the version to make active")
    p.add_argument("--author", help="who rolls back (default: the OS user)")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_rollback(s, a.name, a.to, a.author), args))
    text = (
        "run a candidate profile next to the active version on live postbacks, sending nothing "
        "(--stop NAME ends it; shadow-report shows the difference, promote makes it active)"
    )
    p = msub.add_parser("shadow", help=text, description=text)
    p.add_argument("file", nargs="?", help="the candidate profile (YAML)")
    p.add_argument("--stop", metavar="NAME", help="end the shadow run of profile NAME")
    p.add_argument("--note", default="", help="why this candidate (shown by history)")
    p.add_argument("--author", help="who starts it (default: the OS user)")

    def shadow(a: Any, s: Any) -> int:
        if a.stop:
            return cmd_shadow_stop(s, a.stop, a.author)
        if not a.file:
            raise SystemExit("kseg mapping shadow: give a profile FILE, or --stop NAME")
        return cmd_shadow(s, a.file, a.note, a.author)

    p.set_defaults(func=lambda args: runner(shadow, args))
    text = "how the shadow candidate's outputs differ from the active version's: counts and examples per path"
    p = msub.add_parser("shadow-report", help=text, description=text)
    p.add_argument("name", help="profile name")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_shadow_report(s, a.name, a.json), args))
    text = "make a profile's shadow candidate the active version on every worker"
    p = msub.add_parser("promote", help=text, description=text)
    p.add_argument("name", help="profile name")
    p.add_argument("--author", help="who promotes (default: the OS user)")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_promote(s, a.name, a.author), args))
    text = (
        "the YAML difference of two versions of a profile, and how their outputs differ on a sample of "
        "recent real postbacks from the raw topic"
    )
    p = msub.add_parser("diff", help=text, description=text)
    p.add_argument("name", help="profile name")
    p.add_argument("v1", help="a version")
    p.add_argument("v2", help="another version")
    p.add_argument("--sample", type=int, default=200, help="newest raw postbacks to map (default 200)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(
        func=lambda args: runner(lambda a, s: cmd_diff(s, a.name, a.v1, a.v2, a.sample, a.json), args)
    )
    text = (
        "keys, event names and unparseable values live postbacks carry that their profile does not expect, "
        "added up over every worker (counts, first and last seen, a redacted example)"
    )
    p = msub.add_parser("drift", help=text, description=text)
    p.add_argument("name", nargs="?", help="only this profile")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=lambda args: runner(lambda a, s: cmd_drift(s, a.name, a.json), args))
