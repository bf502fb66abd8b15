"""RFC 5322 messages: multipart/alternative bytes, list headers, VERP, DKIM.

`MessageFactory` is built once per (issue, composition) and pre-encodes everything
recipients share: the header block and the quoted-printable bodies between the
personal placeholders. Per recipient it only encodes the personal values and joins
bytes, so it stays far ahead of what an SMTP connection can carry.

User-controlled strings never become header syntax: control characters are removed
before a value reaches a header, and values go through `email.utils.formataddr` or
the stdlib header policy (RFC 2047 for non-ASCII).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import Header
from email.headerregistry import Address
from email.utils import format_datetime, formataddr
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from newsletter import branding  # issue 10: sender from the console
from newsletter.render import (
    PersonalValues,
    Recipient,
    RenderedDigest,
    SplitTemplate,
    one_line,
    personal_values,
)
from newsletter.settings import settings

__all__ = [
    "DKIM_HEADERS",
    "MessageFactory",
    "OutgoingMessage",
    "Recipient",
    "build_message",
    "parse_verp",
    "verp_address",
]

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"Reply-To",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"MIME-Version",
    b"Content-Type",
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext
_BAD_ADDR = re.compile(r"[\s<>()\[\]\\,;:\"\x00-\x1f\x7f]")
_VERP = re.compile(r"^bounces\+(\d+)(?:-(\d+))?@", re.IGNORECASE)
_POLICY = email_policy.SMTP.clone(max_line_length=78)
_UTF8_POLICY = email_policy.SMTPUTF8.clone(max_line_length=78)


@dataclass(frozen=True)
class OutgoingMessage:
    """What the SMTP client needs: envelope sender, one recipient, and the bytes."""

    envelope_from: str
    to: str
    message_id: str
    data: bytes
    # True when `data` has CRLF line ends only and no line starting with ".": it is
    # already its own SMTP DATA payload (RFC 5321 4.5.2), so the sender skips the
    # line-end check and dot-stuffing, which cost ~150 us per 50 KB message (more
    # than building it). MessageFactory knows this from its pieces; others leave it.
    wire_ready: bool = False


# --- small pieces ------------------------------------------------------------------


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def _check_addr(addr: str) -> str:
    addr = addr.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or _BAD_ADDR.search(addr):
        raise ValueError(f"not a usable email address: {addr!r}")
    return addr


def verp_address(subscriber_id: int, issue_id: int | None = None) -> str:
    """The envelope sender that tells us, when mail bounces, who and which issue."""
    suffix = f"-{int(issue_id)}" if issue_id is not None else ""
    return f"bounces+{int(subscriber_id)}{suffix}@{settings.bounce_domain}"


def parse_verp(address: str) -> tuple[int, int | None] | None:
    """(subscriber_id, issue_id) from a bounce address made by `verp_address`, else None."""
    match = _VERP.match(address.strip().strip("<>"))
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def fold_header(name: str, value: str) -> bytes:
    """One header line (folded, RFC 2047 where needed) from a value made safe first."""
    if not _HEADER_NAME.match(name):
        raise ValueError(f"not a valid header name: {name!r}")
    value = one_line(value)
    # Going through the header factory (not policy.fold on a str, which passes short
    # values through untouched) is what applies RFC 2047 to non-ASCII text.
    try:
        return _POLICY.header_factory(name, value).fold(policy=_POLICY).encode("ascii")
    except UnicodeEncodeError:
        # Only non-ASCII addresses get here (names are RFC 2047 encoded); they need
        # an SMTPUTF8-capable server anyway.
        folded = _UTF8_POLICY.header_factory(name, value).fold(policy=_UTF8_POLICY)
        return folded.encode("utf-8")


def address_header(name: str, display_name: str, addr: str) -> bytes:
    display_name = one_line(display_name)
    addr = _check_addr(one_line(addr))
    if display_name.isascii() and addr.isascii():
        # Fast path for the common case; formataddr quotes specials and escapes quotes.
        line = f"{name}: {formataddr((display_name, addr))}"
        if len(line) <= 998:
            return line.encode("ascii") + CRLF
    folded = fold_header(name, str(Address(display_name=display_name, addr_spec=addr)))
    if max(len(line) for line in folded.split(CRLF)) <= 998:
        return folded
    # A name with nowhere to fold (one very long word): encoded words can be split
    # anywhere, so the line limit holds whatever the name.
    words = Header(display_name, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {words}\r\n <{addr}>".encode() + CRLF


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        # "+0000": UTC and known to be (RFC 5322 3.3; "-0000" says the zone is unknown)
        stamp = format_datetime(datetime.fromtimestamp(now, UTC))
        _date_cache = (now, b"Date: " + stamp.encode("ascii") + CRLF)
    return _date_cache[1]


def _message_id(domain: str) -> str:
    return f"<{int(time.time())}.{secrets.token_hex(10)}@{domain}>"


# Printable ASCII without "=" or spaces, short enough for one line: quoted-printable
# leaves it as it is (most personal values: the signed links, issue 9, are all this).
_QP_PLAIN = re.compile(r"(?!\.)[!-<>-~]{0,75}")


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends (b2a_qp keeps LF ends when the input has LF).

    A "." starting a line is encoded too (=2E, as RFC 2045 allows for any character),
    so no line of ours needs dot-stuffing: MJML's CSS puts ".mj-..." rules at line
    starts in every digest (see OutgoingMessage.wire_ready).
    """
    if _QP_PLAIN.fullmatch(text):
        return text.encode("ascii")
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(
        b"\n", CRLF
    )
    if encoded.startswith(b".") or b"\n." in encoded:
        encoded = _encode_leading_dots(encoded)
    return encoded


