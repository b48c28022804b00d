"""The console's access rules through its real aiohttp app: login, signed cookies, CSRF, roles, Bearer
tokens on the JSON endpoints, security headers, and escaping of hostile values."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from app.console import studio
from app.console.auth import SESSION_COOKIE, Auth, Principal
from app.console.letters import Letter
from app.console.server import Console, create_app
from app.records import DeadLetter
from app.sections import ConsoleSettings

VIEWER, OPERATOR = "viewer-token-1", "operator-token-1"
HOSTILE = '</td><script>alert("x")</script><img src=x onerror=alert(1)>'


def letters() -> list[Letter]:
    bad = DeadLetter(
        stage="mapping", reason="invalid_revenue", error=HOSTILE, event_id="ev1",
        payload={"kind": "postback", "params": {"kochava_device_id": "KI1", "event_name": HOSTILE}},
    )  # fmt: skip
    return [Letter("0-5", bad)]


class Replays:
    """The replay the root would pass (`kseg dlq replay`'s), recording what it was asked to replay."""

    def __init__(self) -> None:
        self.calls: list[list[DeadLetter]] = []

    async def __call__(self, items: list[DeadLetter]) -> tuple[int, int]:
        self.calls.append(items)
        return len(items), 0


@pytest.fixture
async def console() -> AsyncIterator[tuple[TestClient[Any, Any], Replays]]:
    settings = ConsoleSettings(kseg_console_tokens=SecretStr(f"viewer={VIEWER},operator={OPERATOR}"))
    replays = Replays()

    async def no_lag() -> list[dict[str, Any]]:
        return []

    async def read() -> list[Letter]:
        return letters()

    async def versions() -> list[studio.Version]:
        return studio.local_versions(settings)

    app = create_app(
        Console(
            settings=settings,
            auth=Auth(settings.console_tokens, b"k" * 32),
            replay=replays,
            timeline=None,
            versions=versions,
            lag=no_lag,
            read_letters=read,
        ),
        refresh=False,
    )
    async with TestClient(TestServer(app)) as client:
        yield client, replays


async def login(client: TestClient[Any, Any], token: str) -> Any:
    page = await client.get("/login")
    text = await page.text()
    csrf = re.search(r'name="login_csrf" value="([^"]+)"', text)
    assert csrf
    return await client.post(
        "/login",
        data={"token": token, "login_csrf": csrf.group(1), "next": "/dead-letters"},
        allow_redirects=False,
    )


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


async def test_unauthenticated_pages_get_the_login_page_and_json_gets_401(console: Any) -> None:
    client, _ = console
    page = await client.get("/dead-letters")
    assert page.status == 401 and 'id="login"' in await page.text()
    api = await client.get("/api/dead-letters")
    assert api.status == 401 and (await api.json())["error"] == "unauthorized"
    bad = await client.get("/api/dead-letters", headers={"Authorization": "Bearer nope-nope-nope"})
    assert bad.status == 401


async def test_every_answer_carries_a_strict_csp(console: Any) -> None:
    client, _ = console
    for path in ("/login", "/dead-letters", "/api/dead-letters", "/healthz"):
        response = await client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp  # no script may run at all
        assert "frame-ancestors 'none'" in csp and response.headers["X-Content-Type-Options"] == "nosniff"


async def test_login_sets_a_signed_httponly_strict_cookie(console: Any) -> None:
    client, _ = console
    wrong = await login(client, "not-a-token")
    assert wrong.status == 401 and "Unknown token" in await wrong.text()
    done = await login(client, VIEWER)
    assert done.status == 303 and done.headers["Location"] == "/dead-letters"
    cookie = done.headers["Set-Cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert VIEWER not in cookie  # the token itself never travels back
    page = await client.get("/dead-letters")
    assert page.status == 200 and 'id="role">viewer<' in await page.text()


async def test_login_refuses_a_form_without_its_csrf_token(console: Any) -> None:
    client, _ = console
    await client.get("/login")
    forged = await client.post("/login", data={"token": OPERATOR, "login_csrf": "x"}, allow_redirects=False)
    assert forged.status == 403 and f"{SESSION_COOKIE}=" not in forged.headers.get("Set-Cookie", "")


async def test_login_never_redirects_to_another_host(console: Any) -> None:
    client, _ = console
    page = await client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in await page.text()


async def test_a_tampered_or_forged_cookie_is_not_a_session() -> None:
    auth = Auth({OPERATOR: "operator", VIEWER: "viewer"}, b"s" * 32)
    viewer = auth.by_token(VIEWER)
    assert viewer == Principal("viewer", viewer.token_id if viewer else "")
    cookie = auth.session(viewer)  # type: ignore[arg-type]
    assert auth.by_session(cookie) == viewer
    assert auth.by_session(cookie.replace("viewer.", "operator.", 1)) is None  # role changed: signature fails
    assert Auth({OPERATOR: "operator", VIEWER: "viewer"}, b"t" * 32).by_session(cookie) is None  # other key
    assert Auth({OPERATOR: "operator"}, b"s" * 32).by_session(cookie) is None  # token removed: session ends
    late = Auth({VIEWER: "viewer"}, b"s" * 32, clock=lambda: 4e9)
    assert late.by_session(cookie) is None  # expired


async def test_replay_needs_the_operator_role_and_the_csrf_token(console: Any) -> None:
    client, replays = console
    await login(client, VIEWER)
    page = await client.get("/dead-letters")
    viewer_csrf = csrf_of(await page.text())
    refused = await client.post("/dead-letters/replay", data={"id": "0-5", "csrf": viewer_csrf})
    assert refused.status == 403 and "operator role" in await refused.text()
    assert replays.calls == []

    await login(client, OPERATOR)
    page = await client.get("/dead-letters")
    text = await page.text()
    assert 'id="replay"' in text
    no_csrf = await client.post("/dead-letters/replay", data={"id": "0-5"})
    assert no_csrf.status == 403 and replays.calls == []
    wrong = await client.post("/dead-letters/replay", data={"id": "0-5", "csrf": viewer_csrf})
    assert wrong.status == 403 and replays.calls == []  # another session's token
    done = await client.post("/dead-letters/replay", data={"id": "0-5", "csrf": csrf_of(text)})
    assert done.status == 200 and "replayed 1 of 1" in await done.text()
    assert [[x.event_id for x in call] for call in replays.calls] == [["ev1"]]


async def test_bearer_tokens_on_the_json_endpoints(console: Any) -> None:
    client, replays = console
    listed = await client.get("/api/dead-letters", headers={"Authorization": f"Bearer {VIEWER}"})
    assert listed.status == 200 and [x["id"] for x in (await listed.json())["dead_letters"]] == ["0-5"]
    viewer = await client.post(
        "/api/dead-letters/replay", json={"ids": ["0-5"]}, headers={"Authorization": f"Bearer {VIEWER}"}
    )
    assert viewer.status == 403 and (await viewer.json())["error"] == "forbidden"
    operator = await client.post(
        "/api/dead-letters/replay", json={"ids": ["0-5"]}, headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert operator.status == 200 and (await operator.json())["replayed"] == 1
    unknown = await client.post(
        "/api/dead-letters/replay", json={"ids": ["9-9"]}, headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert unknown.status == 404 and len(replays.calls) == 1
    # A page does not take the Bearer token: a browser never sends one by itself, cookies only there.
    page = await client.get("/dead-letters", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert page.status == 401


async def test_hostile_values_are_shown_as_text(console: Any) -> None:
    client, _ = console
    await login(client, OPERATOR)
    listing = await (await client.get("/dead-letters")).text()
    one = await (await client.get("/dead-letters/0-5")).text()
    for text in (listing, one):
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(" in text
    page = await client.get("/studio")
    posted = await client.post(
        "/studio",
        data={"csrf": csrf_of(await page.text()), "input": f"event_name={HOSTILE}&kochava_device_id=K1"},
    )
    text = await posted.text()
    assert posted.status == 200 and "<script>alert" not in text and "&lt;/td&gt;&lt;script&gt;" in text


async def test_the_studio_reports_candidate_problems_with_their_line(console: Any) -> None:
    client, _ = console
    await login(client, VIEWER)
    page = await client.get("/studio")
    text = await page.text()
    candidate = "name: broken\nversion: '1'\nevent_names:\n  Purchase: 12\n  Purchase: Order\n"
    posted = await client.post(
        "/api/studio",
        json={"candidate": candidate, "input": "event_name=Purchase&kochava_device_id=K1"},
        headers={"Authorization": f"Bearer {VIEWER}"},
    )
    result = await posted.json()
    assert result["problems"] and all(p["line"] >= 1 for p in result["problems"])
    assert any(p["line"] in (4, 5) for p in result["problems"]), result["problems"]
    assert "left" in result and "right" not in result
    assert 'id="candidate"' in text


def test_a_timeline_with_hostile_values_renders_them_as_text() -> None:
    from app.console.server import render_timeline

    page = render_timeline(
        {
            "query": HOSTILE,
            "matched_as": "kochava_device_id",
            "devices": [{"device_key": HOSTILE}],
            "events": [
                {
                    "event_id": HOSTILE,
                    "event_name": HOSTILE,
                    "params": {"campaign_name": HOSTILE},
                    "segment_calls": [{"type": "track", "event": HOSTILE, "outcome": "delivered"}],
                    "warehouse_row": {"campaign": HOSTILE},
                }
            ],
            "identity": {"user_id": HOSTILE},
        }
    )
    assert "<script>" not in page and "<img" not in page and 'data-event-id="&lt;/td&gt;' in page
    assert page.count("&lt;script&gt;alert(") >= 6
