"""Where a process's CPU goes: py-spy raw samples folded into shares per component (kseg, faust, aiokafka...).

Why: the bench's throughput figures say *how fast*; this says *why*, in the same terms as the breakdown in
bench/README.md, so a refreshed profile can be compared with the old one. Each sample is charged to the
innermost frame that belongs to a known component (a sample inside `Topic.send` called from kseg's agent
counts as the produce path; a sample in pydantic called from kseg's mapping counts as kseg).

    py-spy record --format raw --full-filenames --nonblocking --pid PID -o worker.txt  # while it drains
    python -m bench.profile_breakdown worker.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

#: py-spy's frame text: "function (path/to/file.py:123)" (the line is absent with --nolineno).
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")

Rule = tuple[str, Callable[[str, str], bool]]


def _under(*parts: str) -> Callable[[str, str], bool]:
    return lambda func, path: any(part in path for part in parts)


def _produce(func: str, path: str) -> bool:
    if "aiokafka/producer/" in path or "faust/transport/producer" in path or "faust/topics.py" in path:
        return True
    if "faust/transport/drivers/aiokafka" in path:
        return any(word in func for word in ("send", "produce", "flush", "Producer"))
    return "aiokafka/record/" in path and "Builder" in func


def _consume(func: str, path: str) -> bool:
    return (
        "aiokafka/consumer/" in path
        or "faust/transport/consumer" in path
        or "faust/transport/drivers/aiokafka" in path
        or "faust/transport/conductor" in path
        or "aiokafka/record/" in path
    )


#: First match from the innermost frame outwards wins; order matters only between rules that both match a
#: frame (none overlap except the aiokafka driver file, split by function name).
RULES: tuple[Rule, ...] = (
    (
        "kseg per-event code (pipeline, mapping, identity)",
        _under(
            "/app/pipeline/",
            "/app/mapping/",
            "/app/identity/",
            "/app/records.py",
            "/app/ids.py",
            "/app/attribution.py",
            "/app/lifecycle/",
            "/app/audiences/",
        ),
    ),
    ("kseg Segment sink", _under("/app/sinks/")),
    ("pydantic / JSON", _under("pydantic", "orjson", "/json/")),
    ("faust+aiokafka produce path", _produce),
    ("faust+aiokafka consume path (fetcher)", _consume),
    ("tables: changelog, RocksDB", _under("faust/tables/", "faust/stores/", "rocksdict")),
    ("faust sensors and monitor", _under("faust/sensors/", "prometheus_client")),
    (
        "faust stream/agent machinery",
        _under(
            "faust/streams",
            "faust/agents/",
            "faust/channels",
            "faust/events",
            "faust/app/",
            "faust/utils/",
            "/mode/",
        ),
    ),
    ("kafka client network (conn, protocol)", _under("aiokafka/", "kafka/")),
    ("HTTP (aiohttp, faust web)", _under("aiohttp", "faust/web/", "yarl", "multidict")),
    ("logging", _under("/logging/")),
    (
        "socket syscalls (send, recv, epoll, loop wake-ups)",
        _under("asyncio/selector_events.py", "/selectors.py"),
    ),
    ("asyncio scheduling (tasks, futures, loop)", _under("/asyncio/", "uvloop")),
    ("kseg other (worker, runtime)", _under("/app/")),
    ("baseline agent code", _under("/bench/baselines/")),
)
OTHER = "other"


def classify(stack: list[str]) -> str:
    """The component charged for one sample (frames root first, as py-spy writes them)."""
    for frame in reversed(stack):
        match = FRAME.match(frame.strip())
        func, path = (match["func"], match["file"]) if match else (frame, "")
        for name, rule in RULES:
            if rule(func, path):
                return name
    return OTHER


def parse_raw(lines: Iterable[str]) -> Counter[str]:
    """py-spy `--format raw` (collapsed stacks: "frame;frame;... COUNT") → samples per component."""
    shares: Counter[str] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame for frame in stack_text.split(";") if frame]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        shares[classify(frames)] += int(count)
    return shares


def percent_shares(samples: Counter[str]) -> dict[str, float]:
    """Percent of the samples per component, largest first, plus the sample count ({} for none)."""
    total = sum(samples.values())
    if not total:
        return {}
    out = {name: round(100 * count / total, 1) for name, count in samples.most_common()}
    out["samples"] = float(total)
    return out


def breakdown(path: Path) -> dict[str, float]:
    """Percent of non-idle samples per component, largest first, plus the sample count."""
    return percent_shares(parse_raw(path.read_text().splitlines()))


def print_shares(path: Path, shares: dict[str, float]) -> None:
    """One profile's shares as the command line shows them (this module's and bench.broker_profile's)."""
    print(f"{path}:")
    for name, share in shares.items():
        print(f"  {share:7.1f}{'' if name == 'samples' else ' %'}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("raw", nargs="+", type=Path, help="py-spy --format raw output files")
    args = parser.parse_args(argv)
    for path in args.raw:
        print_shares(path, breakdown(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