def _encode_leading_dots(encoded: bytes) -> bytes:
    """Quoted-printable lines with a leading "." written as "=2E", still <= 76 characters."""
    lines: list[bytes] = []
    for line in encoded.split(CRLF):
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
            while len(line) > 76:
                cut = 75  # leaves room for the soft break's "="
                while b"=" in line[cut - 2 : cut]:  # never split an "=XX" escape
                    cut -= 1
                lines.append(line[:cut] + b"=")
                line = line[cut:]
                if line.startswith(b"."):
                    line = b"=2E" + line[1:]
        lines.append(line)
    return CRLF.join(lines)


class _EncodedBody:
    """A body template pre-encoded as quoted-printable around its placeholders.

    Each literal and each value is encoded on its own and followed by a soft line
    break, so every piece starts at column 0 and no line exceeds 76 characters
    whatever the personal values are. Decoding removes the soft breaks again.
    """

    __slots__ = ("_parts", "_slots", "wire_safe")

    def __init__(self, template: SplitTemplate) -> None:
        parts: list[bytes] = []
        slots: list[tuple[int, str]] = []
        for index, literal in enumerate(template.literals):
            encoded = _qp(literal)
            if index < len(template.keys):
                parts.append(encoded + SOFT_BREAK)
                slots.append((len(parts), template.keys[index]))
                parts.append(b"")
            else:
                parts.append(encoded)
        self._parts = parts
        self._slots = tuple(slots)
        # Every piece starts a line, so the whole is wire-safe when each piece is.
        self.wire_safe = all(wire_safe(part) for part in parts)

    def encode(self, values: Mapping[str, str]) -> bytes:
        """The body for these values. Wire-safe when the template is (`wire_safe`): each
        value is a _qp() chunk, which never has a bare LF or a line starting with "."."""
        parts = self._parts.copy()
        done: dict[str, bytes] = {}  # a digest repeats each story's click link (issue 9)
        for index, key in self._slots:
            chunk = done.get(key)
            if chunk is None:
                chunk = done[key] = _qp(values[key]) + SOFT_BREAK
            parts[index] = chunk
        return b"".join(parts)


def wire_safe(chunk: bytes) -> bool:
    """CRLF line ends only, and no line (counting the chunk's start) starts with "."."""
    return (not chunk.startswith(b".") and b"\n." not in chunk
            and chunk.count(b"\n") == chunk.count(b"\r\n"))


def _part_head(boundary: bytes, subtype: str) -> bytes:
    return (
        b"--" + boundary + CRLF
        + f'Content-Type: text/{subtype}; charset="utf-8"'.encode() + CRLF
        + b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF
    )


def _boundary() -> bytes:
    # "=_" never occurs in quoted-printable output, so the boundary cannot collide.
    return f"=_roundup_{secrets.token_hex(12)}".encode("ascii")


def _static_headers(subject: str, *, list_headers: bool, boundary: bytes) -> bytes:
    brand = branding.current()  # issue 10: From, Reply-To and list name set in the console
    lines = [
        address_header("From", brand.mail_from_name, brand.mail_from_address),
        address_header("Reply-To", "", brand.reply_to) if brand.reply_to else b"",
        fold_header("Subject", subject),
    ]
    if list_headers:
        lines.append(fold_header("List-Id", f"{brand.newsletter_name} <{settings.list_id}>"))
        lines.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF)
    lines.append(b"MIME-Version: 1.0" + CRLF)
    lines.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"' + CRLF)
    return b"".join(lines)


