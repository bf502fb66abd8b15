"""`newsletter inbound` as a process, taking mail over SMTP from smtplib, after a real send.

An issue is sent through the in-process batch to the aiosmtpd test server; what the
recipients' servers answer comes back to the VERP envelope sender of each message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes

import pytest
from sqlmodel import Session, select

from newsletter import delivery
from newsletter.inbound import policy
from newsletter.models import Event, InboundMessage, Issue, IssueStatus, Subscriber, Suppression
from newsletter.settings import settings
from tests.fixtures.inbound import (
    InboundProcess,
    arf,
    dsn,
    inbound_process,
    plain,
    shared_database_url,
    shared_inbound,
    vacation,
)
from tests.fixtures.mail import SMTPTestServer

__all__ = ["inbound_process", "shared_inbound"]  # fixtures, imported for pytest

# One receiver process serves the module; its database is emptied before each test.
database_url = pytest.fixture(shared_database_url)

pytestmark = pytest.mark.timeout(120)


class Sent:
    """One sent issue: each subscriber's delivered message (envelope sender and bytes)."""

    def __init__(self, issue: Issue, subscribers: list[Subscriber],
                 server: SMTPTestServer) -> None:
        self.issue = issue
        self.subscribers = subscribers
        self.messages = {m.rcpt_tos[0]: m for m in server.messages}

    def verp(self, sub: Subscriber) -> str:
        return self.messages[sub.email].mail_from

    def data(self, sub: Subscriber) -> bytes:
        return self.messages[sub.email].data


@pytest.fixture
def sent(session: Session, make_issue: Callable[..., Issue],
         make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer) -> Sent:
    issue = make_issue(items=["A story", "Another story"], status=IssueStatus.approved)
    subscribers = [make_subscriber(email=f"reader{n}@example.org") for n in range(4)]
    delivery.plan_send(session=session, issue_id=issue.id)
    session.commit()
    delivery.run_batch(session=session, issue_id=issue.id, batch=1)
    smtp_server.wait_for(len(subscribers))
    return Sent(issue, subscribers, smtp_server)


@pytest.fixture
def receiver(shared_inbound: InboundProcess) -> InboundProcess:
    return shared_inbound.mark()


def status_of(session: Session, sub: Subscriber) -> str:
    session.expire_all()
    fresh = session.get(Subscriber, sub.id)
    assert fresh is not None
    return fresh.status


def suppressed(session: Session, sub: Subscriber) -> Suppression | None:
    session.expire_all()
    return session.get(Suppression, sub.email)


def events(session: Session) -> list[tuple[int | None, int | None, str, str]]:
    session.expire_all()
    return [(e.subscriber_id, e.issue_id, e.kind, e.source)
            for e in session.exec(select(Event).order_by(Event.id)).all()
            if e.kind not in ("signed_up", "confirmed")]


def test_hard_bounce_dsn_suppresses_the_address_at_once(session, sent, receiver):
    first = sent.subscribers[0]
    code, _ = receiver.send(sent.verp(first), dsn(to=sent.verp(first), final_recipient=first.email,
                                                  status="5.1.1", original=sent.data(first)))
    assert code == 250
    assert status_of(session, first) == "bounced"
    reason = suppressed(session, first).reason
    assert "5.1.1" in reason and "User unknown" in reason
    assert events(session) == [(first.id, sent.issue.id, "bounced", "smtp")]
    assert all(status_of(session, s) == "confirmed" for s in sent.subscribers[1:])


def test_soft_bounce_dsns_suppress_on_the_third(session, sent, receiver):
    second = sent.subscribers[1]
    for n in range(1, 4):
        code, _ = receiver.send(second and sent.verp(second),
                                dsn(to=sent.verp(second), final_recipient=second.email,
                                    status="4.2.2"))
        assert code == 250
        expected = "bounced" if n == 3 else "confirmed"
        assert status_of(session, second) == expected, n
        assert (suppressed(session, second) is not None) == (n == 3), n
    assert "3 soft bounces" in suppressed(session, second).reason
    assert [k for _, _, k, _ in events(session)] == ["soft_bounced"] * 3 + ["bounced"]


def test_the_same_dsn_twice_counts_once(session, sent, receiver):
    sub = sent.subscribers[1]
    message = dsn(to=sent.verp(sub), final_recipient=sub.email, status="4.2.2")
    for _ in range(3):
        assert receiver.send(sent.verp(sub), message)[0] == 250
    assert status_of(session, sub) == "confirmed"
    assert policy.soft_bounce_count(session=session, subscriber_id=sub.id) == 1
    assert len(session.exec(select(InboundMessage)).all()) == 1


