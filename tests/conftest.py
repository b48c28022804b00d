"""Session-wide test rules for pytest-xdist (`tests/parallel.py` says why): tests marked `exclusive` (and
those on a broker of their own) run first and alone, back to back, tests marked `long` start next, and
`--dist loadgroup` keeps module groups together. Without xdist nothing changes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.parallel import ModuleGroupScheduling, exclusive_first, lock_paths, run_slot

#: Fixtures whose tests are exclusive without a marker: `own_broker` exists for group-timing tests.
EXCLUSIVE_FIXTURES = frozenset({"own_broker"})


def is_exclusive(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("exclusive") is not None or bool(EXCLUSIVE_FIXTURES & fixtures)


def is_long(item: pytest.Item) -> bool:
    return item.get_closest_marker("long") is not None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleGroupScheduling | None:
    return ModuleGroupScheduling(config, log) if config.getoption("dist") == "loadgroup" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        exclusive_first(items, is_exclusive, is_long)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        yield
        return
    turnstile, run, waiting = lock_paths(item.config.option.basetemp, run_id)
    with run_slot(turnstile, run, exclusive=is_exclusive(item), waiting=waiting):
        yield
