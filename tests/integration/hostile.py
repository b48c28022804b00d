"""Hypothesis strategies for hostile HTTP requests against the receiver, and a raw-socket client.

Requests are built as raw bytes (method, target, headers, body), so nothing on the client side
normalises what the receiver sees: invalid methods, malformed percent-encodings, invalid UTF-8, BOMs,
lying Content-Type / Content-Encoding / Content-Length, oversized tokens and bodies.
"""

from __future__ import annotations

import fnmatch
import gzip
import http.client
import socket
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import yaml
from hypothesis import strategies as st

from tests.harness import ROOT

POSTBACKS = "/v1/kochava/postbacks"
LINKS = "/v1/identity/links"
WEBHOOK = "/v1/segment/webhook"
ENDPOINTS = (POSTBACKS, LINKS, WEBHOOK, "/healthz", "/readyz", "/metrics")
ODD_PATHS = (
    "/",
    POSTBACKS + "/",
    "/" + POSTBACKS,
    POSTBACKS + "%00",
    "/V1/KOCHAVA/POSTBACKS",
    "/table/profiles/",
    "/router/",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/",
    "/v1/" + "a" * 3000,
    "*",
    "http://evil.example/v1/kochava/postbacks",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "FOO", "G ET")

#: Raw emails the fuzz puts into postbacks: none may appear anywhere kseg writes or answers.
EMAILS = ("fuzz.victim.alpha@example.org", "Fuzz.Victim.Beta+tag@Example.COM")


@dataclass(frozen=True)
class Secrets:
    postback_token: str
    link_token: str
    webhook_secret: str
    header_secret: str
    write_key: str
    header_name: str = "X-Kseg-Webhook-Secret"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.postback_token, self.link_token, self.webhook_secret, self.header_secret, self.write_key)


