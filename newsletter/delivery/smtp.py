"""Synchronous SMTP for one-off messages (test sends, sign-up mail); batches use connection.py."""

from __future__ import annotations

import smtplib
from typing import TYPE_CHECKING

from newsletter.delivery.ledger import SendError
from newsletter.settings import settings

if TYPE_CHECKING:
    from newsletter.message import OutgoingMessage



def smtp_connect() -> smtplib.SMTP:
    """One authenticated connection to SMTP_HOST.

    Raises smtplib's exceptions, OSError, or SendError when SMTP_HOST is unset.
    """
    if not settings.smtp_host:
        raise SendError(
            "SMTP_HOST is not set (the CLI starts a local mail catcher when it is empty)")
    conn = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        # HELO here, so a refused greeting fails the connection, not the first recipient.
        conn.ehlo_or_helo_if_needed()
        if settings.smtp_starttls:
            conn.starttls()
        if settings.smtp_username:
            conn.login(settings.smtp_username, settings.smtp_password)
    except BaseException:
        conn.close()
        raise
    return conn


def send_one(message: OutgoingMessage) -> None:
    """Send one message synchronously (test sends, transactional email). Raises on failure."""
    conn = smtp_connect()
    try:
        refused = conn.sendmail(message.envelope_from, [message.to], message.data)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
    finally:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
