"""Console access: tokens with a role, signed session cookies, CSRF tokens tied to the session.

A token (from `KSEG_CONSOLE_TOKENS`) is exchanged once on the login page for a session cookie that
carries the role, a fingerprint of the token (so removing a token ends its sessions) and an expiry, signed
with HMAC-SHA256. The cookie is HttpOnly and SameSite=Strict; every state-changing form also carries a CSRF
token derived from the session, so a page on another site can neither read nor forge one. The JSON
endpoints take the same tokens as `Authorization: Bearer` (a header no browser sends by itself).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "kseg_console"
LOGIN_COOKIE = "kseg_console_login"
#: Seconds a session lasts before the token must be given again.
SESSION_TTL = 12 * 3600


@dataclass(frozen=True)
class Principal:
    """Who is asking: a role and the fingerprint of the token that proved it (never the token)."""

    role: str
    token_id: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def fingerprint(token: str) -> str:
    """A short, non-reversible name of a token: what sessions and logs carry instead of it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Auth:
    """Checks tokens, signs and verifies session cookies, makes and checks CSRF tokens."""

    def __init__(self, tokens: dict[str, str], secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._tokens = {fingerprint(t): (t.encode(), role) for t, role in tokens.items()}
        self._secret = secret
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def by_token(self, token: str) -> Principal | None:
        """The principal a token proves, compared in constant time against every configured token."""
        given = token.encode()
        found: Principal | None = None
        for token_id, (known, role) in self._tokens.items():
            if hmac.compare_digest(given, known):
                found = Principal(role, token_id)
        return found

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())

    def session(self, who: Principal) -> str:
        """A cookie value: `role.token_id.expiry.signature`."""
        body = f"{who.role}.{who.token_id}.{int(self._clock()) + SESSION_TTL}"
        return f"{body}.{self._sign(body)}"

    def by_session(self, value: str) -> Principal | None:
        """The principal of a valid, unexpired session whose token is still configured, else None."""
        parts = value.split(".")
        if len(parts) != 4:
            return None
        role, token_id, expiry, signature = parts
        body = f"{role}.{token_id}.{expiry}"
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        if not expiry.isdigit() or int(expiry) < self._clock():
            return None
        known = self._tokens.get(token_id)
        if known is None or known[1] != role:
            return None
        return Principal(role, token_id)

    def csrf(self, session: str) -> str:
        """The CSRF token of a session: forms carry it, and only a page of this session can read it."""
        return self._sign("csrf:" + session)

    def check_csrf(self, session: str, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf(session).encode())

    def login_csrf(self, nonce: str) -> str:
        """The login form's token: bound to a random pre-session cookie (double submit, signed)."""
        return self._sign("login:" + nonce)

    def check_login_csrf(self, nonce: str, given: str) -> bool:
        return (
            bool(nonce)
            and bool(given)
            and hmac.compare_digest(given.encode(), self.login_csrf(nonce).encode())
        )
