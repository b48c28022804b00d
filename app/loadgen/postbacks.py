"""Seeded generator of realistic Kochava custom postbacks (GET query strings).

Why: load and end-to-end tests need traffic that looks like production — the macro keys kseg receives
(docs/reference.md#kochava-field-names), a realistic kind mix, devices that repeat (installs first, then
events), all-zero IDFAs under ATT, and Kochava's exact retries — while staying reproducible per seed so a
failing run can be replayed. Every postback also names the device it belongs to (the expected identity), so
tests can check what the pipeline resolved.

Devices live in a bounded population: until it is full every install adds a device; once full an
install replaces a random device (an uninstall), so memory stays bounded on long runs while events
keep landing on devices that were installed earlier.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

Kind = Literal["install", "event", "purchase", "reengagement", "reinstall"]
KINDS: Final[tuple[Kind, ...]] = ("install", "event", "purchase", "reengagement", "reinstall")

#: Default kind mix (fractions; normalised, so they need not sum to 1).
DEFAULT_MIX: Final[Mapping[Kind, float]] = {
    "install": 0.35,
    "event": 0.35,
    "purchase": 0.15,
    "reengagement": 0.10,
    "reinstall": 0.05,
}

#: 2025-01-01T00:00:00Z: a fixed default start so the output depends on the seed only.
DEFAULT_START_TS: Final = 1_735_689_600

ZERO_IDFA: Final = "00000000-0000-0000-0000-000000000000"

_IN_APP_EVENTS: Final = (
    "Level Complete",
    "Registration Complete",
    "Tutorial Complete",
    "Add to Cart",
    "Add to Wish List",
    "Checkout Start",
    "Achievement",
    "View",
    "Search",
    "Ad View",
    "Start Trial",
    "Subscribe",
)
_VALUED_EVENTS: Final = frozenset({"Subscribe", "Start Trial", "Add to Cart", "Checkout Start"})
_REENGAGEMENT_EVENTS: Final = ("_Deeplink", "Purchase", "Level Complete", "Subscribe", "View")
_NETWORKS: Final = ("Google Ads", "Meta", "TikTok", "Unity Ads", "AppLovin", "ironSource", "Snapchat")
_RETARGETERS: Final = ("RetargetCo", "Liftoff", "Moloco", "Remerge")
_COUNTRIES: Final = ("US", "US", "US", "GB", "DE", "FR", "BR", "JP", "IN", "CA", "MX", "AU")
_CURRENCIES: Final = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "BR": "BRL",
    "JP": "JPY",
    "IN": "INR",
    "CA": "CAD",
    "MX": "MXN",
    "AU": "AUD",
}
_PRICES: Final = (0.99, 1.99, 2.99, 4.99, 9.99, 14.99, 19.99, 49.99, 99.99)
_IOS_VERSIONS: Final = ("16_7", "17_4", "17_5", "18_0", "18_1")
_ANDROID_MODELS: Final = ("Pixel 8", "SM-S918B", "SM-A546B", "moto g84", "2201117TG")
_ANDROID_VERSIONS: Final = ("12", "13", "14", "15")


@dataclass(frozen=True, slots=True)
class Postback:
    """One generated postback: the query string to send and what a test should expect from it."""

    query: str
    kind: Kind
    device: str  # kochava_device_id: the identity the pipeline should resolve this postback to
    is_retry: bool = False


@dataclass(slots=True)
class _Device:
    kochava_device_id: str
    install_id: str
    platform: Literal["ios", "android"]
    ad_ids: dict[str, str]
    country: str
    user_agent: str
    attribution: dict[str, str]
    user_id: str | None = None


def _encode(params: Mapping[str, str]) -> str:
    """Percent-encode like a URL macro expansion (spaces as %20), keeping key order stable."""
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def normalise_mix(mix: Mapping[str, float] | None) -> dict[Kind, float]:
    """Validate a kind mix and scale it to fractions; unknown kinds or negative weights are errors."""
    raw = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(raw) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown postback kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    if any(w < 0 for w in raw.values()):
        raise ValueError("mix weights must be >= 0")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("mix weights must not all be zero")
    return {k: raw.get(k, 0.0) / total for k in KINDS}


class PostbackGenerator(Iterator[Postback]):
    """Infinite, deterministic-per-seed stream of postbacks; iterate it or call `next_postback()`."""

    def __init__(
        self,
        seed: int = 0,
        *,
        mix: Mapping[str, float] | None = None,
        devices: int = 5_000,
        retry_rate: float = 0.01,
        zero_idfa_rate: float = 0.25,
        ios_share: float = 0.55,
        user_id_rate: float = 0.3,
        start_ts: int = DEFAULT_START_TS,
        events_per_second: float = 20.0,
    ) -> None:
        if devices < 1:
            raise ValueError("devices must be >= 1")
        if events_per_second < 1:
            raise ValueError("events_per_second must be >= 1")
        for name, value in (
            ("retry_rate", retry_rate),
            ("zero_idfa_rate", zero_idfa_rate),
            ("ios_share", ios_share),
            ("user_id_rate", user_id_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.mix = normalise_mix(mix)
        self._kinds = list(self.mix)
        self._weights = [self.mix[k] for k in self._kinds]
        self._rng = random.Random(seed)
        self._max_devices = devices
        self._retry_rate = retry_rate
        self._zero_idfa_rate = zero_idfa_rate
        self._ios_share = ios_share
        self._user_id_rate = user_id_rate
        self._ts = start_ts
        self._tick = 1.0 / events_per_second
        self._ts_queries: set[str] = set()  # queries already used in the current second
        self._devices: list[_Device] = []
        self._recent: deque[Postback] = deque(maxlen=256)  # what a retry may replay
        self._seq = 0

    # -- iteration --------------------------------------------------------------------------------
    def __iter__(self) -> PostbackGenerator:
        return self

    def __next__(self) -> Postback:
        return self.next_postback()

    def take(self, n: int) -> list[Postback]:
        """The next `n` postbacks (handy in tests)."""
        return [self.next_postback() for _ in range(n)]

    def next_postback(self) -> Postback:
        rng = self._rng
        if self._recent and rng.random() < self._retry_rate:
            # Kochava retries replay the identical request, byte for byte.
            original = self._recent[rng.randrange(len(self._recent))]
            return Postback(original.query, original.kind, original.device, is_retry=True)
        self._seq += 1
        if rng.random() < self._tick:
            self._ts += 1  # event time advances ~`events_per_second`; many events share a second
            self._ts_queries.clear()
        kind: Kind = rng.choices(self._kinds, self._weights)[0]
        if not self._devices:
            kind = "install"  # nothing installed yet: every other kind needs an installed device
        if kind == "install":
            device = self._install()
            params = self._base(device, "_install", "install")
            params["click_id"] = self._token(12)
        elif kind == "reinstall":
            device, original_install_id = self._reinstall()
            params = self._base(device, "_install", "reengagement")
            params["reprocess_for"] = original_install_id
        elif kind == "reengagement":
            device = rng.choice(self._devices)
            name = rng.choice(_REENGAGEMENT_EVENTS)
            params = self._base(device, name, "reengagement")
            params.update(self._retarget())
            if name in ("Purchase", "Subscribe"):
                self._add_value(params, device, order=name == "Purchase")
        elif kind == "purchase":
            device = rng.choice(self._devices)
            params = self._base(device, "Purchase", "install")
            self._add_value(params, device, order=True)
            self._maybe_user_id(params, device)
        else:
            device = rng.choice(self._devices)
            name = rng.choice(_IN_APP_EVENTS)
            params = self._base(device, name, "install")
            if name in _VALUED_EVENTS:
                self._add_value(params, device, order=False)
            self._maybe_user_id(params, device)
        query = _encode(params)
        while query in self._ts_queries:
            # Two distinct events must never look like a retry of each other (the dedupe key
            # hashes every parameter), so a collision moves the event to the next second.
            self._ts += 1
            self._ts_queries.clear()
            params["timestamp"] = str(self._ts)
            query = _encode(params)
        self._ts_queries.add(query)
        postback = Postback(query, kind, device.kochava_device_id)
        self._recent.append(postback)
        return postback

    # -- devices ----------------------------------------------------------------------------------
    def _new_device(self) -> _Device:
        rng = self._rng
        country = rng.choice(_COUNTRIES)
        if rng.random() < self._ios_share:
            idfa = ZERO_IDFA if rng.random() < self._zero_idfa_rate else self._uuid().upper()
            ad_ids = {"idfa": idfa, "idfv": self._uuid().upper()}
            ua = (
                f"Mozilla/5.0 (iPhone; CPU iPhone OS {rng.choice(_IOS_VERSIONS)} like Mac OS X) "
                "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
            )
            platform: Literal["ios", "android"] = "ios"
        else:
            ad_ids = {"adid": self._uuid(), "android_id": f"{rng.getrandbits(64):016x}"}
            ua = (
                f"Mozilla/5.0 (Linux; Android {rng.choice(_ANDROID_VERSIONS)}; "
                f"{rng.choice(_ANDROID_MODELS)}) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/126.0.0.0 Mobile Safari/537.36"
            )
            platform = "android"
        network = rng.choice(_NETWORKS)
        return _Device(
            kochava_device_id=self._kochava_id(),
            install_id=self._uuid(),
            platform=platform,
            ad_ids=ad_ids,
            country=country,
            user_agent=ua,
            attribution=self._attribution(network),
        )

    def _install(self) -> _Device:
        device = self._new_device()
        if len(self._devices) < self._max_devices:
            self._devices.append(device)
        else:
            self._devices[self._rng.randrange(self._max_devices)] = device  # churn: an uninstall
        return device

    def _reinstall(self) -> tuple[_Device, str]:
        """Kochava reprocessed install: same hardware ids, new kochava_device_id and install id.

        Returns the new device and the original install id (`reprocess_for`).
        """
        index = self._rng.randrange(len(self._devices))
        old = self._devices[index]
        new = _Device(
            kochava_device_id=self._kochava_id(),
            install_id=self._uuid(),
            platform=old.platform,
            ad_ids=dict(old.ad_ids),
            country=old.country,
            user_agent=old.user_agent,
            attribution=self._attribution(self._rng.choice(_RETARGETERS)),
            user_id=old.user_id,
        )
        self._devices[index] = new
        return new, old.install_id

    # -- parameters -------------------------------------------------------------------------------
    def _base(self, device: _Device, event_name: str, attribution_type: str) -> dict[str, str]:
        params = {"event_name": event_name, "kochava_device_id": device.kochava_device_id}
        params.update(device.ad_ids)
        params.update(device.attribution)
        params["country"] = device.country
        params["timestamp"] = str(self._ts)
        params["device_ua"] = device.user_agent
        params["attribution_type"] = attribution_type
        return params

    def _attribution(self, network: str) -> dict[str, str]:
        rng = self._rng
        slug = network.lower().replace(" ", "_")
        campaign = f"{slug}_{rng.choice(('ua', 'brand', 'retarget', 'q1_push'))}_{rng.randint(1, 9)}"
        return {
            "network_name": network,
            "campaign_name": campaign,
            "segment": f"{campaign}_adgroup_{rng.randint(1, 5)}",
            "tracker": f"ko{self._token(10)}",
            "site_id": f"site_{rng.randint(1, 400)}",
            "sub_site_id": f"sub_{rng.randint(1, 50)}",
            "creative_id": f"cr_{rng.randint(1, 250)}",
        }

    def _retarget(self) -> dict[str, str]:
        attribution = self._attribution(self._rng.choice(_RETARGETERS))
        attribution["click_id"] = self._token(12)
        return attribution

    def _add_value(self, params: dict[str, str], device: _Device, *, order: bool) -> None:
        price = self._rng.choice(_PRICES)
        currency = _CURRENCIES.get(device.country, "USD")
        params["event_value"] = str(round(price * 150)) if currency == "JPY" else f"{price:.2f}"
        params["currency"] = currency
        if order:
            params["order_id"] = f"GPA.{self._rng.randint(1000, 9999)}-{self._token(8)}-{self._seq}"

    def _maybe_user_id(self, params: dict[str, str], device: _Device) -> None:
        if device.user_id is None and self._rng.random() < self._user_id_rate:
            device.user_id = f"user_{self._token(10)}"  # the device logged in: keeps it from now on
        if device.user_id is not None:
            params["user_id"] = device.user_id

    # -- id shapes --------------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _kochava_id(self) -> str:
        return f"KI{self._rng.getrandbits(128):032X}"

    def _token(self, n: int) -> str:
        return "".join(self._rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n))
