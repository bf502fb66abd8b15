"""SMTP: one connection per batch, pipelined delivery, and what a reply means for the ledger."""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.delivery.ledger import SendError
from newsletter.settings import settings

if TYPE_CHECKING:
    from newsletter.message import OutgoingMessage

def relay_name() -> str:
    """host:port of the configured relay, for error messages an operator will read."""
    return f"{settings.smtp_host or '(SMTP_HOST unset)'}:{settings.smtp_port}"


def smtp_connect() -> smtplib.SMTP:
    """One authenticated connection to SMTP_HOST (reused for a whole batch).

    Raises smtplib's exceptions, OSError, or SendError when SMTP_HOST is unset; a batch
    treats all of them as the relay's failure, never a recipient's.
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


_HARD_BOUNCE_TEXT = re.compile(
    r"no such (user|mailbox|recipient)|user unknown|unknown user|mailbox (not found|unavailable)"
    r"|does not exist|invalid (recipient|mailbox|address)|recipient address rejected",
    re.IGNORECASE,
)
_HARD_BOUNCE_STATUS = re.compile(r"\b5\.1\.(?:[0-9]|10)\b")


def is_hard_bounce(code: int, text: str) -> bool:
    """A 5xx saying the address does not exist (5.1.x, or the usual wording)."""
    if not 500 <= code < 600:
        return False
    return bool(_HARD_BOUNCE_STATUS.search(text) or _HARD_BOUNCE_TEXT.search(text))


def deliver(conn: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> None:
    """One message to one recipient; raises smtplib's exceptions like `sendmail`.

    When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one
    write, saving two round trips per message, and dot-stuffing is a bytes.replace
    instead of smtplib's regex: this is the inner loop of every send.
    """
    conn.ehlo_or_helo_if_needed()
    if not (conn.has_extn("pipelining") and sender.isascii() and rcpt.isascii()
            and data.count(b"\n") == data.count(b"\r\n")):
        refused = conn.sendmail(sender, [rcpt], data)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return
    if "\r" in sender + rcpt or "\n" in sender + rcpt:
        raise ValueError("an SMTP address contains a line break")
    conn.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode("ascii"))
    mail_reply, rcpt_reply, data_reply = conn.getreply(), conn.getreply(), conn.getreply()
    if data_reply[0] == 354 and (mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)):
        conn.send(b".\r\n")  # the server wants a body we must not send: end it empty
        conn.getreply()
    if mail_reply[0] != 250:
        conn.rset()
        raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
    if rcpt_reply[0] not in (250, 251):
        conn.rset()
        raise smtplib.SMTPRecipientsRefused({rcpt: rcpt_reply})
    if data_reply[0] != 354:
        conn.rset()
        raise smtplib.SMTPDataError(*data_reply)
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    conn.send(body + b".\r\n")
    code, reply = conn.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _reply_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def describe(exc: BaseException) -> str:
    """An SMTP reply as `code text`, anything else as `Type: message`."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class SendVerdict:
    """How one recipient's attempt ended."""

    kind: str  # sent | deferred | failed | bounced | disconnected | relay
    error: str = ""


def classify(exc: BaseException) -> SendVerdict:
    """Map an smtplib/socket failure to what the ledger should do."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (0, b""))
        reply = f"{code} {_reply_text(text)}"
        if 400 <= code < 500:
            return SendVerdict("deferred", reply)
        return SendVerdict("bounced" if is_hard_bounce(code, reply) else "failed", reply)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendVerdict("disconnected", f"connection lost: {exc}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        # MAIL FROM is the same for every recipient: a refusal is our configuration
        # (sender address, auth) or the relay, and would refuse the whole batch.
        return SendVerdict("relay", f"the relay {relay_name()} refused the sender "
                                    f"{exc.sender}: {describe(exc)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500 or exc.smtp_code < 200:
            return SendVerdict("deferred", reply)
        return SendVerdict("bounced" if is_hard_bounce(exc.smtp_code, reply) else "failed", reply)
    if isinstance(exc, OSError | smtplib.SMTPException):
        return SendVerdict("disconnected", f"{type(exc).__name__}: {exc}")
    raise exc
