"""The lock files pin what pyproject.toml asks for: a dependency added or re-ranged without `make lock` fails.

requirements/test-lock.txt is what `make install` (so CI) installs, requirements/lock.txt what the image
installs; both come from `make lock` (pip-compile).
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s#;]+)")


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    pins = {}
    for line in lines:
        match = _PIN.match(line)
        assert match, f"{name}: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _unmet(requirements: list[str], pins: dict[str, str]) -> list[str]:
    unmet = []
    for text in requirements:
        req = Requirement(text)
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{text} (locked: {version})")
    return unmet


def test_the_image_lock_pins_every_runtime_dependency() -> None:
    assert not _unmet(PROJECT["dependencies"], _pins("lock.txt")), "run `make lock`"


def test_the_ci_lock_pins_the_runtime_and_test_dependencies() -> None:
    wanted = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    assert not _unmet(wanted, _pins("test-lock.txt")), "run `make lock`"


def test_the_image_runs_the_versions_ci_tested() -> None:
    image, ci = _pins("lock.txt"), _pins("test-lock.txt")
    assert {name: (version, ci.get(name)) for name, version in image.items() if ci.get(name) != version} == {}


def test_the_locks_name_no_index_or_local_path() -> None:
    """The locks are shared: a machine's own index URL, wheel directory or checkout path stays out."""
    for name in ("lock.txt", "test-lock.txt"):
        text = (ROOT / "requirements" / name).read_text()
        assert not re.search(r"--(extra-)?index-url|--find-links|file:|\s/[a-z]", text), name