def _list_unsubscribe(values: PersonalValues) -> bytes:
    uris = [f"<{values.unsubscribe_url}>"]
    if settings.unsubscribe_mailto:
        mailto = _check_addr(settings.unsubscribe_mailto)
        uris.append(f"<mailto:{mailto}?subject=unsubscribe-{values.unsubscribe_token}>")
    # URIs we made ourselves (URL-safe token); fold between them.
    return ("List-Unsubscribe: " + ",\r\n ".join(uris)).encode("ascii") + CRLF


# --- DKIM ---------------------------------------------------------------------------
# dkimpy signs in pure Python (about 9 ms a message with a 2048-bit key), which alone
# would cap a send at ~100 messages/s. We sign with OpenSSL through `cryptography`
# (relaxed headers, simple body: our QP bodies carry no trailing whitespace). Tests
# verify the signatures with dkimpy.


class DkimSettingsError(ValueError):
    """DKIM is half configured: a key without a domain or a domain without a key."""


@lru_cache(maxsize=4)
def _dkim_key(path: str, mtime: float) -> RSAPrivateKey:
    """The key at `path` as it was at `mtime` (a replaced key file is read again)."""
    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, RSAPrivateKey):  # workers refuse to start with one (preflight)
        raise DkimSettingsError(f"{path} is not an RSA private key (we sign rsa-sha256)")
    return key


_WSP = re.compile(rb"[ \t]+")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


def _header_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, raw value still folded) for each header in `head`, in order."""
    fields: list[tuple[bytes, bytes]] = []
    for field in _FIELD_END.split(head):
        name, _, value = field.partition(b":")
        if value:
            fields.append((name.strip().lower(), value))
    return fields


def dkim_header_names(fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The h= list: each of DKIM_HEADERS once per instance present, plus once more.

    The extra, empty entry over-signs the header (RFC 6376 section 8.15): a second
    Subject:, From: or List-Unsubscribe: added in transit breaks the signature
    instead of being shown to the reader next to a valid one. All of DKIM_HEADERS
    are single-instance headers, so all are over-signed.
    """
    counts = Counter(name for name, _ in fields)
    return [n for name in DKIM_HEADERS for n in [name.lower()] * (counts[name.lower()] + 1)]