@dataclass
class HostileRequest:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    note: str = ""
    valid_postback: bool = False

    def raw(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1".encode("utf-8", "surrogateescape")]
        lines += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


@dataclass
class Answer:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def send(port: int, request: HostileRequest, timeout: float = 20.0) -> Answer:
    """One request on its own connection to 127.0.0.1, read with the stdlib's HTTP/1.1 parser."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.raw())
        response = http.client.HTTPResponse(sock, method=request.method.split(" ")[0])
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return Answer(None)
        body = b"" if request.method == "HEAD" else response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


# ---- pieces -------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_weird_text = st.one_of(
    _text,
    st.sampled_from(
        ["", " ", "null", "undefined", "0", "-1", "NaN", "1e309", "\x00", "\ufeff", "‮", "🦄" * 5]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
        max_size=20,
    ),
    st.integers(min_value=1, max_value=5000).map(lambda n: "x" * n),
)
_percent_junk = st.sampled_from(
    ["%", "%z", "%zz", "%C3%28", "%FF%FE", "%00", "%E2%82", "%ED%A0%80", "%%%", "+%2B"]
)
_param_key = st.one_of(
    st.sampled_from(
        [
            "kochava_device_id",
            "idfa",
            "idfv",
            "adid",
            "event_name",
            "event_value",
            "currency",
            "timestamp",
            "network_name",
            "campaign_name",
            "profile",
            "email",
            "token",
            "attribution_type",
        ]
    ),
    _text,
)
_event_name = st.sampled_from(
    [
        "_install",
        "_reinstall",
        "Purchase",
        "Level Complete",
        "_session",
        "",
        "%",
        "Order Completed",
        "x" * 500,
    ]
)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _weird_text,
)
_json = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(_param_key, children, max_size=6)
    ),
    max_leaves=25,
)


def _qs(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@st.composite
def postback_params(draw: st.DrawFn, longest: int = 5000) -> dict[str, str]:
    """Postback fields a Kochava template could carry, with hostile but deliverable values (each at
    most `longest` characters)."""
    params = {
        "kochava_device_id": "KD" + draw(st.text(alphabet="ABCDEF0123456789", min_size=6, max_size=12)),
        "event_name": draw(_event_name),
    }
    for key, value in draw(st.dictionaries(_param_key, _weird_text, max_size=6)).items():
        if key not in ("token", "kochava_device_id"):
            params[key] = value[:longest]
    if draw(st.booleans()):
        params["email"] = draw(st.sampled_from(EMAILS))
    return params


#: Every header kseg reads (and a few it should ignore), in any case, plus arbitrary token names.
_header_name = st.one_of(
    st.sampled_from(
        [
            b"X-Odd", b"Expect", b"Connection", b"X-Forwarded-For", b"Cookie", b"Range", b"User-Agent",
            b"Authorization", b"Content-Type", b"Content-Encoding", b"X-Signature", b"X-Kseg-Webhook-Secret",
            b"Host", b"Accept-Encoding", b"user-agent", b"CONTENT-TYPE", b"Transfer-Encoding",
        ]
    ),
    st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            min_size=1, max_size=30).map(str.encode),
)  # fmt: skip
#: Header values: known troublemakers, and arbitrary bytes (any but CR and LF, which end the field).
_header_value = st.one_of(
    st.sampled_from(
        [b"", b"\xff\xfe", b"100-continue", b"close", b"a" * 9000, b"1.2.3.4, ::1", b"v", b"gzip, br",
         b"Bearer \xc3\x28", b"application/json; charset=latin-1", b"multipart/form-data; boundary=",
         b"\xed\xa0\x80", b"caf\xc3\xa9", b"chunked, identity"]
    ),
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)  # fmt: skip


# ---- requests -----------------------------------------------------------------------------------


def _credential(draw: st.DrawFn, secrets: Secrets, path: str) -> list[tuple[bytes, bytes]]:
    choice = draw(
        # Half the time the right credential, so hostile bodies get past auth to the parsers.
        st.sampled_from(["right"] * 7 + ["postback", "link", "wrong", "huge", "none", "basic", "non_ascii"])
    )
    right = secrets.link_token if path == LINKS else secrets.postback_token
    value = {
        "right": right,
        "postback": secrets.postback_token,
        "link": secrets.link_token,
        "wrong": "not-a-token",
        "huge": "t" * 7000,
        "basic": "",
        "non_ascii": "\u0442\u043e\u043a\u0435\u043d",
    }.get(choice)
    if choice == "none":
        return []
    if choice == "basic":
        return [(b"Authorization", b"Basic Zm9vOmJhcg==")]
    assert value is not None
    return [(b"Authorization", b"Bearer " + value.encode())]


@st.composite
def valid_postback(draw: st.DrawFn, secrets: Secrets) -> HostileRequest:
    """A postback the receiver must accept (200) whatever its values: it must then reach Segment or
    become a dead letter."""
    params = draw(postback_params(longest=600))  # a GET's request line stays under 8 KiB
    if draw(st.booleans()):
        target = f"{POSTBACKS}?{_qs([*params.items(), ('token', secrets.postback_token)])}"
        return HostileRequest("GET", target, [(b"Host", b"x")], note="valid GET", valid_postback=True)
    body = _dumps(params)
    encoding = draw(st.sampled_from(["", "gzip", "deflate"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    headers = [
        (b"Host", b"x"),
        (b"Content-Type", b"application/json"),
        (b"Authorization", b"Bearer " + secrets.postback_token.encode()),
        (b"Content-Length", str(len(body)).encode()),
    ]
    if encoding:
        headers.append((b"Content-Encoding", encoding.encode()))
    return HostileRequest(
        "POST", POSTBACKS, headers, body, note=f"valid POST {encoding}", valid_postback=True
    )


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "json",
                "json_scalar",
                "deep",
                "big",
                "bad_utf8",
                "bom",
                "form",
                "junk",
                "empty",
                "nul",
                "bigint",
            ]
        )
    )
    if kind == "json":
        return _dumps(draw(_json))
    if kind == "json_scalar":
        return _dumps(draw(JSON_LEAF))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=20_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return (opener * depth).encode()
    if kind == "big":
        return b'{"kochava_device_id":"KDBIG","pad":"' + b"x" * draw(st.integers(60_000, 200_000)) + b'"}'
    if kind == "bigint":
        return b'{"kochava_device_id":"KDBIGINT","event_value":1' + b"0" * 400 + b',"n":-1e999}'
    if kind == "bad_utf8":
        return b'{"kochava_device_id":"\xff\xfe\xc3\x28","event_name":"\xed\xa0\x80"}'
    if kind == "bom":
        return "\ufeff".encode() + _dumps(draw(postback_params()))
    if kind == "form":
        return (
            _qs([(k, v) for k, v in draw(postback_params()).items()]).encode() + draw(_percent_junk).encode()
        )
    if kind == "nul":
        return b"\x00" * draw(st.integers(1, 100))
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=300))


@st.composite
def hostile_request(draw: st.DrawFn, secrets: Secrets) -> HostileRequest:
    """Anything at all: odd methods, paths, query strings, headers, bodies and encodings."""
    path = draw(st.one_of(st.sampled_from(ENDPOINTS), st.sampled_from(ODD_PATHS)))
    method = (
        draw(st.sampled_from(METHODS))
        if draw(st.integers(0, 3)) == 0
        else draw(st.sampled_from(["GET", "POST"]))
    )
    pairs = [(k, v) for k, v in draw(postback_params()).items()] if draw(st.booleans()) else []
    query = _qs(pairs)
    if draw(st.booleans()):
        query += "&" + draw(_percent_junk) + "=" + draw(_percent_junk)
    if draw(st.booleans()):
        token = draw(
            st.sampled_from([secrets.postback_token, secrets.link_token, "wrong", "%ff%fe", "t" * 7000])
        )
        query += "&token=" + token
    target = f"{path}?{query}" if query and path != "*" else path
    headers: list[tuple[bytes, bytes]] = [
        (b"Host", draw(st.sampled_from([b"x"] * 6 + [b"", b"\xff", b"a" * 300])))
    ]
    headers += _credential(draw, secrets, path)
    body = draw(_body())
    ctype = draw(
        st.sampled_from(
            [
                None,
                b"application/json",
                b"application/json; charset=utf-16",
                b"application/x-www-form-urlencoded",
                b"text/plain",
                b"multipart/form-data; boundary=zz",
                b"application/xml",
                b"\xff\xfe garbage/;;;",
                b"application/json, text/html",
            ]
        )
    )
    if ctype is not None:
        headers.append((b"Content-Type", ctype))
    encoding = draw(
        st.sampled_from([None, "gzip", "deflate", "gzip-lie", "br", "gzip, gzip", "x-gzip", "??"])
    )
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "gzip, gzip":
        body = gzip.compress(gzip.compress(body))
    if encoding is not None:
        headers.append((b"Content-Encoding", b"gzip" if encoding == "gzip-lie" else encoding.encode()))
    # Mostly well-framed, so most requests get past the HTTP parser to kseg's own code.
    length = draw(st.sampled_from(["exact"] * 7 + ["short", "chunked", "none"]))
    if length == "exact":
        headers.append((b"Content-Length", str(len(body)).encode()))
    elif length == "short" and body:
        headers.append((b"Content-Length", str(len(body) // 2).encode()))
    elif length == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    if path == WEBHOOK:
        if draw(st.booleans()):
            headers.append((b"X-Signature", draw(st.sampled_from([b"00" * 20, b"", b"\xff", b"z" * 5000]))))
        if draw(st.booleans()):
            secret = draw(st.sampled_from([secrets.header_secret, "wrong", ""]))
            headers.append((secrets.header_name.encode(), secret.encode()))
    for name, value in draw(st.lists(st.tuples(_header_name, _header_value), max_size=3)):
        headers.append((name, value))
    headers.append((b"Connection", b"close"))
    return HostileRequest(method, target, headers, body, note=f"hostile {method} {path} {encoding} {length}")


def seed_postbacks(secrets: Secrets) -> list[HostileRequest]:
    """Explicit valid postbacks run first in every fuzz run, so the delivery accounting always has
    something to count: GET and POST, gzip and deflate, a raw email, odd but deliverable values."""
    bearer = (b"Authorization", b"Bearer " + secrets.postback_token.encode())
    out = []
    for i, extra in enumerate(
        [
            {"event_name": "_install", "network_name": "Net \u202e", "email": EMAILS[0]},
            {"event_name": "Purchase", "event_value": "4.99", "currency": "USD", "email": EMAILS[1]},
            {"event_name": "Level Complete", "level": "%zz", "note": "\x00\ufeff"},
            {"event_name": "Purchase", "event_value": "-1", "currency": "USD"},  # a dead letter
            {"event_name": "_install", "profile": "no-such-profile"},  # a dead letter
        ]
    ):
        params = {"kochava_device_id": f"KDSEED{i}", **extra}
        query = _qs([*params.items(), ("token", secrets.postback_token)])
        out.append(
            HostileRequest(
                "GET", f"{POSTBACKS}?{query}", [(b"Host", b"x")], note="seed GET", valid_postback=True
            )
        )
        for name, body in (
            ("gzip", gzip.compress(_dumps({**params, "kochava_device_id": f"KDSEEDZ{i}"}))),
            ("deflate", zlib.compress(_dumps({**params, "kochava_device_id": f"KDSEEDD{i}"}))),
        ):
            headers = [
                (b"Host", b"x"),
                (b"Content-Type", b"application/json"),
                bearer,
                (b"Content-Encoding", name.encode()),
                (b"Content-Length", str(len(body)).encode()),
            ]
            out.append(
                HostileRequest(
                    "POST", POSTBACKS, headers, body, note=f"seed POST {name}", valid_postback=True
                )
            )
    return out


@st.composite
def postback_with_hostile_headers(draw: st.DrawFn, secrets: Secrets) -> HostileRequest:
    """A valid postback carrying fuzzed headers: the handler runs, and reads what it reads (a 4xx is
    fine here, a 5xx is not)."""
    request = draw(valid_postback(secrets))
    extra = draw(st.lists(st.tuples(_header_name, _header_value), min_size=1, max_size=3))
    return HostileRequest(
        request.method,
        request.target,
        [*request.headers, *extra, (b"Connection", b"close")],
        request.body,
        note=f"{request.note} + hostile headers",
    )


def any_request(secrets: Secrets) -> st.SearchStrategy[HostileRequest]:
    """Mostly hostile requests, with enough valid postbacks that delivery accounting means something,
    and valid postbacks with fuzzed headers (so header handling past authentication is exercised)."""
    return st.one_of(
        hostile_request(secrets),
        hostile_request(secrets),
        valid_postback(secrets),
        postback_with_hostile_headers(secrets),
    )


# ---- values as Kochava meant them -----------------------------------------------------------------

#: Postback keys of the default profile whose values land, as text, in Segment traits and warehouse
#: columns: key -> (identify trait, warehouse column).
MAPPED = {
    "campaign_name": ("kochava_campaign", "campaign"),
    "network_name": ("kochava_network", "network"),
    "creative_id": ("kochava_creative", "creative"),
    "site_id": ("kochava_site", "site"),
}
#: Bytes a query string may carry unescaped (RFC 3986 unreserved and sub-delims, minus `&`, `=`, `+`).
LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$'()*,;:@/?")
#: Not UTF-8 on its own: a lone continuation byte, a truncated sequence, an encoded surrogate, 0xFF.
INVALID_UTF8 = [b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xff", b"\xc0\xaf"]

# Values the mapping keeps as they are: non-empty, no surrounding space, not a placeholder word or
# macro (those rules are the mapping's, docs/mapping.md), no NUL (PostgreSQL text cannot hold one).
_inner = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=60
)
_value = _inner.map(lambda text: f"v{text}z")
#: The default profile leaves credentials and identifiers out of properties (its `drop_params`).
DROPPED = yaml.safe_load((ROOT / "app/mapping/profiles/kochava-default.yaml").read_text())["drop_params"]
_extra_key = (
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF), max_size=20)
    .map(lambda text: f"x_{text}")
    .filter(lambda key: not any(fnmatch.fnmatchcase(key.lower(), pat.lower()) for pat in DROPPED))
)


@st.composite
def encoded(draw: st.DrawFn, data: bytes, form: bool) -> bytes:
    """`data` percent-encoded byte by byte, each escape chosen freely where the byte allows it."""
    out = bytearray()
    for byte in data:
        how = draw(st.sampled_from(["literal", "upper", "lower"]))
        if byte == 0x20 and draw(st.booleans()):
            out += b"+"
        elif how == "literal" and (byte in LITERAL or (form and byte >= 0x80)):
            out.append(byte)  # a form body may carry raw UTF-8; a request line may not (HTTP parser: 400)
        else:
            escape = f"%{byte:02X}"
            out += (escape if how != "lower" else escape.lower()).encode()
    return bytes(out)


@st.composite
def meant_postback(draw: st.DrawFn, n: int) -> tuple[dict[str, str], bytes, tuple[str, bool] | None, bool]:
    """(fields as meant, the encoded `key=value&...`, the key made undecodable if any and whether in its
    name rather than its value, sent as a form body?)."""
    form = draw(st.booleans())
    fields = {"event_name": "_install", "kochava_device_id": f"KDVAL{n:05d}"}
    for key in MAPPED:
        fields[key] = draw(_value)
    fields.update(draw(st.dictionaries(_extra_key, _value, max_size=3)))
    bad_key = draw(st.sampled_from([None, None, None, *sorted(fields)]))
    in_name = bad_key is not None and bad_key.startswith("x_") and draw(st.booleans())
    parts = []
    for key, value in fields.items():
        raw_key, raw = key.encode(), value.encode()
        if key == bad_key:
            target = raw_key if in_name else raw
            cut = draw(st.integers(0, len(target)))
            while 0 < cut < len(target) and (target[cut] & 0xC0) == 0x80:
                cut -= 1  # insert at a character boundary, so the rest stays valid
            target = target[:cut] + draw(st.sampled_from(INVALID_UTF8)) + target[cut:]
            raw_key, raw = (target, raw) if in_name else (raw_key, target)
        parts.append(draw(encoded(raw_key, form)) + b"=" + draw(encoded(raw, form)))
    return fields, b"&".join(parts), (None if bad_key is None else (bad_key, in_name)), form
