"""Reading SMTP replies (RFC 3463): enhanced status code first, the words only as a fallback."""

from __future__ import annotations

import pytest

from newsletter.delivery import replies
from newsletter.delivery.replies import classify, enhanced_code

CASES = [
    # (stage, code, text, kind)
    ("rcpt", 250, "2.1.5 OK", replies.SENT),
    ("data", 250, "2.0.0 Ok: queued as 4Fq", replies.SENT),
    # 5.1.x: the address is bad -> bounce and suppress
    ("rcpt", 550, "5.1.1 <x@example.org>: Recipient address rejected: User unknown",
     replies.BOUNCE),
    ("rcpt", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound", replies.BOUNCE),
    ("rcpt", 553, "5.1.3 bad destination mailbox address syntax", replies.BOUNCE),
    # ...but 5.1.7/5.1.8 are about OUR sender address
    ("rcpt", 553, "5.1.8 <bounces@x>: Sender address rejected: Domain not found", replies.PAUSE),
    # 5.2.2 mailbox full: soft, whatever the basic code says
    ("rcpt", 552, "5.2.2 <x@example.org>: mailbox full", replies.SOFT),
    ("data", 552, "5.2.2 user over quota", replies.SOFT),
    ("rcpt", 550, "5.2.1 mailbox disabled, not accepting messages", replies.FAILED),
    # 5.7.x: policy, not the recipient's fault; about us when it names relaying,
    # authentication, a blocklist or sender authentication (RFC 7372)
    ("data", 554, "5.7.1 message refused as spam", replies.POLICY),
    ("rcpt", 554, "5.7.1 <x@example.org>: Relay access denied", replies.PAUSE),
    ("rcpt", 550, "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
     "zen.spamhaus.org", replies.PAUSE),
    ("rcpt", 550, "5.7.1 blocked", replies.PAUSE),
    ("rcpt", 530, "5.7.0 Authentication required", replies.PAUSE),
    ("data", 550, "5.7.26 This mail has been blocked because the sender is unauthenticated",
     replies.PAUSE),
    ("data", 550, "5.7.25 The IP address sending this message does not have a PTR record",
     replies.PAUSE),
    # 4.x.x: retry with a backoff (charged), unless a daily quota is spent
    ("rcpt", 451, "4.3.0 local error in processing", replies.RETRY),
    ("data", 421, "4.4.2 closing connection", replies.RETRY),
    ("rcpt", 452, "4.2.2 mailbox full", replies.RETRY),
    ("rcpt", 450, "4.2.0 greylisted, try again in 5 minutes", replies.RETRY),
    ("data", 454, "4.7.0 Throttling failure: Daily message quota exceeded.", replies.PAUSE),
    # the code decides, not the words: a 5.1.1 that mentions "blocked" is still a bounce
    ("rcpt", 550, "5.1.1 mailbox blocked: no such user", replies.BOUNCE),
    # no enhanced code: the words are the fallback
    ("rcpt", 550, "No such user here", replies.BOUNCE),
    ("rcpt", 552, "Mailbox full", replies.SOFT),
    ("rcpt", 554, "Relay access denied", replies.PAUSE),
    ("data", 554, "Message rejected: Email address is not verified.", replies.PAUSE),
    ("data", 454, "Throttling failure: Maximum sending rate exceeded.", replies.RETRY),
    ("data", 554, "Throttling failure: Daily message quota exceeded.", replies.PAUSE),
    ("data", 554, "Transaction failed", replies.FAILED),
    ("rcpt", 451, "try again later", replies.RETRY),
    # before any recipient: the session, so us (5xx) or a busy/unreachable relay (4xx)
    ("connect", 554, "go away", replies.PAUSE),
    ("connect", 421, "too many connections from your host", replies.DOWN),
    ("helo", 554, "5.7.1 go away", replies.PAUSE),
    ("auth", 535, "5.7.8 Authentication credentials invalid", replies.PAUSE),
    ("auth", 454, "4.7.0 Temporary authentication failure", replies.DOWN),
    ("connect", 421, "4.7.0 Too many connections from your IP", replies.DOWN),
    ("mail", 550, "5.7.1 sender not allowed", replies.PAUSE),
    ("mail", 451, "4.3.0 try later", replies.RETRY),
]


@pytest.mark.parametrize(("stage", "code", "text", "kind"), CASES,
                         ids=[f"{c[1]} {c[2][:40]}" for c in CASES])
def test_reply_is_read_by_its_enhanced_code_then_its_words(
    stage: str, code: int, text: str, kind: str
) -> None:
    verdict = classify(code, text, stage=stage)
    assert verdict.kind == kind
    assert verdict.reply == f"{code} {text}"  # the relay's own words, kept for people


def test_only_real_attempts_are_charged() -> None:
    assert classify(451, "4.3.0 later").charged
    assert classify(550, "5.1.1 unknown").charged
    assert not classify(554, "5.7.1 Relay access denied").charged
    assert not classify(421, "busy", stage="connect").charged


@pytest.mark.parametrize(("text", "code"), [
    ("5.1.1 <a@b>: unknown", (5, 1, 1)),
    ("Requested action aborted 4.3.0 (local)", (4, 3, 0)),
    ("5.7.26 unauthenticated", (5, 7, 26)),
    ("Ok queued as 1.2.3.4", None),  # an IP address is not a status code
    ("version 10.5.2 here", None),
])
def test_enhanced_code_is_found_only_where_rfc_3463_puts_it(
    text: str, code: tuple[int, int, int] | None
) -> None:
    assert enhanced_code(text) == code
