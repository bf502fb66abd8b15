"""What a message that came back means: a DSN, a complaint, an unsubscribe, an auto-reply.

Well-kept parsers first: the stdlib reads MIME (multipart/report, message/delivery-status,
message/feedback-report), `flufl.bounce` (Mailman's detectors) reads the non-standard
bounces; only the auto-reply heuristics are ours. Reading never touches the database:
`read_message` returns a `Reading`, and `process.py` matches it to a subscriber and hands
it to the policy.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

from newsletter.message import parse_verp
from newsletter.settings import settings

BOUNCE = "bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"
AUTO_REPLY = "auto_reply"
DELAY = "delay"  # a "still trying" notice: not a failure, nothing to do
UNKNOWN = "unknown"  # readable, but nothing we act on (a person's reply, a notice)
UNREADABLE = "unreadable"

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_UNSUB_SUBJECT = re.compile(r"^\s*unsubscribe-([A-Za-z0-9_\-.]+)\s*$", re.IGNORECASE)
# Subjects of vacation, out-of-office and challenge-response replies in the languages
# our readers write in most; headers (RFC 3834 and the de-facto ones) are checked first.
_AUTO_SUBJECT = re.compile(
    r"(auto(matic|matische)?[ -]?(reply|response|antwort|respuesta|réponse)|out of (the )?office"
    r"|vacation|on holiday|away from (my|the) (desk|office)|abwesen|absence|absent"
    r"|réponse automatique|respuesta automática|fuera de la oficina|risposta automatica"
    r"|please confirm (your|that you)|verify (you are|that you are) (a )?human|challenge"
    r"|sender verification|spam ?arrest|boxbe)",
    re.IGNORECASE,
)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response-suppress")
_CHALLENGE_HEADERS = ("x-boxbe-pending", "x-spamarrest-noauthlink", "x-challenge")


@dataclass
class Reading:
    """One message understood, before anyone looks it up."""

    kind: str
    message_key: str = ""  # "mid:<Message-ID>" or "sha256:<digest of the bytes>"
    verp: tuple[int, int | None] | None = None  # (subscriber id, issue id) from VERP
    original_message_ids: list[str] = field(default_factory=list)  # of our returned mail
    email: str | None = None  # Final-Recipient, the complained-about or failed address
    hard: bool = False
    status: str = ""
    diagnostic: str = ""
    feedback_type: str = ""
    auto_kind: str = ""
    token: str = ""  # the mailto unsubscribe token
    reason: str = ""  # why unreadable/unknown, for the log


def _text(value: object) -> str:
    """A header as readable text (RFC 2047 decoded); never raises."""
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except Exception:  # malformed encoded words: the raw value is still useful
        return str(value).strip()


def _addr(value: str) -> str:
    """The address in 'rfc822; user@x' or '<user@x>' forms, lower-cased."""
    value = value.split(";", 1)[-1].strip().strip("<>").strip()
    return value.lower()


Parts = list[tuple[Message, str]]  # every MIME part with its content type, read once


def _parts(msg: Message) -> Parts:
    return [(part, part.get_content_type()) for part in msg.walk()]


def _is_report(msg: Message, parts: Parts, report_type: str) -> bool:
    return (parts[0][1] == "multipart/report"
            and str(msg.get_param("report-type") or "").lower() == report_type) or any(
        ctype == f"message/{report_type}" for _part, ctype in parts)


def _returned_headers(parts: Parts) -> list[Message]:
    """The headers of our mail quoted in a report (message/rfc822, text/rfc822-headers)."""
    found: list[Message] = []
    for part, ctype in parts:
        if ctype == "message/rfc822":
            inner = part.get_payload()
            found += [m for m in (inner if isinstance(inner, list) else [inner])
                      if isinstance(m, Message)]
        elif ctype == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            found.append(email.message_from_bytes(body if isinstance(body, bytes) else b""))
    return found


def _returned_ids_and_verp(
        parts: Parts) -> tuple[list[str], tuple[int, int | None] | None]:
    """Message-IDs of our returned mail, and the VERP address in its Return-Path."""
    ids: list[str] = []
    verp = None
    for headers in _returned_headers(parts):
        mid = str(headers.get("Message-ID", "")).strip()
        if _MESSAGE_ID.fullmatch(mid):
            ids.append(mid)
        verp = verp or verp_of(str(headers.get("Return-Path", "")))
    return ids, verp


def verp_of(address: str) -> tuple[int, int | None] | None:
    """(subscriber, issue) when `address` is a VERP address of our BOUNCE_DOMAIN."""
    address = address.strip().strip("<>")
    if address.rpartition("@")[2].lower() != settings.bounce_domain.lower():
        return None
    return parse_verp(address)


def is_unsubscribe_address(address: str) -> bool:
    mailto = settings.unsubscribe_mailto.strip().lower()
    return bool(mailto) and address.strip().strip("<>").lower() == mailto


# --- the kinds of message -------------------------------------------------------------


def _read_dsn(parts: Parts, reading: Reading) -> Reading:
    """RFC 3464: the first per-recipient block that failed (or was delayed)."""
    for part, ctype in parts:
        if ctype != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:] or blocks:  # blocks[0] is the per-message part
            if not isinstance(block, Message):
                continue
            action = str(block.get("Action", "")).strip().lower()
            status_match = _STATUS.search(str(block.get("Status", "")))
            if not action or status_match is None:
                continue
            reading.email = _addr(str(block.get("Final-Recipient")
                                      or block.get("Original-Recipient") or "")) or None
            reading.status = status_match.group(0)
            reading.diagnostic = _text(block.get("Diagnostic-Code", "")).split(";", 1)[-1]
            reading.diagnostic = " ".join(reading.diagnostic.split())[:500]
            if action == "failed":
                reading.kind = BOUNCE
                reading.hard = reading.status.startswith("5")
                return reading
            if action == "delayed":
                reading.kind = DELAY
        if reading.kind == DELAY:
            return reading
        reading.kind = UNKNOWN
        reading.reason = "a delivery-status report with no failed recipient"
        return reading
    reading.kind = UNREADABLE
    reading.reason = "multipart/report for delivery-status without a readable status part"
    return reading


def _read_arf(parts: Parts, reading: Reading) -> Reading:
    """RFC 5965: the feedback-report part names the type and the original recipient."""
    for part, ctype in parts:
        if ctype != "message/feedback-report":
            continue
        payload = part.get_payload()
        report = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(report, Message):
            raw = part.get_payload(decode=True)
            report = email.message_from_bytes(raw if isinstance(raw, bytes) else b"")
        reading.feedback_type = str(report.get("Feedback-Type", "")).strip().lower() or "abuse"
        recipient = report.get("Original-Rcpt-To") or ""
        reading.email = _addr(str(recipient)) or None
        reading.kind = COMPLAINT
        return reading
    reading.kind = UNREADABLE
    reading.reason = "multipart/report for feedback without a feedback-report part"
    return reading


def _auto_reply_kind(msg: Message) -> str:
    """RFC 3834 Auto-Submitted and the de-facto headers and subjects; '' when not one."""
    subject = _text(msg.get("Subject"))
    if any(msg.get(h) for h in _CHALLENGE_HEADERS) or re.search(
            r"confirm|verif|challenge|spam ?arrest|boxbe", subject, re.IGNORECASE):
        challenge = True
    else:
        challenge = False
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    flagged = (auto.startswith("auto-") or any(msg.get(h) for h in _AUTO_HEADERS)
               or str(msg.get("Precedence", "")).strip().lower() == "auto_reply")
    by_subject = bool(_AUTO_SUBJECT.search(subject))
    if not (flagged or by_subject or any(msg.get(h) for h in _CHALLENGE_HEADERS)):
        return ""
    if challenge:
        return "challenge-response"
    return "vacation" if by_subject else "auto-reply"


def _looks_like_bounce(msg: Message, mail_from: str) -> bool:
    sender = _text(msg.get("From")).lower()
    return (mail_from.strip("<>") == "" or bool(msg.get("X-Failed-Recipients"))
            or "mailer-daemon" in sender or "postmaster" in sender)


def _read_flufl(msg: Message, reading: Reading) -> Reading:
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(msg)
    failed = sorted(permanent) or sorted(temporary)
    if not failed:
        return reading
    reading.kind = BOUNCE
    reading.hard = bool(permanent)
    reading.email = failed[0].decode("utf-8", "replace").lower()
    reading.status = "5.0.0" if permanent else "4.0.0"
    status = _STATUS.search(_body_text(msg))
    if status and status.group(1) == reading.status[0]:
        reading.status = status.group(0)
    reading.diagnostic = "non-standard bounce read by flufl.bounce"
    return reading


def _body_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw[:20000].decode("utf-8", "replace")
    return ""


def _defects(msg: Message) -> list[str]:
    return sorted({type(d).__name__ for part in msg.walk() for d in part.defects})


def message_key(msg: Message, raw: bytes) -> str:
    import hashlib

    mid = str(msg.get("Message-ID", "")).strip()
    if _MESSAGE_ID.fullmatch(mid):
        return f"mid:{mid}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def read_message(raw: bytes, *, recipient: str, mail_from: str = "") -> Reading:
    """What `raw`, sent to `recipient` (a VERP or the unsubscribe address), means."""
    try:
        msg = email.message_from_bytes(raw)
    except Exception as exc:  # the stdlib parser is lenient; this is belt and braces
        return Reading(kind=UNREADABLE, reason=f"cannot parse: {exc}",
                       message_key=message_key(Message(), raw))
    reading = Reading(kind=UNKNOWN, message_key=message_key(msg, raw))
    try:
        _classify(msg, reading, recipient=recipient, mail_from=mail_from)
    except Exception as exc:  # a detector choking on odd MIME must not stop the receiver
        reading.kind = UNREADABLE
        reading.reason = f"{type(exc).__name__}: {exc}"
    if reading.kind == UNKNOWN and _defects(msg):
        reading.kind = UNREADABLE
        reading.reason = "malformed MIME: " + ", ".join(_defects(msg))
    return reading


def _classify(msg: Message, reading: Reading, *, recipient: str, mail_from: str) -> None:
    parts = _parts(msg)
    # Feedback loops send complaints to the address the sender registered: the unsubscribe
    # address is a fine one to register, so a report is read wherever it arrives.
    if is_unsubscribe_address(recipient) and not _is_report(msg, parts, "feedback-report"):
        match = _UNSUB_SUBJECT.match(_text(msg.get("Subject")))
        if match:
            reading.kind, reading.token = UNSUBSCRIBE, match.group(1)
        else:
            reading.reason = "mail to the unsubscribe address without an unsubscribe token"
        return
    reading.verp = verp_of(recipient)
    if _is_report(msg, parts, "feedback-report"):
        _read_arf(parts, reading)
    elif _is_report(msg, parts, "delivery-status"):
        _read_dsn(parts, reading)
    elif _looks_like_bounce(msg, mail_from):
        _read_flufl(msg, reading)
    if reading.kind == UNKNOWN:
        # flufl.bounce's heuristics run only on what a mail server sent (null sender,
        # MAILER-DAEMON): on a person's reply they could see a bounce where there is none.
        auto = _auto_reply_kind(msg)
        if auto:
            reading.kind, reading.auto_kind = AUTO_REPLY, auto
    if reading.kind == UNKNOWN and not reading.reason:
        reading.reason = "not a bounce, complaint or auto-reply"
    reading.original_message_ids, returned_verp = _returned_ids_and_verp(parts)
    reading.verp = reading.verp or returned_verp