def test_arf_complaint_unsubscribes_and_suppresses(session, sent, receiver):
    sub = sent.subscribers[2]
    code, _ = receiver.send(sent.verp(sub), arf(to=sent.verp(sub), original=sent.data(sub),
                                                recipient=sub.email))
    assert code == 250
    assert status_of(session, sub) == "unsubscribed"
    assert "complaint (abuse)" in suppressed(session, sub).reason
    assert [k for _, i, k, _ in events(session) if i == sent.issue.id] == [
        "complained", "unsubscribed"]


def test_arf_complaint_to_the_unsubscribe_address_finds_the_reader_by_message_id(
        session, sent, receiver):
    sub = sent.subscribers[1]
    to = settings.unsubscribe_mailto
    code, _ = receiver.send(to, arf(to=to, original=sent.data(sub), recipient=sub.email))
    assert code == 250
    assert status_of(session, sub) == "unsubscribed"
    assert suppressed(session, sub) is not None


def _unsubscribe_mailto(data: bytes) -> tuple[str, str]:
    header = str(message_from_bytes(data)["List-Unsubscribe"])
    match = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", header.replace("\r\n ", ""))
    assert match, header
    return match.group(1), match.group(2)


def test_mailto_unsubscribe_with_the_token_from_list_unsubscribe(session, sent, receiver):
    sub = sent.subscribers[3]
    address, subject = _unsubscribe_mailto(sent.data(sub))
    assert address == settings.unsubscribe_mailto
    code, _ = receiver.send(address, plain(to=address, subject=subject, sender=sub.email),
                            mail_from=sub.email)
    assert code == 250
    assert status_of(session, sub) == "unsubscribed"
    assert suppressed(session, sub) is None  # an unsubscribe is not a suppression
    assert events(session) == [(sub.id, sent.issue.id, "unsubscribed", "mailto")]


def test_mailto_unsubscribe_with_a_forged_token_changes_nothing(session, sent, receiver):
    sub = sent.subscribers[3]
    address, subject = _unsubscribe_mailto(sent.data(sub))
    token = subject.removeprefix("unsubscribe-")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    other = sent.subscribers[0]
    for bad in (f"unsubscribe-{forged}", f"unsubscribe-{other.id}", "unsubscribe"):
        assert receiver.send(address, plain(to=address, subject=bad))[0] == 250
    assert all(status_of(session, s) == "confirmed" for s in sent.subscribers)
    assert events(session) == []
    assert "invalid token" in receiver.log()


def test_vacation_auto_reply_changes_nothing(session, sent, receiver):
    sub = sent.subscribers[0]
    for _ in range(4):  # more than SOFT_BOUNCE_LIMIT: still never a bounce
        reply = vacation(to=sent.verp(sub), sender=sub.email)
        assert receiver.send(sent.verp(sub), reply, mail_from=sub.email)[0] == 250
    assert status_of(session, sub) == "confirmed"
    assert suppressed(session, sub) is None
    assert {k for _, _, k, _ in events(session)} == {"auto_reply"}


def test_mail_to_any_other_address_is_refused_at_rcpt(session, sent, receiver):
    for rcpt in (
        "someone@example.org",  # an open relay attempt
        "editors@roundup.example",
        "bounces+1-1@elsewhere.example",  # a VERP shape on another domain
        "postmaster@bounces.roundup.example",
        "bounces@bounces.roundup.example",
    ):
        code, text = receiver.send(rcpt, plain(to=rcpt, subject="hello"))
        assert code == 550 and b"relay access denied" in text, rcpt
    assert events(session) == [] and receiver.quarantined() == []
    assert "refused RCPT TO:<someone@example.org>" in receiver.log()


def test_malformed_mime_is_quarantined_and_changes_nothing(session, sent, receiver):
    sub = sent.subscribers[0]
    broken = (b"From: MAILER-DAEMON@mx.example.org\r\nTo: " + sent.verp(sub).encode()
              + b"\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\nContent-Type: multipart/"
              b"report; report-type=delivery-status; boundary=\"gone\"\r\n\r\n"
              b"\xff\xfe no boundary ever \x00 comes\r\n--wrong\r\nStatus: 5.1.1\r\n")
    assert receiver.send(sent.verp(sub), broken)[0] == 250
    assert status_of(session, sub) == "confirmed" and suppressed(session, sub) is None
    assert events(session) == []
    assert len(receiver.quarantined()) == 1
    assert "unreadable" in receiver.log() and "kept in" in receiver.log()
    # and the receiver goes on working
    again = dsn(to=sent.verp(sub), final_recipient=sub.email, status="5.1.1")
    assert receiver.send(sent.verp(sub), again)[0] == 250
    assert status_of(session, sub) == "bounced"


