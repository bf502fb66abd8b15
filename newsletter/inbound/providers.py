"""Bounce and complaint webhooks of the relays operators use: each provider's payload
becomes a list of `Feedback`, checked whole before anything is recorded, then handed
to the bounce policy (`newsletter.inbound.policy`) in one transaction.

Authentication per provider: a bearer secret (generic), HTTP basic auth (Postmark), an
HMAC of timestamp+token (Mailgun), an SNS signature plus a topic allow-list (SES).
Secrets are compared in constant time. A provider whose secret is not set is refused
with 503 and a sentence naming the setting: never accepted silently.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as with_fields
from typing import Any

from sqlmodel import Session, col, select

from newsletter.inbound import policy
from newsletter.inbound.parse import verp_of
from newsletter.inbound.policy import Outcome
from newsletter.models import Delivery
from newsletter.settings import settings
from newsletter.subscribers import SubscriberError, get_by_email, normalise_email

MIN_SECRET_LENGTH = 16  # shorter shared secrets can be guessed: treated as not configured
MAILGUN_MAX_AGE = 600  # seconds a Mailgun signature stays acceptable (clock skew + retries)
MAX_EVENTS = 500  # per request: a generic batch larger than this is refused with a 413

PROVIDERS = ("generic", "ses", "postmark", "mailgun")


class WebhookError(Exception):
    """A refused request: the status to answer and a sentence saying why."""

    status_code = 400

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class Unauthorized(WebhookError):
    status_code = 401


class NotConfigured(WebhookError):
    status_code = 503


class Unavailable(WebhookError):
    """Something on the way failed (fetching a certificate): the provider should retry."""

    status_code = 503


class BadPayload(WebhookError):
    status_code = 400


class UnknownProvider(WebhookError):
    status_code = 404


@dataclass(frozen=True)
class Feedback:
    """One thing a provider tells us about one recipient."""

    kind: str  # bounce | complaint | unsubscribe
    email: str
    hard: bool = False
    status: str = ""  # enhanced status code, e.g. 5.1.1
    diagnostic: str = ""
    message_id: str = ""  # our Message-ID, when the payload carries it
    feedback_type: str = "abuse"
    # The provider's id for this event: recorded once, so retries change nothing.
    key: str | None = None
    # The envelope sender the relay saw: our VERP address names subscriber and issue
    # when the relay replaced our Message-ID with its own (SES does).
    envelope_sender: str = ""


# --- authentication -------------------------------------------------------------------


def _secret(value: str, setting: str, provider: str) -> str:
    if not value:
        raise NotConfigured(f"The {provider} webhook is not configured: set {setting}.")
    if len(value) < MIN_SECRET_LENGTH:
        raise NotConfigured(f"{setting} is too short for the {provider} webhook "
                            f"({MIN_SECRET_LENGTH} characters at least).")
    return value


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_bearer(authorization: str) -> None:
    secret = _secret(settings.webhook_secret, "WEBHOOK_SECRET", "generic")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not _same(token.strip(), secret):
        raise Unauthorized("A valid `Authorization: Bearer <WEBHOOK_SECRET>` is required.",
                           headers={"WWW-Authenticate": 'Bearer realm="webhooks"'})


def check_basic(authorization: str) -> None:
    user = settings.postmark_webhook_user
    if not user:
        raise NotConfigured("The postmark webhook is not configured: set "
                            "POSTMARK_WEBHOOK_USER and POSTMARK_WEBHOOK_PASSWORD.")
    password = _secret(settings.postmark_webhook_password, "POSTMARK_WEBHOOK_PASSWORD",
                       "postmark")
    refused = Unauthorized("The Postmark webhook's basic auth user or password is wrong.",
                           headers={"WWW-Authenticate": 'Basic realm="webhooks"'})
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise refused
    try:
        given_user, _, given_password = base64.b64decode(
            encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise refused from None
    # Both compared, always: how long this takes says nothing about which one was wrong.
    if not (_same(given_user, user) & _same(given_password, password)):
        raise refused


def check_mailgun(payload: Mapping[str, Any], *, now: float | None = None) -> str:
    """Verify Mailgun's signature; returns the token (recorded so it works once)."""
    key = _secret(settings.mailgun_webhook_signing_key, "MAILGUN_WEBHOOK_SIGNING_KEY",
                  "mailgun")
    signature = payload.get("signature")
    if not isinstance(signature, Mapping):
        raise Unauthorized("The Mailgun payload has no signature.")
    timestamp = str(signature.get("timestamp", ""))
    token = str(signature.get("token", ""))
    given = str(signature.get("signature", ""))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not _same(given, expected):
        raise Unauthorized("The Mailgun signature does not match.")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > MAILGUN_MAX_AGE:
        raise Unauthorized(f"The Mailgun signature is stale (older than {MAILGUN_MAX_AGE} s).")
    return token


