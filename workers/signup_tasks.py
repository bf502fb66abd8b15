"""Sign-ups decided by a Celery worker, and the confirmation email of the double opt-in.

The web request only validates a sign-up and publishes `process_signup`; deciding what
it means for a known address happens here, where its timing can't be observed.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from celery import Task
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from newsletter import db, delivery, signup, tokens
from newsletter.message import OutgoingMessage, Recipient, build_message
from newsletter.models import EventKind, Subscriber, SubscriberStatus, Suppression, Topic
from newsletter.ratelimit import Limiter, private_key, shared_limiter
from newsletter.render import render_email
from newsletter.settings import settings
from newsletter.signup import CONFIRM_VALID_DAYS
from newsletter.subscribers import followed_topics, log_event
from workers.celery_app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 5


def _permanent(exc: Exception) -> bool:
    """5xx answers will not change on retry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and code >= 500


def _transactional_email(sub: Subscriber, template: str,
                         context: dict[str, Any]) -> OutgoingMessage:
    """One email to one subscriber, from templates/emails/<template>/ (no list headers:
    it is not a newsletter). The context gets the greeting, address and footer."""
    assert sub.id is not None
    name = " ".join(sub.name.split())
    rendered = render_email(template, {
        "greeting_name": name.split(" ", 1)[0] if name else "there",
        "email": sub.email,
        "base_url": settings.base_url.rstrip("/"),
        **context,
    })
    return build_message(
        subject=rendered.subject, html=rendered.html, text=rendered.text,
        recipient=Recipient(subscriber_id=sub.id, email=sub.email, name=sub.name),
        list_headers=False,
    )


def send_confirmation(subscriber_id: int) -> str:
    """Send the confirmation email if the subscriber is still pending.

    Returns what happened ("sent" or "skipped: ..."); safe to run twice (a second run
    sends a second, equally valid, link, never to a confirmed address).
    """
    with db.session_scope() as session:
        sub = session.get(Subscriber, subscriber_id)
        if sub is None or sub.id is None:
            return "skipped: unknown subscriber"
        if sub.status != SubscriberStatus.pending:
            return f"skipped: subscriber is {sub.status}"
        # A known address signing up again asked for these; they apply on confirmation.
        wanted = signup.requested_preferences(session=session, subscriber_id=sub.id) or {}
        slugs = wanted.get("topics") or followed_topics(session=session, subscriber_id=sub.id)
        names = {t.slug: t.name for t in session.exec(select(Topic)).all()}
        message = _transactional_email(sub, "confirm", {
            "topics": [names.get(s, s) for s in slugs],
            "confirm_url": signup.confirm_url(session=session, subscriber_id=sub.id),
            "valid_days": CONFIRM_VALID_DAYS,
        })
    delivery.send_one(message)
    with db.session_scope() as session:
        log_event(session=session, subscriber_id=subscriber_id,
                  kind=EventKind.confirmation_sent, source="worker",
                  data={"message_id": message.message_id})
    return "sent"


@app.task(bind=True, acks_late=True, max_retries=MAX_RETRIES,
          name="workers.signup_tasks.send_confirmation_email")
def send_confirmation_email(self: Task, subscriber_id: int) -> str:
    """Celery entry point: temporary SMTP trouble retries with backoff."""
    try:
        return send_confirmation(subscriber_id)
    except (smtplib.SMTPException, OSError) as exc:
        if _permanent(exc):
            log.warning("confirmation for subscriber %s refused: %s", subscriber_id, exc)
            return f"failed: {exc}"
        raise self.retry(exc=exc, countdown=min(600, 30 * 2 ** self.request.retries)) from exc


@app.task(acks_late=True, name="workers.signup_tasks.process_signup")
def process_signup(payload: dict[str, Any]) -> str:
    """Decide a sign-up (new, pending, known, suppressed, over the daily cap) and queue
    its confirmation email when one is due. Safe to run twice: the second run finds
    the claim taken (the cooldown) and sends nothing."""
    request = signup.SignupRequest.from_json(payload)
    allow = signup.daily_cap(shared_limiter(settings.redis_url))
    try:
        with db.session_scope() as session:
            outcome = signup.process_signup(session=session, request=request, allow=allow)
    except IntegrityError:
        return "skipped: the same address was signed up at the same moment"
    if outcome.subscriber_id is None or outcome.claimed_at is None:
        return "no email due"
    try:
        send_confirmation_email.apply_async(args=[outcome.subscriber_id], retry=False)
    except Exception:
        log.exception("could not queue the confirmation email for subscriber %s",
                      outcome.subscriber_id)
        with db.session_scope() as session:
            signup.release_confirmation(session=session, outcome=outcome)
        raise
    return "confirmation queued"


# --- "email me a fresh link" to the preference centre ---------------------------------------


def manage_link_cap(limiter: Limiter) -> signup.Allow:
    """At most MANAGE_LINKS_PER_DAY fresh links per address in any 24 hours."""

    def allow(email: str) -> bool:
        return limiter.hit(f"{settings.manage_links_per_day}/day", "manage-link",
                           private_key(email))

    return allow


def send_manage_link(email: str, *, allow: signup.Allow) -> str:
    """Email a fresh manage link to `email` if it has a subscription we may write to.

    Returns what happened, for the logs; the person who asked never learns it.
    """
    with db.session_scope() as session:
        sub = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
        if sub is None or sub.id is None or sub.email.endswith(signup.ERASED_SUFFIX):
            return "skipped: no such subscriber"
        suppressed = session.get(Suppression, email) is not None
        if suppressed or sub.status == SubscriberStatus.bounced:
            return "skipped: address is suppressed"
        if not allow(email):
            return "skipped: daily limit reached"
        message = _transactional_email(sub, "manage_link", {
            "manage_url": tokens.manage_url(sub.id),
            # MANAGE_LINK_DAYS comes with expiring manage links (issue 11, config part).
            "valid_days": getattr(settings, "manage_link_days", None),
        })
    delivery.send_one(message)
    return "sent"


@app.task(bind=True, acks_late=True, max_retries=MAX_RETRIES,
          name="workers.signup_tasks.send_manage_link_email")
def send_manage_link_email(self: Task, email: str) -> str:
    """Celery entry point: temporary SMTP trouble retries with backoff (the daily cap
    is already counted, so a retry is never refused by it)."""
    allow = manage_link_cap(shared_limiter(settings.redis_url))
    if self.request.retries:
        allow = _always
    try:
        return send_manage_link(email, allow=allow)
    except (smtplib.SMTPException, OSError) as exc:
        if _permanent(exc):
            log.warning("fresh manage link refused by the relay: %s", exc)
            return f"failed: {exc}"
        raise self.retry(exc=exc, countdown=min(600, 30 * 2 ** self.request.retries)) from exc


def _always(_email: str) -> bool:
    return True