def _select(fields: list[tuple[bytes, bytes]], names: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The instances `names` sign, taken from the bottom up as verifiers do (RFC 6376
    5.4.2); a name with no instance left signs nothing."""
    chosen: list[tuple[bytes, bytes]] = []
    last: dict[bytes, int] = {}
    for name in names:
        i = last.get(name, len(fields))
        while i > 0:
            i -= 1
            if fields[i][0] == name:
                chosen.append(fields[i])
                break
        last[name] = i
    return chosen


def _relaxed(name: bytes, value: bytes) -> bytes:
    return name + b":" + _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t") + CRLF


def _dkim_signature(data: bytes, key: RSAPrivateKey, selector: str, domain: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    head, _, body = data.partition(b"\r\n\r\n")
    body = body.rstrip(b"\r\n") + CRLF if body.strip(b"\r\n") else CRLF
    body_hash = base64.b64encode(hashlib.sha256(body).digest())
    fields = _header_fields(head + CRLF)
    signed = dkim_header_names(fields)
    tags = (
        b"v=1; a=rsa-sha256; c=relaxed/simple; d=" + domain.encode("ascii")
        + b"; s=" + selector.encode("ascii") + b";\r\n t=" + str(int(time.time())).encode()
        + b"; h=" + _fold_names(signed) + b";\r\n bh=" + body_hash + b";\r\n b="
    )
    canonical = b"".join(_relaxed(n, v) for n, v in _select(fields, signed))
    canonical += _relaxed(b"dkim-signature", tags)[:-2]
    signature = base64.b64encode(
        key.sign(canonical, padding.PKCS1v15(), hashes.SHA256())
    )
    folded = b"\r\n ".join(signature[i : i + 72] for i in range(0, len(signature), 72))
    return b"DKIM-Signature: " + tags + folded + CRLF


def _fold_names(names: list[bytes]) -> bytes:
    # Over-signing makes h= long; fold it (whitespace around ":" is allowed in h=).
    lines, line = [], b""
    for name in names:
        if line and len(line) + len(name) > 64:
            lines.append(line)
            line = b""
        line += (b":" if line or lines else b"") + name
    return b"\r\n ".join([*lines, line])


def dkim_sign(data: bytes) -> bytes:
    """Prepend a DKIM-Signature when DKIM_PRIVATE_KEY_PATH and DKIM_DOMAIN are set.

    Only one of them set is a mistake, never a reason to send unsigned mail: workers
    refuse to start with it (newsletter/preflight/startup.py), and this refuses too.
    """
    key_path, domain = settings.dkim_private_key_path, settings.dkim_domain
    if not key_path and not domain:
        return data
    if not key_path or not domain:
        raise DkimSettingsError(
            "DKIM_PRIVATE_KEY_PATH and DKIM_DOMAIN must be set together; only "
            + ("DKIM_PRIVATE_KEY_PATH" if key_path else "DKIM_DOMAIN") + " is set")
    path = Path(key_path)
    key = _dkim_key(str(path), path.stat().st_mtime)
    return _dkim_signature(data, key, settings.dkim_selector, domain) + data


# --- building -------------------------------------------------------------------------


class MessageFactory:
    """Builds one issue's messages for one composition; `build` is the hot path."""

    def __init__(
        self, *, digest: RenderedDigest, issue_id: int, subject: str | None = None
    ) -> None:
        self.digest = digest
        self.issue_id = issue_id
        self._domain = _domain_of(branding.current().mail_from_address)
        self._boundary = _boundary()
        self._static = _static_headers(
            subject if subject is not None else digest.subject,
            list_headers=True,
            boundary=self._boundary,
        )
        self._text_head = CRLF + _part_head(self._boundary, "plain")
        self._html_head = CRLF + _part_head(self._boundary, "html")
        self._end = CRLF + b"--" + self._boundary + b"--" + CRLF
        self._text = _EncodedBody(digest.text_template)
        self._html = _EncodedBody(digest.html_template)
        # Checked once per composition; the personal values are _qp() chunks (safe).
        self._wire_ready = self._text.wire_safe and self._html.wire_safe and all(
            wire_safe(part) for part in (self._static, self._text_head, self._html_head,
                                         self._end))

    def build(self, recipient: Recipient) -> OutgoingMessage:
        values = self.digest.values(recipient)
        message_id = _message_id(self._domain)
        text = self._text.encode(values.for_text())
        html = self._html.encode(values.for_html())
        # Header lines start with a name and folded ones with a space: never a ".".
        head = b"".join((
            _date_header(),
            address_header("To", recipient.name, recipient.email),
            b"Message-ID: " + message_id.encode("ascii") + CRLF,
            _list_unsubscribe(values),
        ))
        data = b"".join((head, self._static, self._text_head, text, self._html_head, html,
                         self._end))
        return OutgoingMessage(
            envelope_from=verp_address(recipient.subscriber_id, self.issue_id),
            to=recipient.email,
            message_id=message_id,
            data=dkim_sign(data),
            wire_ready=self._wire_ready and head.count(b"\n") == head.count(b"\r\n"),
        )


def build_message(
    *,
    subject: str,
    html: str,
    text: str,
    recipient: Recipient,
    issue_id: int | None = None,
    extra_headers: Mapping[str, str] | None = None,
    list_headers: bool = True,
) -> OutgoingMessage:
    """One message with finished bodies (confirmation emails, test sends)."""
    boundary = _boundary()
    domain = _domain_of(branding.current().mail_from_address)
    message_id = _message_id(domain)
    head = [
        _date_header(),
        address_header("To", recipient.name, recipient.email),
        b"Message-ID: " + message_id.encode("ascii") + CRLF,
    ]
    if list_headers:
        head.append(_list_unsubscribe(personal_values(recipient)))
    reserved = {"date", "to", "message-id", "from", "subject", "mime-version", "content-type"}
    for name, value in (extra_headers or {}).items():
        if name.lower() in reserved:
            raise ValueError(f"{name} is set by build_message, not extra_headers")
        head.append(fold_header(name, value))
    data = b"".join(
        (
            *head,
            _static_headers(subject, list_headers=list_headers, boundary=boundary),
            CRLF,
            _part_head(boundary, "plain"),
            _qp(text),
            CRLF,
            _part_head(boundary, "html"),
            _qp(html),
            CRLF + b"--" + boundary + b"--" + CRLF,
        )
    )
    return OutgoingMessage(
        envelope_from=verp_address(recipient.subscriber_id, issue_id),
        to=recipient.email,
        message_id=message_id,
        data=dkim_sign(data),
    )

