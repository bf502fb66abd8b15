"""The confirmation email of the double opt-in, sent by a Celery worker."""

from __future__ import annotations

import logging
import smtplib

from celery import Task
from sqlmodel import select

from newsletter import db, delivery, signup
from newsletter.message import Recipient, build_message
from newsletter.models import EventKind, Subscriber, SubscriberStatus, Topic
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
        name = " ".join(sub.name.split())
        rendered = render_email("confirm", {
            "greeting_name": name.split(" ", 1)[0] if name else "there",
            "email": sub.email,
            "topics": [names.get(s, s) for s in slugs],
            "confirm_url": signup.confirm_url(session=session, subscriber_id=sub.id),
            "valid_days": CONFIRM_VALID_DAYS,
            "base_url": settings.base_url.rstrip("/"),
        })
        message = build_message(
            subject=rendered.subject, html=rendered.html, text=rendered.text,
            recipient=Recipient(subscriber_id=sub.id, email=sub.email, name=sub.name),
            list_headers=False,
        )
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
