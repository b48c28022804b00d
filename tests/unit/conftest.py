"""Unit-test fixtures shared by the receiver's in-process HTTP tests: one embedded broker per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.broker.embedded import EmbeddedBroker
from tests.parallel import free_port


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A real embedded Kafka broker (Tansu) for the tests of one module."""
    with EmbeddedBroker(port=free_port()) as b:
        yield b
