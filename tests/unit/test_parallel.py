"""The isolation `make test` relies on to run tests on several xdist workers (tests/parallel.py)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.parallel import (
    KSEG_RUN_PORTS,
    POOL_START,
    bindable,
    ephemeral_start,
    exclusive_first,
    free_port,
    kseg_run_ports,
    module_group,
    nobody_holds,
    run_slot,
    worker_block,
)


def test_worker_blocks_are_disjoint_and_below_the_ephemeral_range() -> None:
    stop = ephemeral_start()
    blocks = [worker_block(f"gw{i}", 6, stop) for i in range(6)]
    ports = [port for block in blocks for port in block]
    assert len(ports) == len(set(ports))
    assert max(ports) < stop
    assert worker_block(None, 1, stop) == range(POOL_START, stop)  # not under xdist: the whole pool


def test_too_many_workers_for_the_pool_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="too few"):
        worker_block("gw0", 1000, 32_768)


def test_free_port_is_outside_the_range_the_kernel_hands_out_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert all(port < ephemeral_start() and bindable(port) for port in ports)


def test_a_port_in_use_is_not_bindable() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not bindable(port)
    assert bindable(port)


def _holder(turnstile: Path, run: Path, order: list[str], waiting: Path | None = None) -> Any:
    """A thread body: take a slot, note when it is in and out (holding it until `until` is set)."""

    def hold(name: str, exclusive: bool, until: threading.Event | None = None) -> None:
        with run_slot(turnstile, run, exclusive=exclusive, waiting=waiting, poll=0.05):
            order.append(f"{name} in")
            if until is not None:
                assert until.wait(10)
            order.append(f"{name} out")

    return hold


def test_an_exclusive_slot_waits_for_running_tests_and_goes_before_later_ones(tmp_path: Path) -> None:
    turnstile, run = tmp_path / "turnstile", tmp_path / "run"
    order: list[str] = []
    release_first = threading.Event()

    hold = _holder(turnstile, run, order)

    first = threading.Thread(target=hold, args=("shared-1", False, release_first))
    first.start()
    while order != ["shared-1 in"]:
        time.sleep(0.01)
    alone = threading.Thread(target=hold, args=("exclusive", True))
    alone.start()
    while nobody_holds(turnstile):  # the exclusive test now waits, holding the turnstile
        time.sleep(0.01)
    later = threading.Thread(target=hold, args=("shared-2", False))
    later.start()
    time.sleep(0.3)
    assert order == ["shared-1 in"]  # neither may start while the first test runs
    release_first.set()
    for thread in (first, alone, later):
        thread.join(10)
    assert order == [
        *("shared-1 in", "shared-1 out"),
        *("exclusive in", "exclusive out"),
        *("shared-2 in", "shared-2 out"),
    ]


def test_exclusive_tests_run_back_to_back_before_ordinary_ones_that_waited_longer(tmp_path: Path) -> None:
    turnstile, run, waiting = tmp_path / "turnstile", tmp_path / "run", tmp_path / "waiting"
    order: list[str] = []
    release_first = threading.Event()

    hold = _holder(turnstile, run, order, waiting)

    first = threading.Thread(target=hold, args=("shared-1", False, release_first))
    first.start()
    while order != ["shared-1 in"]:
        time.sleep(0.01)
    threads = [first]
    for name, exclusive in (("exclusive-1", True), ("shared-2", False), ("exclusive-2", True)):
        threads.append(threading.Thread(target=hold, args=(name, exclusive)))
        threads[-1].start()
        time.sleep(0.3)  # each waits in turn: the shared test before the second exclusive one
    assert order == ["shared-1 in"]
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == [
        *("shared-1 in", "shared-1 out"),
        *("exclusive-1 in", "exclusive-1 out"),
        *("exclusive-2 in", "exclusive-2 out"),
        *("shared-2 in", "shared-2 out"),
    ]


def test_shared_slots_run_together(tmp_path: Path) -> None:
    turnstile, run = tmp_path / "turnstile", tmp_path / "run"
    with run_slot(turnstile, run, exclusive=False), run_slot(turnstile, run, exclusive=False):
        assert nobody_holds(turnstile)


def test_listed_modules_and_unit_modules_go_to_one_worker_other_tests_one_by_one() -> None:
    wheel = "tests/integration/test_installed_wheel.py"
    assert module_group(f"{wheel}::test_a") == module_group(f"{wheel}::test_b") == wheel
    assert module_group("tests/unit/test_cli.py::test_x[1]") == "tests/unit/test_cli.py"
    assert module_group("tests/integration/test_delivery.py::test_a") is None


def test_exclusive_tests_go_first_in_collection_order() -> None:
    items = ["a", "x1", "b", "x2", "c"]
    exclusive_first(items, lambda name: name.startswith("x"))  # type: ignore[arg-type]
    assert items == ["x1", "x2", "a", "b", "c"]


def test_long_tests_go_right_after_the_exclusive_ones() -> None:
    items = ["a", "L1", "x1", "b", "L2", "x2", "c"]
    exclusive_first(
        items,
        lambda name: name.startswith("x"),  # type: ignore[arg-type]
        lambda name: name.startswith("L"),  # type: ignore[arg-type]
    )
    assert items == ["x1", "x2", "L1", "L2", "a", "b", "c"]


def test_kseg_run_ports_name_every_port_kseg_run_binds_by_default() -> None:
    from app.config import Settings

    defaults = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if name.endswith("_port") and field.default
    }
    assert set(KSEG_RUN_PORTS) == defaults
    assert len(set(kseg_run_ports().values())) == len(KSEG_RUN_PORTS)