def topic_allowed(topic_arn: str) -> bool:
    allowed = [a.strip() for a in settings.ses_topic_arns.split(",") if a.strip()]
    return any(_same(topic_arn, a) for a in allowed)


def check_ses_configured() -> None:
    if not settings.ses_topic_arns.strip():
        raise NotConfigured("The SES webhook is not configured: set SES_TOPIC_ARNS to the "
                            "SNS topic(s) your SES notifications are published to.")


# --- payloads -------------------------------------------------------------------------


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadPayload(f"{what} must be a JSON object.")
    return value


def _address(value: Any, where: str) -> str:
    try:
        return normalise_email(str(value or ""))
    except SubscriberError as exc:
        raise BadPayload(f"{where}: {exc}") from None


def _status_code(value: Any) -> str:
    """An enhanced status code (5.1.1) from text like `smtp; 550 5.1.1 user unknown`."""
    found = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", str(value or ""))
    return found.group(0) if found else ""


def parse_generic(payload: Any) -> list[Feedback]:
    """`{"events": [{"type": "bounce", "email": ..., "hard": true, "status": "5.1.1",
    "diagnostic": ..., "message_id": "<...>"}]}` (or one such object).
    `hard` may be left out when `status` starts with 5 (hard) or 4 (soft)."""
    body = _object(payload, "The body")
    events = body.get("events", [body])
    if not isinstance(events, list) or not events:
        raise BadPayload('"events" must be a non-empty list.')
    if len(events) > MAX_EVENTS:
        raise BadPayload(f"At most {MAX_EVENTS} events per request; send the rest separately.")
    out = []
    for n, raw in enumerate(events):
        where = f"events[{n}]"
        event = _object(raw, where)
        kind = str(event.get("type", ""))
        if kind not in ("bounce", "complaint", "unsubscribe"):
            raise BadPayload(f'{where}: "type" must be bounce, complaint or unsubscribe.')
        status = _status_code(event.get("status"))
        hard = event.get("hard")
        if kind == "bounce" and not isinstance(hard, bool):
            if not status:
                raise BadPayload(f'{where}: a bounce needs "hard" (true/false) or a '
                                 '"status" like 5.1.1.')
            hard = status.startswith("5")
        out.append(Feedback(
            kind=kind, email=_address(event.get("email"), where), hard=bool(hard),
            status=status, diagnostic=str(event.get("diagnostic", ""))[:1000],
            message_id=str(event.get("message_id", ""))[:255],
            feedback_type=str(event.get("feedback_type", "abuse"))[:32] or "abuse",
            key=f"generic:{event['id']}"[:200] if event.get("id") else None))
    return out


def _header(headers: Any, name: str) -> str:
    """A header from SES's [{name, value}] list or Mailgun's {name: value} mapping."""
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if str(key).lower() == name:
                return str(value)
    if isinstance(headers, list):
        for item in headers:
            if isinstance(item, Mapping) and str(item.get("name", "")).lower() == name:
                return str(item.get("value", ""))
    return ""


