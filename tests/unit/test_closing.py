"""The worker's `Closing` service closes every registered client when it stops, even if one fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from app.runtime.closing import Closing


async def test_every_close_runs_in_reverse_order_even_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    def closer(name: str, fail: bool = False) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            closed.append(name)
            if fail:
                raise RuntimeError(f"{name} broke")

        return close

    service = Closing()
    service.add(closer("segment"))
    service.add(closer("kochava", fail=True))
    service.add(closer("digest"))
    await service.start()
    assert closed == []
    await service.stop()
    assert closed == ["digest", "kochava", "segment"]
    assert "kochava broke" in caplog.text
