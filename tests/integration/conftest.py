"""Fixtures for integration tests: one real broker per session, a fresh kseg deployment per test.

Under pytest-xdist "session" means one worker process: each worker gets a broker, ports
(`tests.parallel.free_port`) and temporary directories of its own, so tests on different workers share
nothing but the CPU."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.broker.embedded import EmbeddedBroker
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline
from tests.parallel import free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers: the embedded Tansu broker, or Apache Kafka in Docker with KSEG_TEST_BROKER=kafka."""
    if os.environ.get("KSEG_TEST_BROKER") == "kafka":
        if not shutil.which("docker"):
            pytest.fail(
                "KSEG_TEST_BROKER=kafka needs Docker (testcontainers); unset it to use the embedded broker"
            )
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            os.environ["KSEG_TEST_EMBEDDED"] = "false"
            yield kafka.get_bootstrap_server()
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as embedded:
        yield embedded.bootstrap_servers


@pytest.fixture
async def segment() -> AsyncIterator[SegmentEmulator]:
    async with SegmentEmulator(write_key="test-write-key") as emulator:
        yield emulator


@pytest.fixture
def own_broker(broker: str, tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (the session's Apache Kafka under KSEG_TEST_BROKER=kafka): for
    two-worker rebalance tests, whose group timing must not depend on the consumer groups that earlier
    tests left on the shared embedded broker (seen once in a full run: a perpetual re-join loop)."""
    if os.environ.get("KSEG_TEST_BROKER") == "kafka":
        yield broker
        return
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "own-tansu.log") as embedded:
        yield embedded.bootstrap_servers


def _pipelines(bootstrap: str, tmp_path: Path, created: list[Pipeline]) -> Any:
    def factory(segment_url: str | None, **env: str) -> Pipeline:
        data = tmp_path / f"kseg-{len(created)}"
        data.mkdir()
        pipeline = Pipeline(bootstrap, data, segment_url, **env)
        created.append(pipeline)
        return pipeline

    return factory


async def _stop_and_check_logs(created: list[Pipeline]) -> None:
    """Stop every pipeline, then fail the test if any process logged a secret it was configured with."""
    for pipeline in created:
        await pipeline.stop()
    leaks = [leak for pipeline in created for leak in pipeline.secrets_in_logs()]
    assert not leaks, f"secrets in process logs: {leaks}"


@pytest.fixture
async def make_pipeline(broker: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: `make_pipeline(segment_url, **env)` → a Pipeline (`await p.start()` runs it)."""
    created: list[Pipeline] = []
    yield _pipelines(broker, tmp_path, created)
    await _stop_and_check_logs(created)


@pytest.fixture
async def make_isolated_pipeline(own_broker: str, tmp_path: Path) -> AsyncIterator[Any]:
    """`make_pipeline` on the test's own broker (`own_broker`)."""
    created: list[Pipeline] = []
    yield _pipelines(own_broker, tmp_path, created)
    await _stop_and_check_logs(created)


@pytest.fixture
def dump_logs(request: pytest.FixtureRequest) -> Iterator[list[Pipeline]]:
    """Register pipelines whose logs should be printed if the test fails."""
    pipelines: list[Pipeline] = []
    yield pipelines
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for p in pipelines:
            for name in p.logs:
                print(f"----- {name} log -----\n{p.tail(name, 120)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