def parse_ses(notification: Any) -> list[Feedback]:
    """An SES notification (the SNS Message): Bounce (Permanent = hard; Transient and
    Undetermined = soft) or Complaint. Deliveries and other events are ignored."""
    body = _object(notification, "The SES notification")
    kind = str(body.get("notificationType") or body.get("eventType") or "")
    mail = body.get("mail") if isinstance(body.get("mail"), Mapping) else {}
    assert isinstance(mail, Mapping)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), Mapping) else {}
    assert isinstance(common, Mapping)
    # The original headers (when SES includes them) carry our Message-ID; the common
    # headers may carry the one SES put in its place.
    message_id = _header(mail.get("headers"), "message-id") or str(common.get("messageId") or "")
    sender = str(mail.get("returnPath") or mail.get("source") or "")
    if kind == "Bounce":
        bounce = _object(body.get("bounce"), "bounce")
        hard = bounce.get("bounceType") == "Permanent"
        recipients = bounce.get("bouncedRecipients")
        if not isinstance(recipients, list):
            raise BadPayload("bounce.bouncedRecipients must be a list.")
        out = []
        for n, raw in enumerate(recipients):
            rec = _object(raw, f"bouncedRecipients[{n}]")
            diagnostic = str(rec.get("diagnosticCode") or bounce.get("bounceSubType") or "")
            out.append(Feedback(
                kind="bounce", email=_address(rec.get("emailAddress"),
                                              f"bouncedRecipients[{n}]"),
                hard=hard, status=_status_code(rec.get("status")) or _status_code(diagnostic),
                diagnostic=diagnostic[:1000], message_id=message_id, envelope_sender=sender))
        return out
    if kind == "Complaint":
        complaint = _object(body.get("complaint"), "complaint")
        recipients = complaint.get("complainedRecipients")
        if not isinstance(recipients, list):
            raise BadPayload("complaint.complainedRecipients must be a list.")
        feedback_type = str(complaint.get("complaintFeedbackType") or "abuse")[:32]
        return [Feedback(kind="complaint",
                         email=_address(_object(r, "complainedRecipients").get("emailAddress"),
                                        f"complainedRecipients[{n}]"),
                         message_id=message_id, feedback_type=feedback_type,
                         envelope_sender=sender)
                for n, r in enumerate(recipients)]
    return []


# Postmark bounce types (TypeCode) that mean the address is gone for good; the other
# delivery problems (Transient, SoftBounce, DnsError, ...) are soft.
POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "Blocked"}
# Not delivery failures at all: an auto-reply is not a bounce (listmonk counts them).
POSTMARK_IGNORED = {"AutoResponder", "Subscribe", "AddressChange", "OpenRelayTest",
                    "ChallengeVerification", "Unconfirmed", "VirusNotification",
                    "SpamNotification", "TemplateRenderingFailed", "InboundError"}


def parse_postmark(payload: Any) -> list[Feedback]:
    """Postmark's Bounce and SpamComplaint webhooks (RecordType); others are ignored.
    A soft bounce counts once per message (Postmark's MessageID), however often it is
    reported while Postmark retries; everything else once per record (ID)."""
    body = _object(payload, "The body")
    record = str(body.get("RecordType", ""))
    if record not in ("Bounce", "SpamComplaint"):
        return []
    email = _address(body.get("Email"), "Email")
    message_id = _header(_postmark_headers(body), "message-id")
    bounce_type = str(body.get("Type", ""))
    key = f"postmark:{record}:{body['ID']}" if body.get("ID") is not None else None
    if record == "SpamComplaint" or bounce_type == "SpamComplaint":
        return [Feedback(kind="complaint", email=email, message_id=message_id, key=key)]
    if bounce_type == "Unsubscribe":
        return [Feedback(kind="unsubscribe", email=email, message_id=message_id, key=key)]
    if bounce_type in POSTMARK_IGNORED:
        return []
    hard = bounce_type in POSTMARK_HARD
    if not hard and body.get("MessageID"):
        key = f"postmark:soft:{body['MessageID']}:{email}"
    details = str(body.get("Details") or body.get("Description") or bounce_type)
    return [Feedback(kind="bounce", email=email, hard=hard, status=_status_code(details),
                     diagnostic=details[:1000], message_id=message_id, key=key)]


