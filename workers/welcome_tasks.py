"""The welcome email, sent by a Celery worker once a subscription is confirmed."""

from __future__ import annotations

import logging
import smtplib

from celery import Task

from newsletter import db, delivery
from newsletter.message import Recipient, build_message
from newsletter.subscribers import log_event
from newsletter.welcome import SENT_KIND, render_welcome
from workers.celery_app import app
from workers.signup_tasks import MAX_RETRIES, _permanent

log = logging.getLogger(__name__)


def send_welcome(subscriber_id: int) -> str:
    """Send the welcome email unless it was sent or the subscriber is no longer confirmed."""
    with db.session_scope() as session:
        welcome = render_welcome(session=session, subscriber_id=subscriber_id)
        if welcome is None:
            return "skipped"
        sub = welcome.subscriber
        message = build_message(
            subject=welcome.email.subject, html=welcome.email.html, text=welcome.email.text,
            recipient=Recipient(subscriber_id=subscriber_id, email=sub.email, name=sub.name),
        )
    delivery.send_one(message)
    with db.session_scope() as session:
        log_event(session=session, subscriber_id=subscriber_id, kind=SENT_KIND,
                  source="worker", data={"message_id": message.message_id})
    return "sent"


@app.task(bind=True, acks_late=True, max_retries=MAX_RETRIES,
          name="workers.welcome_tasks.send_welcome_email")
def send_welcome_email(self: Task, subscriber_id: int) -> str:
    """Celery entry point: temporary SMTP trouble retries with backoff."""
    try:
        return send_welcome(subscriber_id)
    except (smtplib.SMTPException, OSError) as exc:
        if _permanent(exc):
            log.warning("welcome for subscriber %s refused: %s", subscriber_id, exc)
            return f"failed: {exc}"
        raise self.retry(exc=exc, countdown=min(600, 30 * 2 ** self.request.retries)) from exc
