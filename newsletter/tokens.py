"""Signed, URL-safe tokens for the links in every email (confirm, manage, unsubscribe).

A token carries only a subscriber id, signed with SECRET_KEY and a salt per purpose,
so a manage token can never be replayed as an unsubscribe or confirm token.

Rotation: SECRET_KEY signs; it and every key in SECRET_KEY_FALLBACKS verify (an
itsdangerous key list, newest last), so links already sent keep working. Unsubscribe
links never expire; manage links expire after MANAGE_LINK_DAYS.
"""

from __future__ import annotations

import hmac
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

from newsletter.preflight.secret import ensure_secret_key, signing_keys
from newsletter.settings import settings

CONFIRM = "confirm"
MANAGE = "manage"
UNSUBSCRIBE = "unsubscribe"
CLICK = "click"  # a story link in a digest: (subscriber, issue, item)


class BadToken(Exception):
    """A token that was tampered with, expired, or made for another purpose."""


class ExpiredToken(BadToken):
    """A genuine token older than its purpose allows (a page can offer a fresh link)."""


def max_age_for(purpose: str) -> int | None:
    """How long a purpose's links live, in seconds; None: for ever (unsubscribe must
    work from any old email, RFC 8058 and the mailbox providers' rules)."""
    if purpose == MANAGE:
        return settings.manage_link_days * 24 * 3600
    return None


def secret_keys() -> tuple[str, ...]:
    """The fallback keys then SECRET_KEY (which signs): give this to any itsdangerous
    serializer so old signatures verify after a rotation."""
    return tuple(signing_keys())


def _serializer(secret: str | tuple[str, ...], purpose: str) -> URLSafeTimedSerializer:
    """A serializer for `purpose`. SECRET_KEY itself (or no key) stands for the whole key
    list, so every reader also verifies with SECRET_KEY_FALLBACKS and nothing ever
    signs with an empty key."""
    if isinstance(secret, str) and (not secret or secret == settings.secret_key):
        secret = secret_keys()
    return _cached_serializer((secret,) if isinstance(secret, str) else secret, purpose)


@lru_cache(maxsize=64)
def _cached_serializer(keys: tuple[str, ...], purpose: str) -> URLSafeTimedSerializer:
    # Building a serializer derives keys; tokens are made once per recipient per
    # send, so reuse one per (keys, purpose). The keys are part of the cache key so a
    # changed SECRET_KEY (tests, rotation) never reuses a stale serializer.
    return URLSafeTimedSerializer(list(keys), salt=f"roundup.{purpose}")


def _signing_key(secret: str, purpose: str) -> tuple[bytes, Callable[..., Any]]:
    """The HMAC key and digest itsdangerous derives for a purpose (it re-derives
    them on every signature); from the key that signs, never from an empty one."""
    return _cached_signing_key(secret or ensure_secret_key(), purpose)


@lru_cache(maxsize=64)
def _cached_signing_key(secret: str, purpose: str) -> tuple[bytes, Callable[..., Any]]:
    signer = _cached_serializer((secret,), purpose).make_signer()
    return signer.derive_key(), signer.algorithm.digest_method  # type: ignore[attr-defined]


def make_token(purpose: str, subscriber_id: int) -> str:
    """Exactly what `_serializer(...).dumps(subscriber_id)` returns (the tests compare
    them), built without the per-call objects itsdangerous makes: two tokens per
    recipient were most of the cost of personalising a message."""
    if not purpose:
        raise ValueError("a token needs a purpose")
    secret = settings.secret_key or ensure_secret_key()  # the hot path: no key list
    key, digest = _signing_key(secret, purpose)
    digits = str(int(subscriber_id)).encode("ascii")
    # An int's JSON is its digits; zlib (with its 6 bytes of framing) cannot shorten
    # nine of them, so only longer ids may need the serializer's compressed form.
    payload = (
        base64_encode(digits)
        if len(digits) <= 9
        else _serializer(secret, purpose).dump_payload(int(subscriber_id))
    )
    value = payload + b"." + base64_encode(int_to_bytes(int(time.time())))
    return (value + b"." + base64_encode(hmac.digest(key, value, digest))).decode("ascii")


