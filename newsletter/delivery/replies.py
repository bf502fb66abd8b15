"""What an SMTP reply means for a ledger row, read as RFC 3463 says.

The enhanced status code (`5.1.1`, `4.3.0`, ...) decides first; the reply's text is
read only when the relay gave no enhanced code. The question is always whose trouble
it is: the recipient's (bounce, mailbox full), the message's, the relay's for a
moment (4xx), or ours (relay access, authentication, a blocklisted sending IP, an
exhausted quota). Trouble of ours pauses the issue and charges nobody.

    kind      row                                          subscriber
    --------  -------------------------------------------  -----------------------
    sent      sent                                         -
    retry     back to pending with a backoff, +1 attempt   -
    soft      like retry (5.2.2 mailbox full)              never suppressed
    bounce    failed                                       suppressed, bounced
    failed    failed (the message or the address)          -
    policy    failed (5.7.x about this message)            - (not their fault)
    pause     back to pending untouched; issue paused      -
    down      back to pending untouched, with a backoff    - (relay unreachable)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SENT, RETRY, SOFT, BOUNCE, FAILED, POLICY, PAUSE, DOWN = (
    "sent", "retry", "soft", "bounce", "failed", "policy", "pause", "down")
# Where in the session a reply came: before MAIL FROM everything is about us.
SESSION_STAGES = ("connect", "helo", "starttls", "auth")  # before any MAIL FROM

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# Refusals about us, whoever the recipient (text fallback, and to tell 5.7.x apart).
_ABOUT_US = re.compile(
    r"relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay"
    r"|not permitted to relay"
    r"|relay not permitted|authenticat|auth(orization)? (required|failed)|credentials"
    r"|\bblock(ed|list(ed)?)\b|black ?list|\blisted\b|spamhaus|spamcop|\bdnsbl\b|\brbl\b"
    r"|poor reputation|reputation|client host .*rejected|sending ip|your ip|access denied"
    r"|(daily|sending|message|account) (message )?quota|quota (exceeded|exhausted) for (the )?"
    r"(account|sender)|sending (limit|quota)|sender .*not (allowed|authori[sz]ed|verified)"
    r"|email address is not verified|account (is )?(suspended|disabled)",
    re.IGNORECASE,
)
_BAD_ADDRESS = re.compile(
    r"no such (user|mailbox|recipient)|user unknown|unknown (user|recipient)"
    r"|mailbox (not found|unavailable|does not exist)|does not exist"
    r"|invalid (recipient|mailbox|address)|recipient address rejected|address rejected",
    re.IGNORECASE,
)
_MAILBOX_FULL = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (storage|space)",
    re.IGNORECASE,
)
# RFC 7372 sender-authentication codes (SPF, DKIM, DMARC, reverse DNS): ours to fix.
_OUR_AUTH_DETAILS = {(7, 0), (7, 8), (7, 9), (7, 11), *((7, d) for d in range(20, 28))}
# 5.1.7 / 5.1.8: the *sender's* address is bad, which is our configuration.
_OUR_ADDRESS_DETAILS = {(1, 7), (1, 8)}


@dataclass(frozen=True)
class Verdict:
    """How one attempt ended: `kind` (see the module table) and the relay's own words."""

    kind: str
    reply: str = ""

    @property
    def charged(self) -> bool:
        """Does the row gain an attempt? Only when its own transaction was tried and failed."""
        return self.kind in (RETRY, SOFT, BOUNCE, FAILED, POLICY)

    @property
    def permanent(self) -> bool:
        """A 5xx refusal of this recipient (counts towards "refuses everyone in a row")."""
        return self.kind in (BOUNCE, FAILED, POLICY, SOFT)


def enhanced_code(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 status code in a reply's text (`5.1.1` -> (5, 1, 1)), if any."""
    match = _ENHANCED.search(text[:40])
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def classify(code: int, text: str, *, stage: str = "rcpt") -> Verdict:
    """What a reply `code text` at `stage` means for the row (and the issue)."""
    reply = f"{code} {text}".strip()
    if 200 <= code < 300:
        return Verdict(SENT, reply)
    enhanced = enhanced_code(text)
    transient = 400 <= code < 500 if code else bool(enhanced and enhanced[0] == 4)
    about_us = bool(_ABOUT_US.search(text))
    if stage in SESSION_STAGES:
        # Refused before any recipient was named: the relay refuses us (5xx), or is
        # busy for now (4xx: too many connections, a temporary authentication failure).
        return Verdict(DOWN if transient else PAUSE, reply)
    if stage == "mail" and not transient:
        return Verdict(PAUSE, reply)  # MAIL FROM is the same for every recipient
    if enhanced is not None:
        _, subject, detail = enhanced
        if transient:
            quota = about_us and re.search(r"quota|daily", text, re.IGNORECASE)
            return Verdict(PAUSE if quota else RETRY, reply)
        if (subject, detail) in _OUR_ADDRESS_DETAILS:
            return Verdict(PAUSE, reply)
        if subject == 1:
            return Verdict(BOUNCE, reply)
        if (subject, detail) == (2, 2):
            return Verdict(SOFT, reply)
        if subject == 7:
            if (subject, detail) in _OUR_AUTH_DETAILS or about_us:
                return Verdict(PAUSE, reply)
            return Verdict(POLICY, reply)
        return Verdict(FAILED, reply)
    # No enhanced code: the words are all we have.
    if about_us:
        quota_only = not transient or re.search(r"quota|daily", text, re.IGNORECASE)
        return Verdict(PAUSE if quota_only else RETRY, reply)
    if transient or code < 200:
        return Verdict(RETRY, reply)
    if _MAILBOX_FULL.search(text):
        return Verdict(SOFT, reply)
    if _BAD_ADDRESS.search(text):
        return Verdict(BOUNCE, reply)
    return Verdict(FAILED, reply)


def relay_busy(verdict: Verdict) -> bool:
    """The relay answered, with a 4xx, before any transaction (too many connections, a
    temporary failure): alive and busy, unlike a refused or timed-out connection."""
    return verdict.kind == DOWN and verdict.reply[:1] == "4" and verdict.reply[1:3].isdigit()


def connection_lost(detail: str) -> Verdict:
    """The connection dropped (or timed out) during the row's transaction: retry it."""
    return Verdict(RETRY, f"connection lost during the transaction: {detail}")
