"""The errors every HTTP sink raises the same way: no HTTP answer, a stopped sink, a configuration refused.

The sinks' retry loops, the agents that hold a batch on a configuration error, and the digest client read
these; each sink only words its own `SinkConfigError` (which setting to fix).
"""

from __future__ import annotations


class TransportError(Exception):
    """No HTTP status: timeout or connection failure. Always retryable."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {type(cause).__name__}: {cause}")
        self.kind = kind  # "timeout" | "connection_error"
        self.cause = cause


class SinkStopped(Exception):
    """The sink was stopped while a delivery was waiting; the caller must not ack."""


class SinkConfigError(RuntimeError):
    """The API refused the sink's configuration (key refused, endpoint not found), never the data.

    The sink must stop and the caller must not ack offsets; nothing is dead-lettered. `hint` says in one
    line what to fix, for readiness and logs.
    """

    def __init__(self, status: int, hint: str, body: str = "") -> None:
        super().__init__(f"{hint}; offsets were not committed. {body[:200]}".rstrip())
        self.status = status
        self.hint = hint
        self.body = body
