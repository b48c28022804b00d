"""Identity bench (`make identity-bench`): identity resolution measured against a known ground truth.

A seeded synthetic population goes through the **real pipeline**: an embedded Tansu broker, real
`kseg receiver` and `kseg worker` processes, and the Segment emulator in this process, all on
127.0.0.1. Because the bench wrote every postback and every link, it knows who really sent each event,
and it scores what arrived at "Segment".

Population (sizes by flag, seeded):

- users with 1 or 2 personal devices (Kochava id `KI…`, IDFV + IDFA on iOS or Android id + GAID on
  Android; ~25 % of ad ids zeroed under ATT/LAT, ~10 % more sent as `-1` or an unfilled `{idfa}` macro);
- phase 1, *anonymous*: per device an `_install` attributed to a campaign (network, campaign_name,
  creative), then a few in-app events;
- phase 2, *late login*: ~70 % of users log in on each of their devices through `POST /v1/identity/links`
  (half the two-device users log in on their second device first; each link names a random subset of
  the device's ids, some with junk ids beside them, half with an email); a few **shared devices** are
  logged into by `KSEG_SHARED_DEVICE_THRESHOLD + 1` users; a few links carry only junk ids (must be 400);
- phase 3, *after login*: ~10 % of logged-in users **reinstall** (new Kochava id, same IDFV/Android id,
  `reprocess_for=<original install id>`, then a link of the new id), then every device sends in-app events
  and `Purchase` postbacks (`event_value`, `currency`, `order_id`); shared devices too.
- **resold devices** (~1 per 25 users, two people each, apart from the users above): *re-delivered*: the
  seller logs in through the signed Segment webhook in phase 2 (an identify with the app's SDK anonymousId,
  an email and the call's own `timestamp`) and buys in phase 3; *late*: the device sends only its install
  before the sale (whose anonymous install nobody can place: it goes with whichever login the device hears
  of first), and the seller's login is written in phase 2 but only delivered after the buyer's link (a
  webhook backlog). Phase 4, *resale*: the buyer is linked through the links API, then the seller's login
  body is delivered again (the same bytes, its old timestamp); once the buyer's identify arrived, the buyer
  sends events and purchases.

The bench waits until every accepted postback's track arrived (and nothing new arrived for a moment),
bounded by `--timeout` per phase, then computes, after dropping repeated messageIds:

**duplicate-profile rate** — logged-in users with at least one of their own events (any phase; the
ground truth actor of every postback is known) that ended on a Segment identity not joined to them: a
track whose `userId` is not theirs, or a track without `userId` whose `anonymousId` was never joined to
their userId, neither by an `alias` (`previousId` → userId) nor by a call carrying both ids. Divided by
the number of logged-in users. Target 0.

**wrong-merge rate** — *tying calls* are aliases, identifies and tracks that carry a userId together with
an anonymousId (`previousId` for alias) or a device id (`context.device.id` / `advertisingId`). A tying
call is wrong when it ties the userId to an anonymousId or device id whose ground-truth owner is someone
else (the owner of a shared device's anonymous history is the first user who logged in on it), or, for a
track, when its userId is not the person who sent that event (events of a shared device after it was
shared have no known sender: any userId on them is wrong). Wrong / tying calls. Target 0.

**attribution carried** — logged-in users for whom, for every personal device they logged in on, an
`identify` with their userId carries `traits.kochava_campaign` equal to that device's install campaign.
Target 100 %.

**purchases enriched** — `Purchase` postbacks (all come from devices with an attributed install) whose
`Order Completed` track has `properties.install_campaign` equal to the first-touch install campaign (for a
reinstall: the original install's). Target 100 %.

**junk id leaks** — Segment messages carrying a junk id as an id or device field, plus junk-only links the
API accepted. Target 0.

**messageIds reused** — messageIds that arrived with two different contents (Segment would drop the second
as a duplicate). Counted before dropping repeats. Target 0.

**calls tying two people** — calls with a userId whose anonymousId (`previousId` for alias) is also paired
with another person's userId on some call, or is the SDK anonymousId of another person's app, or whose
`email_sha256` is another person's. Target 0.

**resale wrong merges** — on resold devices: tracks whose userId is not the person who sent the event, and
tying calls whose anonymousId carries the other owner's events. Target 0.

**buyer events attributed** — the buyers' postbacks whose track carries the buyer's userId. Target 100 %.
Device ids (`context.device`) are device-scoped (docs/identity.md): a resold device's ids appear with both
owners by design, so they are not counted as ties for it.

    python -m bench.identity_bench                  # default 300 users / 400 devices
    python -m bench.identity_bench --smoke --json   # seconds of traffic: proves every figure is produced

Exit 0 when every target is met, 1 when one is missed or the pipeline did not drain, 2 on bad input.
Writes `identity-latest.json` and `identity-latest.md` to `--out` (default bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from app.broker.embedded import EmbeddedBroker
from app.receiver.identity_routes import LINKS_PATH
from app.records import postback_event_id, utc_now_iso
from bench.deployment import Deployment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TOKEN = "identity-bench"
LINK_TOKEN = "identity-bench-links"
NAMESPACE = "identity-bench"
SHARED_THRESHOLD = 2
MAX_USERS = 20_000
ZERO_IDFA = "00000000-0000-0000-0000-000000000000"
JUNK_VALUES = frozenset({ZERO_IDFA, "-1", "{idfa}", "{adid}", "{idfv}", "{android_id}", "null"})
REQUEST_ATTEMPTS = 8
QUIET_SECONDS = 2.0

CAMPAIGNS = [
    ("Meta Ads", "Spring Launch", "cr_spring_1"),
    ("Meta Ads", "Retarget Q2", "cr_rt_7"),
    ("Google Ads", "UAC Broad", "cr_uac_3"),
    ("TikTok Ads", "Creator Push", "cr_tt_12"),
    ("Apple Search Ads", "Brand Exact", "cr_asa_1"),
    ("Unity Ads", "Playable A", "cr_pl_a"),
]
EVENTS = ["Level Complete", "Tutorial Complete", "View", "Add to Cart", "SessionBegin"]

TARGETS: dict[str, tuple[str, float]] = {
    "wrong_merge_rate": ("<=", 0.0),
    "duplicate_profile_rate": ("<=", 0.0),
    "attribution_carried": (">=", 1.0),
    "purchases_enriched": (">=", 1.0),
    "junk_id_leaks": ("<=", 0.0),
    "message_ids_reused": ("<=", 0.0),
    "calls_tying_two_people": ("<=", 0.0),
    "resale_wrong_merges": ("<=", 0.0),
    "buyer_events_attributed": (">=", 1.0),
}
WEBHOOK_SECRET = "identity-bench-webhook"


def say(text: str) -> None:
    sys.stderr.write(f"[identity-bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------


@dataclass
class Device:
    key: str  # kochava_device_id: the device key
    platform: str  # "ios" | "android"
    vendor_id: str  # IDFV or Android id
    ad_sent: str  # the ad id as the postbacks carry it (maybe zeroed or junk)
    ad_usable: str | None  # the ad id when it is a real one
    owner: str | None  # the person behind its anonymous history
    campaign: tuple[str, str, str]
    install_id: str
    kind: str = "personal"  # personal | shared | reinstall
    original: Device | None = None  # for a reinstall: the device it replaced
    linked_users: list[str] = field(default_factory=list)

    @property
    def vendor_param(self) -> str:
        return "idfv" if self.platform == "ios" else "android_id"

    @property
    def ad_param(self) -> str:
        return "idfa" if self.platform == "ios" else "adid"

    def ids(self) -> dict[str, str]:
        return {"kochava_device_id": self.key, self.vendor_param: self.vendor_id, self.ad_param: self.ad_sent}

    @property
    def install_campaign(self) -> str:
        """First touch: for a reinstall, the original install's campaign."""
        return (self.original or self).campaign[1]


