"""Property: two people on one device, links, re-deliveries and postbacks in any order of arrival.

The real pure steps (link parsing, index fan-out, the device index, the processing agent's steps) with
dict tables: whatever the order, no Segment call ever ties the two people together (a userId next to the
other's anonymousId or email hash), no messageId is reused for different content, and the device ends
with the newest link.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import topics
from app.identity.index import link_updates
from app.identity.records import LinkRequest
from app.identity.resolver import email_hash
from app.identity.webhook import link_from_message
from app.receiver.identity_routes import parse_link_body
from tests.pipeline_tables import Tables, raw

KEY, IDFA, IDFV = "KRESALE1", "5E1A4C2B-0000-4000-8000-00000000000A", "5E1A4C2B-0000-4000-8000-00000000000F"
RECEIVED = "2025-03-01T00:00:00.000Z"
DEVICE = {"type": "ios", "advertisingId": IDFA, "id": IDFV}
SDK = {"user-A": "sdk-anon-A", "user-B": "sdk-anon-B"}
EMAIL = {"user-A": "alice@example.com", "user-B": "bob@example.com"}


def webhook(user: str, message_id: str, at: str, call: str = "identify") -> LinkRequest:
    body: dict[str, Any] = {
        "type": call,
        "messageId": message_id,
        "userId": user,
        "anonymousId": SDK[user],
        "timestamp": at,
        "context": {"device": DEVICE},
    }
    if call == "identify":
        body["traits"] = {"email": EMAIL[user]}
    link = link_from_message(body, RECEIVED)
    assert isinstance(link, LinkRequest)
    return link


#: The links, by name: (link, who, when it happened). A2 is A taking the device back, after B.
LINKS = {
    "A1": (webhook("user-A", "m-A1", "2025-01-01T10:00:00Z"), "user-A", 1),
    "B": (
        parse_link_body(
            {
                "user_id": "user-B",
                "email": EMAIL["user-B"],
                "kochava_device_id": KEY,
                "idfv": IDFV,
                "at": "2025-02-01T10:00:00Z",
            },
            RECEIVED,
        )[0],
        "user-B",
        2,
    ),
    "B-app": (webhook("user-B", "m-B1", "2025-02-01T12:00:00Z", call="track"), "user-B", 3),
    "A2": (webhook("user-A", "m-A2", "2025-02-20T10:00:00Z"), "user-A", 4),
}


def postback(n: int) -> dict[str, Any]:
    params = {
        "event_name": "Level Complete",
        "kochava_device_id": KEY,
        "idfa": IDFA,
        "idfv": IDFV,
        "n": str(n),
        "timestamp": str(1735689600 + 86400 * (n % 60)),
    }
    return raw(params)


def settle(t: Tables) -> None:
    """Run index updates and the notices they answer until nothing is left, as the agents would."""
    while t.sent.get(topics.DEVICE_INDEX):
        notices = t.apply_index()
        if notices:
            t.run([(n.device_key, n.model_dump(mode="json")) for n in notices])


def deliver(t: Tables, op: str) -> None:
    if op.startswith("P"):
        t.run([(KEY, postback(int(op[1:])))])
    else:
        link = LINKS[op][0]
        t.sent.setdefault(topics.DEVICE_INDEX, []).extend(
            (u.device.encode(), u.model_dump(mode="json")) for u in link_updates(link)
        )
    settle(t)


@st.composite
def arrivals(draw: st.DrawFn) -> list[str]:
    """A1 and B always, maybe A2 and B's app calls, any of them re-delivered, postbacks; any order."""
    links = ["A1", "B"] + [name for name in ("A2", "B-app") if draw(st.booleans())]
    again = draw(st.lists(st.sampled_from(links), max_size=4))
    posts = [f"P{n}" for n in draw(st.lists(st.integers(1, 200), max_size=5, unique=True))]
    return draw(st.permutations(links + again + posts))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=arrivals())
def test_two_people_on_one_device_are_never_tied_together(order: list[str]) -> None:
    t = Tables()
    deliver(t, "P0")  # the install's device exists before anyone logs in
    for op in order:
        deliver(t, op)
    deliver(t, "P999")
    calls = t.take(topics.OUTBOX)

    ids: dict[str, set[str]] = {user: {SDK[user]} for user in SDK}
    for call in calls:
        user = call.get("userId")
        if user in ids:
            ids[user].add(call.get("previousId") or call.get("anonymousId"))
    ids = {user: values - {None} for user, values in ids.items()}  # type: ignore[misc]
    assert not ids["user-A"] & ids["user-B"], (order, ids)

    hashes = {user: email_hash(EMAIL[user]) for user in EMAIL}
    for call in calls:
        user = call.get("userId")
        traits = call.get("traits", {})
        for other in {"user-A", "user-B"} - {user}:
            assert traits.get("email_sha256") != hashes[other], (order, call)

    by_id: dict[str, bytes] = {}
    for call in calls:
        content = orjson.dumps(call, option=orjson.OPT_SORT_KEYS)
        assert by_id.setdefault(call["messageId"], content) == content, (order, call["messageId"])

    newest = max((LINKS[op] for op in set(order) if op in LINKS), key=lambda link: link[2])[1]
    assert t.profile(KEY).user_id == newest, order
    [last] = [c for c in calls if c.get("properties", {}).get("n") == "999"]
    assert last.get("userId") == newest, order
