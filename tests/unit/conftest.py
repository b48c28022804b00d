"""Unit-test fixtures: no `.env` from the working directory, and one embedded broker per module for the
receiver's in-process HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from tests.parallel import free_port


@pytest.fixture(autouse=True)
def _no_dotenv_in_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Settings()` reads `.env` from the working directory: a developer's own file (a real write key,
    other ports) must not change what a unit test sees. A test that means to read one passes
    `_env_file=` explicitly."""
    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A real embedded Kafka broker (Tansu) for the tests of one module."""
    with EmbeddedBroker(port=free_port()) as b:
        yield b
