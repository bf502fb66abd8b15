"""Amazon SNS messages (how SES reports bounces and complaints over HTTPS): the signature
check against the certificate at SigningCertURL, and confirming a subscription.

The canonical string and the URL rules follow AWS's "Verifying the signatures of Amazon
SNS messages". Only URLs on an https `sns.<region>.amazonaws.com` host are ever fetched,
so a forged message cannot make us fetch (or trust) anything else.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger(__name__)

Fetch = Callable[[str], bytes]

# sns.us-east-1.amazonaws.com, and the China regions' sns.cn-north-1.amazonaws.com.cn
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
MAX_FETCH_BYTES = 64 * 1024
FETCH_TIMEOUT = 10.0

# The keys signed, in order, per message type (absent optional keys are left out).
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                      "TopicArn", "Type")
SIGNED_KEYS = {
    "Notification": _NOTIFICATION_KEYS,
    "SubscriptionConfirmation": _CONFIRMATION_KEYS,
    "UnsubscribeConfirmation": _CONFIRMATION_KEYS,
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # noqa: S303 - SignatureVersion 1 is SHA1withRSA by AWS's definition
    "2": hashes.SHA256,
}


class SnsError(Exception):
    """The message is not a genuine SNS message for us; nothing may be done with it."""


def is_sns_url(url: str) -> bool:
    """An https URL on an SNS host (no credentials, default port): the only URLs we fetch."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and parts.hostname is not None
            and SNS_HOST.fullmatch(parts.hostname) is not None
            and parts.username is None and parts.password is None
            and port in (None, 443)
            and parts.netloc.lower() in (parts.hostname, f"{parts.hostname}:443"))


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """`Key\\nvalue\\n` for each signed key present, in AWS's order."""
    keys = SIGNED_KEYS.get(str(message.get("Type", "")))
    if keys is None:
        raise SnsError(f"unknown SNS message type {str(message.get('Type'))[:40]!r}")
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise SnsError(f"the SNS message has no {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def fetch_url(url: str) -> bytes:
    """GET an SNS URL over https (certificate checked), at most 64 KB."""
    if not is_sns_url(url):  # checked again here: never fetch anything else
        raise SnsError(f"refusing to fetch {url[:200]!r}: not an https sns.*.amazonaws.com URL")
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 - https only, checked above
        return bytes(response.read(MAX_FETCH_BYTES))


class SnsClient:
    """Verifies SNS messages and confirms subscriptions. `fetch` is injectable (tests
    serve their own certificate); certificates are cached by URL, as AWS rotates them
    rarely and every message names one."""

    def __init__(self, fetch: Fetch = fetch_url, *, max_cached: int = 32) -> None:
        self.fetch = fetch
        self.max_cached = max_cached
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            cached = self._keys.get(url)
        if cached is not None:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(self.fetch(url))
        except SnsError:
            raise
        except Exception as exc:  # network errors, a body that is no certificate
            # Only AWS serves that URL (https, checked host): a failure is on the way
            # there, so SNS should retry (503), not be told the message was forged.
            raise ConnectionError(f"could not load the SNS signing certificate {url}: "
                                  f"{exc}") from exc
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsError("the signing certificate has no RSA key")
        with self._lock:
            if len(self._keys) >= self.max_cached:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = key
        return key

    def verify(self, message: Mapping[str, Any]) -> None:
        """Raise SnsError unless `message` carries a valid SNS signature (ConnectionError
        when the certificate cannot be fetched)."""
        version = str(message.get("SignatureVersion", ""))
        algorithm = _HASHES.get(version)
        if algorithm is None:
            raise SnsError(f"unsupported SignatureVersion {version[:10]!r}")
        cert_url = str(message.get("SigningCertURL", ""))
        if not is_sns_url(cert_url) or not urlsplit(cert_url).path.endswith(".pem"):
            raise SnsError("SigningCertURL is not an https sns.<region>.amazonaws.com .pem URL")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SnsError("the signature is not base64") from None
        data = canonical_string(message)
        try:
            self._public_key(cert_url).verify(signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsError("the SNS signature does not match the message") from None

    def confirm(self, message: Mapping[str, Any]) -> None:
        """Visit SubscribeURL (only on an SNS host) so SNS starts delivering."""
        url = str(message.get("SubscribeURL", ""))
        if not is_sns_url(url):
            raise SnsError("SubscribeURL is not an https sns.<region>.amazonaws.com URL")
        try:
            self.fetch(url)
        except SnsError:
            raise
        except Exception as exc:
            # SNS resends the confirmation; a 5xx makes it try again.
            raise ConnectionError(f"could not confirm the SNS subscription: {exc}") from exc
        log.info("confirmed the SNS subscription to %s", message.get("TopicArn"))
