"""What a message that came back means, read without a database (parse.read_message)."""

from __future__ import annotations

import pytest

from newsletter.inbound import parse
from tests.fixtures.inbound import arf, dsn, plain, vacation

VERP = "bounces+12-34@bounces.roundup.example"
SENT = (b"Return-Path: <" + VERP.encode() + b">\r\nMessage-ID: <1700000000.ab12@roundup.example>"
        b"\r\nTo: ana@example.org\r\nSubject: Weekly roundup\r\n\r\nHello\r\n")


def read(raw: bytes, recipient: str = VERP, mail_from: str = "") -> parse.Reading:
    return parse.read_message(raw, recipient=recipient, mail_from=mail_from)


def test_rfc3464_dsn_gives_status_recipient_and_our_message_id():
    reading = read(dsn(to=VERP, final_recipient="ana@example.org", status="5.1.1",
                       original=SENT))
    assert (reading.kind, reading.hard, reading.status) == (parse.BOUNCE, True, "5.1.1")
    assert reading.email == "ana@example.org" and reading.verp == (12, 34)
    assert reading.original_message_ids == ["<1700000000.ab12@roundup.example>"]
    assert "User unknown" in reading.diagnostic


def test_a_4xx_failure_is_a_soft_bounce_and_a_delay_is_not_a_bounce():
    soft = read(dsn(to=VERP, final_recipient="ana@example.org", status="4.2.2"))
    assert (soft.kind, soft.hard) == (parse.BOUNCE, False)
    delayed = read(dsn(to=VERP, final_recipient="ana@example.org", status="4.4.1",
                       action="delayed"))
    assert delayed.kind == parse.DELAY


def test_exim_bounce_without_a_dsn_is_read_by_flufl_bounce():
    raw = (b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\nTo: " + VERP.encode()
           + b"\r\nSubject: Mail delivery failed: returning message to sender\r\n"
           b"X-Failed-Recipients: ana@example.org\r\nAuto-Submitted: auto-replied\r\n\r\n"
           b"This message was created automatically by mail delivery software.\r\n\r\n"
           b"A message that you sent could not be delivered to one or more of its\r\n"
           b"recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
           b"  ana@example.org\r\n    550 5.1.1 mailbox unavailable\r\n")
    reading = read(raw)
    assert (reading.kind, reading.hard, reading.email) == (parse.BOUNCE, True,
                                                            "ana@example.org")
    assert reading.status == "5.1.1" and "flufl.bounce" in reading.diagnostic


def test_qmail_bounce_is_read_by_flufl_bounce():
    raw = (b"From: MAILER-DAEMON@mail.example.net\r\nTo: " + VERP.encode()
           + b"\r\nSubject: failure notice\r\n\r\n"
           b"Hi. This is the qmail-send program at mail.example.net.\r\n"
           b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
           b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
           b"<ana@example.org>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
           b"--- Below this line is a copy of the message.\r\n")
    reading = read(raw)
    assert (reading.kind, reading.hard, reading.email) == (parse.BOUNCE, True,
                                                            "ana@example.org")


def test_arf_complaint_names_the_feedback_type_and_recipient():
    reading = read(arf(to=VERP, original=SENT, recipient="ana@example.org"))
    assert (reading.kind, reading.feedback_type, reading.email) == (
        parse.COMPLAINT, "abuse", "ana@example.org")
    assert reading.original_message_ids == ["<1700000000.ab12@roundup.example>"]


@pytest.mark.parametrize(("headers", "subject", "kind"), [
    ({"Auto-Submitted": "auto-replied"}, "Re: Weekly roundup", "auto-reply"),
    ({"X-Autoreply": "yes"}, "Re: Weekly roundup", "auto-reply"),
    ({"Precedence": "auto_reply"}, "Re: Weekly roundup", "auto-reply"),
    ({}, "Out of Office: back on the 12th", "vacation"),
    ({}, "Automatische Antwort: Weekly roundup", "vacation"),
    ({}, "Réponse automatique : absent", "vacation"),
    ({}, "Please confirm your message to ana@example.org", "challenge-response"),
    ({"X-Boxbe-Pending": "yes"}, "Re: Weekly roundup", "challenge-response"),
])
def test_auto_replies_are_recognised_and_never_bounces(headers, subject, kind):
    reading = read(plain(to=VERP, subject=subject, sender="ana@example.org", headers=headers),
                   mail_from="ana@example.org")
    assert (reading.kind, reading.auto_kind) == (parse.AUTO_REPLY, kind)


def test_vacation_reply_from_a_null_sender_is_still_an_auto_reply():
    reading = read(vacation(to=VERP, sender="ana@example.org"), mail_from="")
    assert reading.kind == parse.AUTO_REPLY


def test_a_persons_reply_is_nothing_we_act_on():
    reading = read(plain(to=VERP, subject="Re: Weekly roundup", body="Thanks, great issue!\n"),
                   mail_from="ana@example.org")
    assert reading.kind == parse.UNKNOWN


def test_unsubscribe_mail_carries_the_token_from_the_subject():
    to = "unsubscribe@roundup.example"
    ok = read(plain(to=to, subject="unsubscribe-MTI.aBc.dEf_-"), recipient=to)
    assert (ok.kind, ok.token) == (parse.UNSUBSCRIBE, "MTI.aBc.dEf_-")
    assert read(plain(to=to, subject="please remove me"), recipient=to).kind == parse.UNKNOWN


def test_malformed_mime_is_unreadable_not_an_error():
    raw = (b"From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=\"b\"\r\n\r\n\xff\xfe\x00 garbage")
    reading = read(raw)
    assert reading.kind == parse.UNREADABLE and reading.reason


def test_same_message_has_the_same_key_and_without_message_id_a_content_hash():
    raw = dsn(to=VERP, final_recipient="ana@example.org", status="5.1.1")
    assert read(raw).message_key == read(raw).message_key
    assert read(raw).message_key.startswith("mid:<")
    headless = b"From: MAILER-DAEMON@x\r\nSubject: failed\r\n\r\nbody\r\n"
    assert read(headless).message_key.startswith("sha256:")


def test_verp_of_another_domain_is_not_ours():
    assert parse.verp_of("bounces+1-2@elsewhere.example") is None
    assert parse.verp_of("<BOUNCES+1-2@Bounces.Roundup.Example>") == (1, 2)


def test_a_complaint_sent_to_the_unsubscribe_address_is_still_a_complaint():
    """Feedback loops report to the address registered with them, often not the VERP."""
    to = "unsubscribe@roundup.example"
    reading = read(arf(to=to, original=SENT, recipient="ana@example.org"), recipient=to)
    assert reading.kind == parse.COMPLAINT
    assert reading.verp == (12, 34)  # from the Return-Path of our returned mail
    assert reading.original_message_ids == ["<1700000000.ab12@roundup.example>"]