def test_a_10_mb_message_is_refused_with_the_limit_and_changes_nothing(session, sent, receiver):
    sub = sent.subscribers[0]
    padding = b"".join(b"X-Padding-%d: %s\r\n" % (n, b"x" * 900) for n in range(11_000))
    huge = dsn(to=sent.verp(sub), final_recipient=sub.email, status="5.1.1",
               original=padding + b"\r\n")
    assert len(huge) > 10_000_000
    code, text = receiver.send(sent.verp(sub), huge)
    assert code == 552
    assert str(settings.inbound_max_bytes).encode() in text
    assert "over INBOUND_MAX_BYTES" in receiver.log()
    assert status_of(session, sub) == "confirmed" and events(session) == []
    assert receiver.alive()


def test_dsn_for_an_unknown_subscriber_is_quarantined(session, sent, receiver):
    sub = sent.subscribers[0]
    stranger = sent.verp(sub).replace(f"+{sub.id}-", "+987654-")
    for verp in (stranger, sent.verp(sub).replace(f"-{sent.issue.id}@", "-999@")):
        assert receiver.send(verp, dsn(to=verp, final_recipient=sub.email,
                                       status="5.1.1"))[0] == 250
    assert all(status_of(session, s) == "confirmed" for s in sent.subscribers)
    assert session.exec(select(Suppression)).all() == [] and events(session) == []
    assert len(receiver.quarantined()) == 2
    log = receiver.log()
    assert "VERP names subscriber 987654 and issue" in log
    assert f"subscriber {sub.id} and issue 999: we sent them nothing" in log
    assert receiver.alive()


def test_a_bounce_quoting_our_message_id_finds_the_recipient(session, sent, receiver):
    """A relay that rewrote the envelope (no issue in VERP) still leaves the Message-ID."""
    sub = sent.subscribers[2]
    bare_verp = f"bounces+{sub.id}@{settings.bounce_domain}"
    code, _ = receiver.send(bare_verp, dsn(to=bare_verp, final_recipient=sub.email,
                                           status="5.1.1", original=sent.data(sub)))
    assert code == 250
    assert events(session) == [(sub.id, sent.issue.id, "bounced", "smtp")]


def test_a_database_failure_answers_451_and_the_retry_records_it(session, sent, receiver):
    """The sender keeps a message we could not record and tries again: nothing is lost."""
    from sqlalchemy import text

    from newsletter import db

    sub = sent.subscribers[0]
    message = dsn(to=sent.verp(sub), final_recipient=sub.email, status="5.1.1")
    engine = db.get_engine()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE inboundmessage RENAME TO inboundmessage_away"))
    try:
        code, text_ = receiver.send(sent.verp(sub), message)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE inboundmessage_away RENAME TO inboundmessage"))
    assert code == 451 and b"try again later" in text_
    assert status_of(session, sub) == "confirmed" and events(session) == []
    assert "answered 451" in receiver.log()
    assert receiver.send(sent.verp(sub), message)[0] == 250
    assert status_of(session, sub) == "bounced"


def test_sigterm_stops_the_receiver_cleanly(session, sent, inbound_process):
    own = inbound_process()
    sub = sent.subscribers[0]
    assert own.send(sent.verp(sub), dsn(to=sent.verp(sub), final_recipient=sub.email,
                                        status="5.1.1"))[0] == 250
    own.proc.terminate()
    assert own.proc.wait(20) == 0
    assert "inbound SMTP stopped" in own.log()
    assert status_of(session, sub) == "bounced"


def test_a_verp_bounce_for_mail_sent_long_ago_is_not_believed(session, sent, receiver):
    """VERP ids can be guessed; without our Message-ID a bounce must be for recent mail."""
    from datetime import timedelta

    from newsletter.models import Delivery, utcnow

    sub = sent.subscribers[0]
    row = session.exec(select(Delivery).where(Delivery.subscriber_id == sub.id)).one()
    row.sent_at = utcnow() - timedelta(days=40)
    session.add(row)
    session.commit()
    forged = dsn(to=sent.verp(sub), final_recipient=sub.email, status="5.1.1")
    assert receiver.send(sent.verp(sub), forged)[0] == 250
    assert status_of(session, sub) == "confirmed" and events(session) == []
    assert "too late to be a real bounce" in receiver.log()
    # with our Message-ID quoted, the same bounce is believed
    real = dsn(to=sent.verp(sub), final_recipient=sub.email, status="5.1.1",
               original=sent.data(sub))
    assert receiver.send(sent.verp(sub), real)[0] == 250
    assert status_of(session, sub) == "bounced"