@dataclass
class User:
    user_id: str
    devices: list[Device]
    logs_in: bool
    second_first: bool = False  # logs in on the second device first
    reinstalls: bool = False


@dataclass
class Sent:
    """One postback the bench sent, with its ground truth."""

    event_id: str
    device: Device
    actor: str | None  # who really sent it; None = unknown (a shared device after it was shared)
    phase: int
    kochava_event: str
    expected_campaign: str | None = None  # purchases: the install campaign to find on the track
    status: int | None = None


@dataclass
class Resale:
    """A device sold by one person to another: `redelivered` (the seller's login arrived before the sale and
    again after it) or `late` (the seller's older login arrives only after the buyer's link)."""

    device: Device
    seller: str
    buyer: str
    kind: str  # redelivered | late
    sdk_anonymous_id: str  # the seller's app's Segment anonymousId
    login: bytes = b""  # the seller's signed webhook identify, exactly as delivered

    def email(self, who: str) -> str:
        return f"{who}@example.com"


@dataclass
class Population:
    users: list[User]
    shared: list[Device]
    junk_links: list[dict[str, Any]]
    rng: random.Random
    resales: list[Resale] = field(default_factory=list)

    @property
    def personal_devices(self) -> list[Device]:
        """Each user's own devices as installed in phase 1 (reinstalls excluded)."""
        return [d for u in self.users for d in u.devices if d.kind == "personal"]

    def counts(self) -> dict[str, int]:
        logged = [u for u in self.users if u.logs_in]
        return {
            "users": len(self.users),
            "personal_devices": len(self.personal_devices),
            "users_with_two_devices": sum(
                1 for u in self.users if sum(d.kind == "personal" for d in u.devices) == 2
            ),
            "logged_in_users": len(logged),
            "logins_via_second_device_first": sum(1 for u in logged if u.second_first),
            "shared_devices": len(self.shared),
            "reinstalls": sum(1 for u in self.users if u.reinstalls),
            "reinstall_devices_sent": sum(1 for u in self.users for d in u.devices if d.kind == "reinstall"),
            "zeroed_ad_ids": sum(1 for d in self.personal_devices if d.ad_sent == ZERO_IDFA),
            "junk_ad_ids": sum(
                1 for d in self.personal_devices if d.ad_usable is None and d.ad_sent != ZERO_IDFA
            ),
            "junk_only_links": len(self.junk_links),
            "resold_devices_redelivered_login": sum(1 for r in self.resales if r.kind == "redelivered"),
            "resold_devices_late_login": sum(1 for r in self.resales if r.kind == "late"),
        }


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032X}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_device(rng: random.Random, n: int, owner: str | None, platform_name: str, kind: str) -> Device:
    roll = rng.random()
    if platform_name == "ios":
        usable = _uuid(rng)
        junk = rng.choice(["-1", "{idfa}"])
        vendor = _uuid(rng)
    else:
        usable = _uuid(rng).lower()
        junk = rng.choice(["-1", "{adid}"])
        vendor = f"{rng.getrandbits(64):016x}"
    if roll < 0.25:
        sent, ad = ZERO_IDFA, None
    elif roll < 0.35:
        sent, ad = junk, None
    else:
        sent, ad = usable, usable
    return Device(
        key=f"KI{rng.getrandbits(48):012x}{n}",
        platform=platform_name,
        vendor_id=vendor,
        ad_sent=sent,
        ad_usable=ad,
        owner=owner,
        campaign=rng.choice(CAMPAIGNS),
        install_id=f"inst-{rng.getrandbits(40):010x}-{n}",
        kind=kind,
    )