def read_token(purpose: str, token: str, *, max_age: int | None = None) -> int:
    """The subscriber id in `token`; BadToken if it is not a valid `purpose` token,
    ExpiredToken if it is older than `max_age` (default: the purpose's lifetime)."""
    if max_age is None:
        max_age = max_age_for(purpose)
    try:
        value = _serializer(secret_keys(), purpose).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise ExpiredToken(str(exc)) from exc
    except BadSignature as exc:  # BadTimeSignature is a subclass
        raise BadToken(str(exc)) from exc
    if type(value) is not int:
        raise BadToken("token does not carry a subscriber id")
    return value


_now_b64: tuple[int, bytes] = (0, b"")


def _timestamp() -> bytes:
    """The current second as itsdangerous encodes it, computed once per second."""
    global _now_b64
    now = int(time.time())
    if _now_b64[0] != now:
        _now_b64 = (now, base64_encode(int_to_bytes(now)))
    return _now_b64[1]


@lru_cache(maxsize=8)
def _hmac_pair(key: bytes, digest: Callable[..., Any]) -> tuple[Any, Any]:
    """HMAC's inner and outer hashes, keyed once: copying them is the cheapest HMAC in
    CPython (hmac.digest looks the algorithm up in OpenSSL on every call)."""
    inner, outer = digest(), digest()
    key = key.ljust(inner.block_size, b"\0")  # derived keys are shorter than a block
    inner.update(bytes(b ^ 0x36 for b in key))
    outer.update(bytes(b ^ 0x5C for b in key))
    return inner, outer


def make_click_token(subscriber_id: int, issue_id: int, item_id: int) -> str:
    """What `_serializer(..., CLICK).dumps([subscriber, issue, item])` returns (the
    tests compare them), built with C base64 and a pre-keyed HMAC: a digest carries one
    per story per recipient, and itsdangerous's per-call objects made building a
    message several times slower."""
    # The key that signs, as make_token finds it; the pair is cached by the key itself.
    inner, outer = _hmac_pair(*_signing_key(settings.secret_key, CLICK))
    fields = f"[{int(subscriber_id)},{int(issue_id)},{int(item_id)}]"
    value = urlsafe_b64encode(fields.encode("ascii")).rstrip(b"=") + b"." + _timestamp()
    mac = inner.copy()
    mac.update(value)
    signed = outer.copy()
    signed.update(mac.digest())
    signature = urlsafe_b64encode(signed.digest()).rstrip(b"=")
    return (value + b"." + signature).decode("ascii")


def read_click_token(token: str) -> tuple[int, int, int]:
    """(subscriber, issue, item) of a click token, else BadToken. No expiry: a story
    link in an old email keeps working."""
    try:
        value = _serializer(settings.secret_key, CLICK).loads(token)
    except BadSignature as exc:
        raise BadToken(str(exc)) from exc
    if not isinstance(value, list) or len(value) != 3 or any(type(v) is not int for v in value):
        raise BadToken("token does not carry a story click")
    return value[0], value[1], value[2]


def url_for_token(path: str, token: str) -> str:
    """The web app's URL for a token made elsewhere (one token, several links)."""
    return f"{settings.base_url.rstrip('/')}/{path}/{token}"


def _url(path: str, purpose: str, subscriber_id: int) -> str:
    return url_for_token(path, make_token(purpose, subscriber_id))


def manage_url(subscriber_id: int) -> str:
    return _url("manage", MANAGE, subscriber_id)


def unsubscribe_url(subscriber_id: int) -> str:
    """GET shows a confirmation page; a POST with List-Unsubscribe=One-Click unsubscribes."""
    return _url("unsubscribe", UNSUBSCRIBE, subscriber_id)


def confirm_url(subscriber_id: int) -> str:
    return _url("confirm", CONFIRM, subscriber_id)