def _postmark_headers(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """Our Message-ID survives in the bounce's raw Content (when Postmark includes it)."""
    found = re.search(r"(?im)^Message-ID:\s*(<[^>\s]{1,250}>)", str(body.get("Content") or ""))
    return [{"name": "Message-ID", "value": found.group(1)}] if found else []


# Mailgun's reasons for a permanent failure that say nothing about the address: it gave
# up retrying ("old") or its own sending was blocked ("espblock"). Counted as soft.
MAILGUN_NOT_THE_ADDRESS = {"old", "espblock"}


def parse_mailgun(payload: Any, *, token: str = "") -> list[Feedback]:
    """Mailgun's `failed` (severity permanent = hard, temporary = soft), `complained`
    and `unsubscribed` events; others are ignored.

    Mailgun reports a temporary failure on every retry of one message, so those are
    keyed by the message: one soft bounce per message, however many retries failed.
    """
    body = _object(payload, "The body")
    data = _object(body.get("event-data"), "event-data")
    event = str(data.get("event", ""))
    email = _address(data.get("recipient"), "event-data.recipient")
    message = data.get("message") if isinstance(data.get("message"), Mapping) else {}
    assert isinstance(message, Mapping)
    raw_id = _header(message.get("headers"), "message-id").strip()
    message_id = f"<{raw_id.strip('<>')}>" if raw_id else ""
    event_key = f"mailgun:{data.get('id') or token}" if data.get("id") or token else None
    reason = str(data.get("reason") or "")
    envelope = data.get("envelope") if isinstance(data.get("envelope"), Mapping) else {}
    assert isinstance(envelope, Mapping)
    sender = str(envelope.get("sender") or "")
    if event == "complained" or reason == "suppress-complaint":
        return [Feedback(kind="complaint", email=email, message_id=message_id, key=event_key,
                         envelope_sender=sender)]
    if event == "unsubscribed" or reason == "suppress-unsubscribe":
        return [Feedback(kind="unsubscribe", email=email, message_id=message_id,
                         key=event_key, envelope_sender=sender)]
    if event != "failed":
        return []
    status = data.get("delivery-status")
    status = status if isinstance(status, Mapping) else {}
    diagnostic = str(status.get("message") or status.get("description") or reason)
    code = _status_code(status.get("enhanced-code")) or _status_code(diagnostic)
    hard = data.get("severity") == "permanent" and reason not in MAILGUN_NOT_THE_ADDRESS
    key = event_key
    if not hard and (message_id or token):
        key = f"mailgun:soft:{message_id or token}:{email}"
    return [Feedback(kind="bounce", email=email, hard=hard, status=code,
                     diagnostic=diagnostic[:1000], message_id=message_id, key=key,
                     envelope_sender=sender)]


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadPayload("The body is not JSON.") from None


# --- recording ------------------------------------------------------------------------


def keyed(feedback: Sequence[Feedback], key: str) -> list[Feedback]:
    """Give each piece of feedback the provider's event id (per recipient: one SES
    notification can name several), or leave them unkeyed when there is none."""
    if not key:
        return list(feedback)
    return [with_fields(f, key=f"{key}:{f.email}") for f in feedback]


def issue_for_message(*, session: Session, message_id: str) -> int | None:
    """The issue a message of ours belongs to, from the ledger's Message-ID."""
    if not message_id:
        return None
    wanted = message_id.strip()
    if not wanted.startswith("<"):
        wanted = f"<{wanted.strip('<>')}>"
    return session.exec(
        select(Delivery.issue_id).where(col(Delivery.message_id) == wanted[:255])
    ).first()


def record(*, session: Session, feedback: Sequence[Feedback], source: str) -> list[Outcome]:
    """Hand each piece of feedback to the bounce policy; the caller commits. An outcome
    with `duplicate` set means that event was recorded before and nothing changed."""
    outcomes = []
    for item in feedback:
        sub = get_by_email(session=session, email=item.email)
        subscriber_id = sub.id if sub is not None else None
        issue_id = issue_for_message(session=session, message_id=item.message_id)
        verp = verp_of(item.envelope_sender) if item.envelope_sender else None
        if verp is not None and verp[0] == subscriber_id and issue_id is None:
            issue_id = verp[1]
        if item.kind == "bounce":
            outcomes.append(policy.record_bounce(
                session=session, email=item.email, subscriber_id=subscriber_id,
                issue_id=issue_id, hard=item.hard, status=item.status,
                diagnostic=item.diagnostic, source=source, message_key=item.key))
        elif item.kind == "complaint":
            outcomes.append(policy.record_complaint(
                session=session, email=item.email, subscriber_id=subscriber_id,
                issue_id=issue_id, source=source, feedback_type=item.feedback_type,
                message_key=item.key))
        elif subscriber_id is not None:
            outcomes.append(policy.record_unsubscribe(
                session=session, subscriber_id=subscriber_id, issue_id=issue_id,
                source=source, message_key=item.key))
    return outcomes