def build_population(seed: int, n_users: int, n_devices: int) -> Population:
    """Users, their devices, who logs in, shared devices and reinstalls; deterministic for one seed."""
    rng = random.Random(seed)
    users: list[User] = []
    counter = 0
    for i in range(n_users):
        counter += 1
        plat = "ios" if rng.random() < 0.6 else "android"
        uid = f"user-{seed}-{i:05d}"
        users.append(User(uid, [new_device(rng, counter, uid, plat, "personal")], logs_in=rng.random() < 0.7))
    for i in range(min(3, n_users)):  # a population always has people who log in
        users[i].logs_in = True
    extra = max(0, min(n_devices, 2 * n_users) - n_users)
    for user in rng.sample(users, extra):
        counter += 1
        plat = "ios" if rng.random() < 0.5 else "android"
        user.devices.append(new_device(rng, counter, user.user_id, plat, "personal"))
    logged = [u for u in users if u.logs_in]
    for user in logged:
        user.second_first = len(user.devices) == 2 and rng.random() < 0.5
    for user in rng.sample(logged, max(1, len(logged) // 10)):
        user.reinstalls = True
    shared: list[Device] = []
    if len(logged) > SHARED_THRESHOLD:
        for _ in range(max(1, n_users // 60)):
            counter += 1
            people = rng.sample(logged, SHARED_THRESHOLD + 1)
            device = new_device(rng, counter, people[0].user_id, rng.choice(["ios", "android"]), "shared")
            device.linked_users = [p.user_id for p in people]
            shared.append(device)
    junk_links = [
        {"user_id": users[0].user_id, "idfa": ZERO_IDFA},
        {"user_id": users[0].user_id, "adid": "-1", "idfv": "{idfv}"},
        {"user_id": users[0].user_id, "idfa": "{idfa}", "android_id": "null"},
    ]
    resales: list[Resale] = []
    for i in range(max(2, n_users // 25)):
        counter += 1
        seller, buyer = f"seller-{seed}-{i:04d}", f"buyer-{seed}-{i:04d}"
        kind = "redelivered" if i % 2 == 0 else "late"
        device = new_device(rng, counter, seller, "ios", "resold")
        resales.append(Resale(device, seller, buyer, kind, f"sdk-{seller}"))
    return Population(users, shared, junk_links, rng, resales)


# ---------------------------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------------------------


class Traffic:
    """Sends postbacks and links to the receiver and remembers what it sent."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, concurrency: int, rng: random.Random):
        self.base_url = base_url
        self.session = session
        self.gate = asyncio.Semaphore(concurrency)
        self.rng = rng
        self.sent: dict[str, Sent] = {}
        self.statuses: Counter[str] = Counter()
        self.links_ok = 0
        self.links_failed = 0
        self.junk_links_accepted = 0
        self.seq = 0
        self.orders = 0
        self.t0 = int(time.time())

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One request with bounded retries on 503 and connection errors; (status, body)."""
        headers = {"Authorization": f"Bearer {LINK_TOKEN if path.startswith(LINKS_PATH) else TOKEN}"}
        headers.update(kwargs.pop("headers", None) or {})
        status: int = 0
        body: dict[str, Any] = {}
        for attempt in range(REQUEST_ATTEMPTS):
            async with self.gate:
                try:
                    async with self.session.request(
                        method, f"{self.base_url}{path}", headers=headers, **kwargs
                    ) as r:
                        status = r.status
                        raw = await r.read()
                        retry_after = r.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError):
                    status, raw, retry_after = 0, b"", None
            with contextlib.suppress(orjson.JSONDecodeError):
                loaded = orjson.loads(raw) if raw else {}
                body = loaded if isinstance(loaded, dict) else {}
            if status not in (0, 503):
                break
            delay = 0.2 * (attempt + 1)
            with contextlib.suppress(ValueError, TypeError):
                delay = float(retry_after or delay)
            await asyncio.sleep(min(delay, 2.0))
        return status, body

    async def postback(
        self,
        device: Device,
        event: str,
        phase: int,
        actor: str | None,
        extra: dict[str, str] | None = None,
        expected_campaign: str | None = None,
    ) -> Sent:
        self.seq += 1
        base = self.t0 - (2 * 86400 if phase == 1 else 86400)
        params = {"event_name": event, **device.ids(), "timestamp": str(base + self.seq), **(extra or {})}
        if event not in ("_install", "Purchase"):
            params["seq"] = str(self.seq)
        sent = Sent(postback_event_id(params), device, actor, phase, event, expected_campaign)
        sent.status, _ = await self._request("GET", f"/v1/kochava/postbacks?{urlencode(params)}")
        self.statuses[f"postback_{sent.status}"] += 1
        if sent.status == 200:
            self.sent[sent.event_id] = sent
        return sent

    async def install(self, device: Device, phase: int, actor: str | None) -> None:
        network, campaign, creative = device.campaign
        extra = {
            "network_name": network,
            "campaign_name": campaign,
            "creative_id": creative,
            "install_id": device.install_id,
            "country": "US",
        }
        if device.original is not None:
            extra["reprocess_for"] = device.original.install_id
        await self.postback(device, "_install", phase, actor, extra)

    async def events(self, device: Device, phase: int, actor: str | None, n: int) -> None:
        for _ in range(n):
            await self.postback(device, self.rng.choice(EVENTS), phase, actor)

    async def purchase(self, device: Device, actor: str | None) -> None:
        self.orders += 1  # the order id makes every purchase distinct
        extra = {
            "event_value": f"{self.rng.choice([0.99, 4.99, 9.99, 19.99])}",
            "currency": self.rng.choice(["USD", "EUR"]),
            "order_id": f"o-{self.orders}",
        }
        await self.postback(device, "Purchase", 3, actor, extra, expected_campaign=device.install_campaign)

    async def link(self, user_id: str, body: dict[str, Any]) -> int:
        status, _ = await self._request("POST", LINKS_PATH, json={"user_id": user_id, **body})
        self.statuses[f"link_{status}"] += 1
        if status == 200:
            self.links_ok += 1
        else:
            self.links_failed += 1
        return status

    async def webhook(self, body: bytes) -> int:
        """One Segment webhook delivery, signed like Segment signs it (HMAC-SHA1 of the raw body)."""
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()
        headers = {"X-Signature": signature, "Content-Type": "application/json"}
        status, _ = await self._request("POST", "/v1/segment/webhook", data=body, headers=headers)
        self.statuses[f"webhook_{status}"] += 1
        return status

    def link_body(self, device: Device, email: str | None) -> dict[str, Any]:
        """A random non-empty subset of the device's usable ids, sometimes with a junk id beside them."""
        usable = {"kochava_device_id": device.key, device.vendor_param: device.vendor_id}
        if device.ad_usable:
            usable[device.ad_param] = device.ad_usable
        names = list(usable)
        chosen = self.rng.sample(names, self.rng.randint(1, len(names)))
        body: dict[str, Any] = {name: usable[name] for name in chosen}
        if device.ad_usable is None and self.rng.random() < 0.6:
            body[device.ad_param] = device.ad_sent  # the app forwards the zeroed/junk ad id it has
        if email:
            body["email"] = email
        return body


async def _each(items: list[Any], run: Callable[[Any], Awaitable[None]]) -> None:
    await asyncio.gather(*(run(item) for item in items))


async def phase_anonymous(pop: Population, traffic: Traffic) -> None:
    """Installs and anonymous in-app events, sequential per device, devices side by side."""

    async def device_run(device: Device) -> None:
        await traffic.install(device, 1, device.owner)
        await traffic.events(device, 1, device.owner, traffic.rng.randint(2, 3))

    async def late_run(resale: Resale) -> None:
        await traffic.install(resale.device, 1, None)  # who installed is unknown until someone logs in

    await asyncio.gather(
        _each(
            [*pop.personal_devices, *pop.shared, *(r.device for r in pop.resales if r.kind != "late")],
            device_run,
        ),
        _each([r for r in pop.resales if r.kind == "late"], late_run),
    )


def seller_login(resale: Resale) -> bytes:
    """The seller's app's identify at login, timed now (its own `timestamp`), as the webhook delivers it."""
    device = resale.device
    return orjson.dumps(
        {
            "type": "identify",
            "messageId": f"login-{resale.seller}",
            "userId": resale.seller,
            "anonymousId": resale.sdk_anonymous_id,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "traits": {"email": resale.email(resale.seller)},
            "context": {"device": {"type": "ios", "advertisingId": device.ad_usable, "id": device.vendor_id}},
        }
    )


async def phase_seller_login(pop: Population, traffic: Traffic) -> None:
    """Sellers log in through the webhook; a late seller's login is written now, delivered after the sale."""

    async def run(resale: Resale) -> None:
        resale.login = seller_login(resale)
        if resale.kind == "redelivered":
            await traffic.webhook(resale.login)
            resale.device.linked_users.append(resale.seller)

    await _each(pop.resales, run)


async def phase_seller_buys(pop: Population, traffic: Traffic) -> None:
    async def run(resale: Resale) -> None:
        if resale.kind == "redelivered":
            await traffic.events(resale.device, 3, resale.seller, 1)
            await traffic.purchase(resale.device, resale.seller)

    await _each(pop.resales, run)


async def phase_resale_links(pop: Population, traffic: Traffic) -> None:
    """The buyer is linked (links API, timed by its arrival), then the seller's older login is delivered."""

    async def run(resale: Resale) -> None:
        device = resale.device
        body = {
            "kochava_device_id": device.key,
            "idfv": device.vendor_id,
            "email": resale.email(resale.buyer),
        }
        await traffic.link(resale.buyer, body)
        device.linked_users.append(resale.buyer)
        await traffic.webhook(resale.login)  # a re-delivery, or the late seller's first delivery

    await _each(pop.resales, run)


async def phase_buyer_uses(pop: Population, traffic: Traffic) -> None:
    async def run(resale: Resale) -> None:
        await traffic.events(resale.device, 3, resale.buyer, 2)
        await traffic.purchase(resale.device, resale.buyer)

    await _each(pop.resales, run)


async def phase_login(pop: Population, traffic: Traffic) -> None:
    """Late login: every logged-in user links each device; shared devices get threshold+1 users in turn."""

    async def user_run(user: User) -> None:
        email = f"{user.user_id}@example.com" if traffic.rng.random() < 0.5 else None
        order = list(reversed(user.devices)) if user.second_first else list(user.devices)
        for device in order:
            await traffic.link(user.user_id, traffic.link_body(device, email))
            device.linked_users.append(user.user_id)

    async def shared_run(device: Device) -> None:
        ids = {"kochava_device_id": device.key, device.vendor_param: device.vendor_id}
        for user_id in device.linked_users:  # one after the other: the first one owns the history
            await traffic.link(user_id, dict(ids))

    async def junk_run(body: dict[str, Any]) -> None:
        user_id = body.pop("user_id")
        if await traffic.link(user_id, body) == 200:
            traffic.junk_links_accepted += 1

    await asyncio.gather(
        _each([u for u in pop.users if u.logs_in], user_run),
        _each(pop.shared, shared_run),
        _each(pop.junk_links, junk_run),
    )


async def phase_after_login(pop: Population, traffic: Traffic, counter: list[int]) -> None:
    """Reinstalls (then their link), in-app events and purchases on every device, shared ones included."""

    async def device_run(user: User, device: Device) -> None:
        rng = traffic.rng
        if user.reinstalls and device is user.devices[0]:
            counter[0] += 1
            fresh = new_device(rng, 10_000_000 + counter[0], user.user_id, device.platform, "reinstall")
            fresh.vendor_id, fresh.ad_sent, fresh.ad_usable = (
                device.vendor_id,
                device.ad_sent,
                device.ad_usable,
            )
            fresh.original = device
            user.devices.append(fresh)
            await traffic.install(fresh, 3, user.user_id)
            await traffic.link(user.user_id, {"kochava_device_id": fresh.key})
            fresh.linked_users.append(user.user_id)
            device = fresh
        await traffic.events(device, 3, user.user_id, rng.randint(1, 3))
        for _ in range(rng.randint(1, 2)):
            await traffic.purchase(device, user.user_id)

    async def shared_run(device: Device) -> None:
        await traffic.events(device, 3, None, traffic.rng.randint(1, 2))
        await traffic.purchase(device, None)

    await asyncio.gather(
        *(device_run(u, d) for u in pop.users for d in list(u.devices)),
        *(shared_run(d) for d in pop.shared),
    )


# ---------------------------------------------------------------------------------------------
# Deployment and drain
# ---------------------------------------------------------------------------------------------


class Arrivals:
    """Incremental view of what the emulator received: track event ids, aliases, last arrival time."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.pos = 0
        self.event_ids: set[str] = set()
        self.aliases = 0
        self.last_change = time.monotonic()

    def scan(self) -> None:
        new = self.messages[self.pos :]
        if not new:
            return
        self.pos += len(new)
        self.last_change = time.monotonic()
        for msg in new:
            if msg.get("type") == "track":
                event_id = ((msg.get("context") or {}).get("kseg") or {}).get("event_id")
                if event_id:
                    self.event_ids.add(event_id)
            elif msg.get("type") == "alias":
                self.aliases += 1


async def drain(
    arrivals: Arrivals,
    dep: Deployment,
    done: Callable[[], bool],
    what: str,
    timeout: float,
) -> bool:
    """Wait until `done()` and no message arrived for QUIET_SECONDS; False when `timeout` ran out."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5
    while time.monotonic() < deadline:
        arrivals.scan()
        dead = dep.exited()
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during {what}; logs in {dep.data_dir}")
        if done() and time.monotonic() - arrivals.last_change >= QUIET_SECONDS:
            return True
        if time.monotonic() >= next_note:
            say(f"  waiting for {what}: {len(arrivals.messages)} messages so far")
            next_note = time.monotonic() + 5
        await asyncio.sleep(0.1)
    arrivals.scan()
    say(f"  gave up waiting for {what} after {timeout:g}s")
    return False


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def _device_ids_of(msg: dict[str, Any]) -> list[str]:
    device = (msg.get("context") or {}).get("device") or {}
    return [v for v in (device.get("id"), device.get("advertisingId")) if isinstance(v, str) and v]


def _has_junk(msg: dict[str, Any]) -> bool:
    values: list[Any] = [msg.get("userId"), msg.get("anonymousId"), msg.get("previousId")]
    values += _device_ids_of(msg)
    traits = msg.get("traits") or {}
    values += [traits.get("kochava_device_id")]
    return any(isinstance(v, str) and v in JUNK_VALUES for v in values)


def score(pop: Population, traffic: Traffic, raw_messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Every metric and the counts behind it, from the emulator's messages and the ground truth."""
    by_id: dict[str, dict[str, Any]] = {}
    contents: dict[str, set[bytes]] = defaultdict(set)
    for msg in raw_messages:
        by_id.setdefault(msg["messageId"], msg)
        contents[msg["messageId"]].add(orjson.dumps(msg, option=orjson.OPT_SORT_KEYS))
    reused_ids = sum(1 for variants in contents.values() if len(variants) > 1)
    messages = list(by_id.values())
    resold = {r.device.key: r for r in pop.resales}
    devices = {d.key: d for u in pop.users for d in u.devices} | {d.key: d for d in pop.shared}
    devices |= {r.device.key: r.device for r in pop.resales}
    owner_of_id: dict[str, set[str | None]] = defaultdict(set)
    for d in devices.values():
        if d.key in resold:
            continue  # device ids are device-scoped: a resold device's ids appear with both owners by design
        for value in (d.vendor_id, d.ad_usable):
            if value:
                owner_of_id[value].add(d.owner)

    # anonymousId -> device key, learnt from the postback calls (they carry context.kseg).
    anon_device: dict[str, set[str]] = defaultdict(set)
    # anonymousId -> who really sent the postbacks whose tracks carry it (ground truth; resold devices).
    anon_actors: dict[str, set[str]] = defaultdict(set)
    for resale in pop.resales:  # ground truth: the seller's app's SDK anonymousId is the seller's
        anon_device[resale.sdk_anonymous_id].add(resale.device.key)
        anon_actors[resale.sdk_anonymous_id].add(resale.seller)
    for msg in messages:
        kseg = (msg.get("context") or {}).get("kseg") or {}
        key = kseg.get("kochava_device_id")
        if key and msg.get("anonymousId"):
            anon_device[msg["anonymousId"]].add(key)
            sent_by = traffic.sent.get(kseg.get("event_id") or "")
            if sent_by is not None and sent_by.actor:
                anon_actors[msg["anonymousId"]].add(sent_by.actor)

    joined: dict[str, set[str]] = defaultdict(set)  # userId -> anonymousIds joined to it
    tying = wrong = unverifiable = resale_wrong = 0
    wrong_by_type: Counter[str] = Counter()
    wrong_examples: list[dict[str, Any]] = []
    for msg in messages:
        kind, user = msg.get("type"), msg.get("userId")
        anon = msg.get("previousId") if kind == "alias" else msg.get("anonymousId")
        if not user:
            continue
        if anon:
            joined[user].add(anon)
        dev_ids = _device_ids_of(msg)
        if not (anon or dev_ids):
            continue
        tying += 1
        bad = on_resold = False
        if kind == "track":
            event_id = ((msg.get("context") or {}).get("kseg") or {}).get("event_id")
            sent = traffic.sent.get(event_id or "")
            if sent is None:
                unverifiable += 1
                bad = True
            else:
                bad = sent.actor != user
                on_resold = sent.device.key in resold
        if anon:
            keys = anon_device.get(anon)
            if not keys:
                unverifiable += 1
                bad = True
            elif keys & resold.keys():
                # A resold device has two owners over time: the anonymousId is whoever's events it carries.
                on_resold = True
                bad = bad or len(keys) > 1 or bool(anon_actors[anon] - {user})
            elif len(keys) > 1 or any(devices[k].owner != user for k in keys if k in devices):
                bad = True
        for value in dev_ids:
            owners = owner_of_id.get(value)
            if owners is not None and owners != {user}:
                bad = True
        if bad:
            wrong += 1
            resale_wrong += on_resold
            wrong_by_type[str(kind)] += 1
            if len(wrong_examples) < 5:
                wrong_examples.append(
                    {k: msg.get(k) for k in ("type", "userId", "anonymousId", "previousId")}
                )

    # Tracks per event id (the main track of each postback).
    tracks: dict[str, dict[str, Any]] = {}
    for msg in messages:
        if msg.get("type") == "track":
            event_id = ((msg.get("context") or {}).get("kseg") or {}).get("event_id")
            if event_id and msg.get("event") != "Re-engagement Attributed":
                tracks.setdefault(event_id, msg)
    missing = [e for e in traffic.sent if e not in tracks]

    logged = [u for u in pop.users if u.logs_in]
    logged_ids = {u.user_id for u in logged}
    duplicated: set[str] = set()
    stray_tracks = 0
    for event_id, sent in traffic.sent.items():
        track = tracks.get(event_id)
        if track is None or sent.actor not in logged_ids:
            continue
        actor = str(sent.actor)
        if track.get("userId") == actor:
            continue
        if not track.get("userId") and track.get("anonymousId") in joined[actor]:
            continue
        stray_tracks += 1
        duplicated.add(actor)

    campaigns_by_user: dict[str, set[str]] = defaultdict(set)
    for msg in messages:
        if msg.get("type") == "identify" and msg.get("userId"):
            campaign = (msg.get("traits") or {}).get("kochava_campaign")
            if campaign:
                campaigns_by_user[msg["userId"]].add(campaign)
    carried = 0
    conflicts = 0
    for user in logged:
        own = [d.campaign[1] for d in user.devices if d.kind == "personal"]
        if all(c in campaigns_by_user[user.user_id] for c in own):
            carried += 1
        allowed = set(own) | {d.campaign[1] for d in pop.shared if d.owner == user.user_id}
        if campaigns_by_user[user.user_id] - allowed:
            conflicts += 1

    purchases = [s for s in traffic.sent.values() if s.kochava_event == "Purchase"]
    enriched_by_kind: Counter[str] = Counter()
    total_by_kind: Counter[str] = Counter()
    for sent in purchases:
        total_by_kind[sent.device.kind] += 1
        track = tracks.get(sent.event_id)
        if (
            track is not None
            and (track.get("properties") or {}).get("install_campaign") == sent.expected_campaign
        ):
            enriched_by_kind[sent.device.kind] += 1
    enriched = sum(enriched_by_kind.values())

    junk_messages = sum(1 for msg in messages if _has_junk(msg))

    # Calls tying two people: one anonymousId paired with two persons' userIds, or another person's hash.
    persons_of_anon: dict[str, set[str]] = defaultdict(set)
    for resale in pop.resales:
        persons_of_anon[resale.sdk_anonymous_id].add(resale.seller)
    for msg in messages:
        anon = msg.get("previousId") if msg.get("type") == "alias" else msg.get("anonymousId")
        if msg.get("userId") and anon:
            persons_of_anon[anon].add(msg["userId"])
    people = [u.user_id for u in pop.users] + [p for r in pop.resales for p in (r.seller, r.buyer)]
    hash_owner = {hashlib.sha256(f"{p}@example.com".encode()).hexdigest(): p for p in people}
    tying_two = 0
    tying_examples: list[dict[str, Any]] = []
    for msg in messages:
        user = msg.get("userId")
        anon = msg.get("previousId") if msg.get("type") == "alias" else msg.get("anonymousId")
        if not user:
            continue
        foreign_hash = hash_owner.get((msg.get("traits") or {}).get("email_sha256") or "", user) != user
        if (anon and persons_of_anon[anon] - {user}) or foreign_hash:
            tying_two += 1
            if len(tying_examples) < 5:
                tying_examples.append(
                    {k: msg.get(k) for k in ("type", "userId", "anonymousId", "previousId")}
                )
    buyers = {r.buyer for r in pop.resales}
    buyer_sent = [s for s in traffic.sent.values() if s.actor in buyers and s.phase == 3]
    buyer_ok = sum(1 for s in buyer_sent if (tracks.get(s.event_id) or {}).get("userId") == s.actor)
    aliases = [m for m in messages if m.get("type") == "alias"]
    alias_devices = Counter(a.get("previousId") for a in aliases)
    return {
        "metrics": {
            "wrong_merge_rate": _ratio(wrong, tying),
            "duplicate_profile_rate": _ratio(len(duplicated), len(logged)),
            "attribution_carried": _ratio(carried, len(logged)),
            "purchases_enriched": _ratio(enriched, len(purchases)),
            "junk_id_leaks": junk_messages + traffic.junk_links_accepted,
            "message_ids_reused": reused_ids,
            "calls_tying_two_people": tying_two,
            "resale_wrong_merges": resale_wrong,
            "buyer_events_attributed": _ratio(buyer_ok, len(buyer_sent)),
        },
        "details": {
            "tying_calls": tying,
            "wrong_merges": wrong,
            "wrong_merges_by_type": dict(wrong_by_type),
            "wrong_merge_examples": wrong_examples,
            "unverifiable_ties": unverifiable,
            "logged_in_users": len(logged),
            "users_with_duplicate_profiles": len(duplicated),
            "tracks_not_joined_to_their_user": stray_tracks,
            "users_attribution_carried": carried,
            "users_with_foreign_campaign_trait": conflicts,
            "purchases": len(purchases),
            "purchases_enriched": enriched,
            "purchases_by_device_kind": dict(total_by_kind),
            "purchases_enriched_by_device_kind": dict(enriched_by_kind),
            "junk_id_messages": junk_messages,
            "calls_tying_two_people_examples": tying_examples,
            "buyer_events": len(buyer_sent),
            "buyer_events_with_buyer_user_id": buyer_ok,
            "junk_only_links_accepted": traffic.junk_links_accepted,
            "postbacks_accepted": len(traffic.sent),
            "tracks_missing": len(missing),
            "links_accepted": traffic.links_ok,
            "links_refused": traffic.links_failed,
            "segment_messages": len(raw_messages),
            "segment_unique_messages": len(messages),
            "segment_by_type": dict(Counter(str(m.get("type")) for m in messages)),
            "aliases": len(aliases),
            "anonymous_ids_aliased_twice": sum(1 for n in alias_devices.values() if n > 1),
            "http_statuses": dict(traffic.statuses),
        },
    }


def verdicts(metrics: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = metrics.get(key)
        if value is None:
            out[key] = "missing"
        else:
            out[key] = "met" if (value >= bound if op == ">=" else value <= bound) else "missed"
    return out


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# kseg identity benchmark",
        "",
        f"Run {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs), mode `{meta['mode']}`, seed "
        f"{meta['seed']}, {meta['seconds']} s in all. Real receiver and worker processes, embedded Tansu "
        f"broker, Segment emulator, loopback only; KSEG_SHARED_DEVICE_THRESHOLD={SHARED_THRESHOLD}.",
        "",
        f"Drained: {'yes' if meta['drained'] else 'NO'}.",
        "",
        "| metric | value | target | verdict |",
        "|---|---|---|---|",
    ]
    for key, value in report["metrics"].items():
        op, bound = TARGETS[key]
        lines.append(f"| {key} | {value} | {op} {bound:g} | {report['targets'][key]} |")
    lines += ["", "| population | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["population"].items()]
    lines += ["", "| detail | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["details"].items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


async def run_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    try:
        from tests.emulators.segment_api import SegmentEmulator
    except ImportError as exc:  # the emulator ships with the repository, not the wheel
        raise RuntimeError("identity-bench needs the repository checkout (tests/emulators)") from exc

    pop = build_population(args.seed, args.users, args.devices)
    say(f"population: {pop.counts()}")
    began = time.perf_counter()
    drained = True
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        async with SegmentEmulator(write_key="identity-bench-key") as segment:
            dep = Deployment(
                broker.bootstrap_servers,
                segment.url,
                work,
                app_id=f"idbench{int(time.time() * 1000) % 10_000_000}",
                token=TOKEN,
                link_token=LINK_TOKEN,
                extra_env={
                    "KSEG_NAMESPACE": NAMESPACE,
                    "KSEG_SHARED_DEVICE_THRESHOLD": str(SHARED_THRESHOLD),
                    "SEGMENT_WRITE_KEY": "identity-bench-key",
                    "SEGMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
                },
            )
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                try:
                    await dep.start("receiver", "worker")
                    say(f"receiver on {dep.base_url}, worker ready; broker {broker.bootstrap_servers}")
                    traffic = Traffic(dep.base_url, session, args.concurrency, pop.rng)
                    arrivals = Arrivals(segment.messages)

                    say("phase 1: installs and anonymous events ...")
                    await phase_anonymous(pop, traffic)
                    say(f"  sent {len(traffic.sent)} postbacks")
                    drained &= await drain(
                        arrivals,
                        dep,
                        lambda: traffic.sent.keys() <= arrivals.event_ids,
                        "phase 1",
                        args.timeout,
                    )

                    say("phase 2: late logins, shared devices, junk-only links, sellers' webhook logins ...")
                    await asyncio.gather(phase_login(pop, traffic), phase_seller_login(pop, traffic))
                    expected = len([d for d in pop.personal_devices if d.owner and d.linked_users])
                    expected += len(pop.shared) + sum(1 for r in pop.resales if r.kind == "redelivered")
                    say(f"  {traffic.links_ok} links accepted, {traffic.links_failed} refused")
                    drained &= await drain(
                        arrivals,
                        dep,
                        lambda: arrivals.aliases >= expected,
                        f"{expected} aliases",
                        args.timeout,
                    )

                    say("phase 3: reinstalls, events and purchases after login ...")
                    await asyncio.gather(
                        phase_after_login(pop, traffic, [0]), phase_seller_buys(pop, traffic)
                    )
                    say(f"  sent {len(traffic.sent)} postbacks in all")
                    drained &= await drain(
                        arrivals,
                        dep,
                        lambda: traffic.sent.keys() <= arrivals.event_ids,
                        "phase 3",
                        args.timeout,
                    )

                    say("phase 4: resale: buyers linked, the sellers' older logins delivered again ...")
                    await phase_resale_links(pop, traffic)
                    buyers = {r.buyer for r in pop.resales}

                    def buyers_identified() -> bool:
                        seen = {m.get("userId") for m in segment.messages if m.get("type") == "identify"}
                        return buyers <= seen

                    drained &= await drain(
                        arrivals, dep, buyers_identified, "the buyers' identifies", args.timeout
                    )
                    await asyncio.sleep(
                        QUIET_SECONDS
                    )  # the sellers' replayed logins reach the devices meanwhile
                    await phase_buyer_uses(pop, traffic)
                    drained &= await drain(
                        arrivals,
                        dep,
                        lambda: traffic.sent.keys() <= arrivals.event_ids,
                        "phase 4",
                        args.timeout,
                    )
                finally:
                    dep.stop()
            received = list(segment.messages)
    with (work / "segment-messages.jsonl").open("wb") as dump:  # for investigating a missed target
        dump.write(b"".join(orjson.dumps(m) + b"\n" for m in received))
    with (work / "ground-truth.jsonl").open("wb") as dump:
        dump.write(
            b"".join(
                orjson.dumps(
                    {
                        "event_id": s.event_id,
                        "device": s.device.key,
                        "device_kind": s.device.kind,
                        "device_owner": s.device.owner,
                        "actor": s.actor,
                        "phase": s.phase,
                        "event": s.kochava_event,
                        "expected_campaign": s.expected_campaign,
                    }
                )
                + b"\n"
                for s in traffic.sent.values()
            )
        )
    scored = score(pop, traffic, received)
    report = {
        "meta": {
            "when": utc_now_iso(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "mode": "smoke" if args.smoke else "full",
            "seed": args.seed,
            "seconds": round(time.perf_counter() - began, 1),
            "drained": drained and scored["details"]["tracks_missing"] == 0,
            "shared_device_threshold": SHARED_THRESHOLD,
        },
        "population": pop.counts(),
        **scored,
    }
    report["targets"] = verdicts(report["metrics"])
    report["ok"] = report["meta"]["drained"] and all(v == "met" for v in report["targets"].values())
    return report


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1800:
        raise argparse.ArgumentTypeError(f"must be in (0, 1800], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """`python -m bench.identity_bench` (also `make identity-bench`)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.identity_bench",
        description=(__doc__ or "").split("\n\n")[0],
    )
    add = parser.add_argument
    add("--users", type=_positive_int, default=300, help="users (default 300)")
    add("--devices", type=_positive_int, default=400, help="personal devices, users..2*users (default 400)")
    add("--seed", type=int, default=7, help="population seed (default 7)")
    add("--smoke", action="store_true", help="tiny population (12 users, 16 devices): seconds of traffic")
    add("--timeout", type=_positive_float, default=180.0, help="max wait per drain phase, s (default 180)")
    add("--concurrency", type=_positive_int, default=32, help="max in-flight requests (default 32)")
    add("--out", default=str(RESULTS), help="directory for identity-latest.{json,md} (default bench/results)")
    add("--keep", action="store_true", help="keep the work directory (process logs) even when all is well")
    add("--work", help="work directory for logs and message dumps (kept; default: a temporary one)")
    add("--json", action="store_true", help="print the JSON summary instead of the table")
    return parser


def cmd_identity_bench(args: argparse.Namespace) -> int:
    if args.smoke:
        args.users, args.devices = 12, 16
    if args.users > MAX_USERS:
        print(f"identity-bench: error: --users is capped at {MAX_USERS}", file=sys.stderr)
        return 2
    if not args.users <= args.devices <= 2 * args.users:
        print("identity-bench: error: --devices must be between --users and 2 x --users", file=sys.stderr)
        return 2
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        args.keep = True
    else:
        work = Path(tempfile.mkdtemp(prefix="kseg-identity-bench-"))
    try:
        report = asyncio.run(run_bench(args, work))
    except RuntimeError as exc:
        say(f"error: {exc}; logs kept in {work}")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "identity-latest.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    text = markdown(report)
    (out / "identity-latest.md").write_text(text)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(text)
    if report["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        say(f"process logs kept in {work}")
    say(
        "all targets met"
        if report["ok"]
        else "targets missed: "
        + ", ".join(k for k, v in report["targets"].items() if v != "met")
        + ("" if report["meta"]["drained"] else " (pipeline did not drain)")
    )
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    return cmd_identity_bench(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
