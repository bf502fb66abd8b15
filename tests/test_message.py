"""MIME messages: headers, both parts, personalisation, injection safety, VERP and DKIM."""

from __future__ import annotations

import base64
import email.policy
import re
import smtplib
import time
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from newsletter import message as message_module
from newsletter.composer import compose
from newsletter.message import (
    MessageFactory,
    OutgoingMessage,
    Recipient,
    build_message,
    parse_verp,
)
from newsletter.render import render_digest
from newsletter.settings import settings
from newsletter.tokens import read_token
from tests.fixtures.mail import assert_email, email_parts, issue_content, parse_email

ALICE = Recipient(subscriber_id=17, email="alice@example.org", name="Alice Liddell")
EXPECTED_HEADERS = {
    "Date", "From", "Reply-To", "To", "Subject", "Message-ID", "List-Id",
    "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version", "Content-Type",
}


@pytest.fixture
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> float:
    """Pin the clock so tokens made by build() and personalise() are identical."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    return now


@pytest.fixture
def digest():
    issue = issue_content(items=[
        {"headline": "Hermès Q3 sales beat forecasts", "topics": ["luxury-fashion"],
         "body": "Hermès’ sales jumped 24% to €3.14 billion.\n\n" + "Long paragraph. " * 60,
         "link_text": "Read the full story", "link_url": "https://example.com/hermes?a=1&b=2"},
        {"headline": ".dot at line start and = signs", "topics": ["logistics"],
         "body": ".leading dot\n\nFrom the start, a=b and trailing space  "},
    ])
    composition = compose(issue, followed=("logistics",), max_items=12)
    assert composition is not None
    return render_digest(issue, composition)


@pytest.fixture
def factory(digest) -> MessageFactory:
    return MessageFactory(digest=digest, issue_id=42)


def _header_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")]


# --- structure -------------------------------------------------------------------------


def test_message_is_multipart_alternative_text_then_html(factory) -> None:
    msg = parse_email(factory.build(ALICE).data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert not msg.defects and not any(p.defects for p in parts)


def test_message_has_exactly_the_expected_headers(factory) -> None:
    msg = parse_email(factory.build(ALICE).data)
    assert set(msg.keys()) == EXPECTED_HEADERS
    assert len(msg.keys()) == len(EXPECTED_HEADERS)


def test_sender_headers_come_from_settings(factory) -> None:
    msg = parse_email(factory.build(ALICE).data)
    assert msg["From"].addresses[0].addr_spec == settings.mail_from_address
    assert msg["From"].addresses[0].display_name == settings.mail_from_name
    assert msg["Reply-To"].addresses[0].addr_spec == settings.reply_to
    assert msg["List-Id"] == f"{settings.mail_from_name} <{settings.list_id}>"
    assert msg["MIME-Version"] == "1.0"


def test_to_subject_and_date(factory, digest) -> None:
    msg = parse_email(factory.build(ALICE).data)
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert msg["To"].addresses[0].display_name == "Alice Liddell"
    assert msg["Subject"] == digest.subject
    assert msg["Date"].datetime.tzinfo is not None


def test_subject_can_be_overridden(digest) -> None:
    out = MessageFactory(digest=digest, issue_id=42, subject="Special edition").build(ALICE)
    assert parse_email(out.data)["Subject"] == "Special edition"


def test_message_id_uses_our_domain_and_is_unique(factory) -> None:
    first, second = factory.build(ALICE), factory.build(ALICE)
    domain = settings.mail_from_address.split("@")[1]
    assert first.message_id.endswith(f"@{domain}>")
    assert first.message_id != second.message_id
    assert parse_email(first.data)["Message-ID"] == first.message_id


def test_list_unsubscribe_offers_one_click_https_and_mailto(factory) -> None:
    msg = parse_email(factory.build(ALICE).data)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url, mailto = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    assert url.startswith(f"{settings.base_url}/unsubscribe/")
    assert read_token("unsubscribe", url.rsplit("/", 1)[1].split("?i=")[0]) == ALICE.subscriber_id
    assert mailto.startswith(f"mailto:{settings.unsubscribe_mailto}?subject=unsubscribe-")
    assert read_token("unsubscribe", mailto.split("unsubscribe-", 1)[1]) == ALICE.subscriber_id


def test_without_an_unsubscribe_mailbox_only_the_https_uri_is_offered(
    factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "unsubscribe_mailto", "")
    msg = _strict(factory.build(ALICE).data)
    (url,) = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    assert url.startswith(f"{settings.base_url}/unsubscribe/")


def test_envelope_sender_is_verp_for_subscriber_and_issue(factory) -> None:
    out = factory.build(ALICE)
    assert out.envelope_from == f"bounces+17-42@{settings.bounce_domain}"
    assert parse_verp(out.envelope_from) == (17, 42)
    assert out.to == "alice@example.org"


def test_parse_verp_ignores_other_addresses() -> None:
    assert parse_verp("postmaster@example.org") is None
    assert parse_verp(f"<bounces+5@{settings.bounce_domain}>") == (5, None)


def test_lines_end_in_crlf_and_stay_short(factory) -> None:
    data = factory.build(Recipient(1, "x@example.org", "N" * 150)).data
    assert b"\n" not in data.replace(b"\r\n", b"")
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


# --- bodies -------------------------------------------------------------------------------


def test_both_parts_decode_to_the_personalised_digest(factory, digest, frozen_time) -> None:
    recipient = Recipient(5, "zoe@example.org", "Zoë Ünïcode-" + "x" * 100)
    html, text = email_parts(parse_email(factory.build(recipient).data))
    expected_html, expected_text = digest.personalise(recipient)
    # MIME text travels with CRLF line ends; the content is otherwise identical.
    assert html.replace("\r\n", "\n") == expected_html
    assert text.replace("\r\n", "\n") == expected_text


def test_received_email_has_links_and_personal_parts(factory) -> None:
    assert_email(
        factory.build(ALICE).data,
        to="alice@example.org",
        subject_contains="Hermès",
        # Story links go through the click redirect (issue 9), the item's own URL too.
        html_contains=(f'href="{settings.base_url}/r/', "Hi Alice,"),
        text_contains=(f"Read the full story: {settings.base_url}/r/", "Hi Alice,"),
        both_contain=("alice@example.org", f"{settings.base_url}/manage/"),
    )


def test_recipients_get_their_own_links(factory) -> None:
    bob = Recipient(18, "bob@example.org", "Bob")
    html, text = email_parts(parse_email(factory.build(bob).data))
    token = re.search(r"/manage/([\w.\-]+)", text).group(1)
    assert read_token("manage", token) == 18
    assert "alice" not in html.lower()


def test_message_passes_through_a_real_smtp_server(factory, smtp_server) -> None:
    out = factory.build(ALICE)
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail(out.envelope_from, [out.to], out.data)
    received = smtp_server.wait_for(1)[0]
    assert received.mail_from == out.envelope_from
    assert received.rcpt_tos == ("alice@example.org",)
    msg = assert_email(received.data, to="alice@example.org", both_contain=("Hi Alice,",))
    assert msg["Message-ID"] == out.message_id


# --- wire-ready messages (sent without re-checking line ends or dot-stuffing) ---------------


@pytest.fixture
def plain_factory() -> MessageFactory:
    """A digest with no line starting with a dot anywhere."""
    issue = issue_content(items=[
        {"headline": "Cainiao opens two warehouses", "topics": ["logistics"],
         "body": "Two smart warehouses opened in Karachi and Lahore. " * 30},
    ])
    composition = compose(issue, followed=("logistics",), max_items=12)
    assert composition is not None
    return MessageFactory(digest=render_digest(issue, composition), issue_id=42)


def test_a_message_with_no_dot_lines_is_its_own_smtp_payload(plain_factory) -> None:
    from newsletter.delivery.connection import _dot_stuffed

    out = plain_factory.build(ALICE)
    assert out.wire_ready
    assert _dot_stuffed(out.data) == out.data + b".\r\n"


def test_lines_starting_with_a_dot_are_encoded_so_the_message_needs_no_dot_stuffing(
    factory,
) -> None:
    out = factory.build(ALICE)  # the digest has ".leading dot" and ".dot at line start"
    assert out.wire_ready
    assert b"\r\n." not in out.data
    html, text = email_parts(parse_email(out.data))
    assert ".leading dot" in text and ".dot at line start" in html


@pytest.mark.parametrize("prefix", ["", "x" * 70, "é" * 30, "a=b" * 20])
def test_an_encoded_leading_dot_keeps_lines_short_and_decodes_back(prefix: str) -> None:
    import quopri

    from newsletter.message import _qp

    text = f"{prefix}\n." + "." * 80 + "\n.é" + "=" * 40 + "\nend"
    encoded = _qp(text)
    assert not encoded.startswith(b".") and b"\n." not in encoded
    assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
    assert quopri.decodestring(encoded).decode("utf-8").replace("\r\n", "\n") == text


@pytest.mark.parametrize("text", [
    ".", "..", ".\n.", "a\n.b", "\r\n.x\r.y\n", ".é" * 50, "x" * 75 + "\n." + "y" * 80,
    "=.\n=.", " .\n\t.", ".\x00\n.\x7f", "no dots\nat all", "",
])
def test_every_quoted_printable_chunk_is_wire_safe(text: str) -> None:
    from newsletter.message import _qp, wire_safe

    assert wire_safe(_qp(text) + b"=\r\n")


@pytest.mark.parametrize("chunk", [b".x", b"a\r\n.b", b"a\nb", b"a\n.b", b"\n"])
def test_a_chunk_with_a_dot_line_or_a_bare_line_end_is_not_wire_safe(chunk: bytes) -> None:
    from newsletter.message import wire_safe

    assert not wire_safe(chunk)


@given(st.text(alphabet=st.sampled_from(list(".=\r\n \té\x00aZ~"))
               | st.characters(blacklist_categories=("Cs",)),  # text, not lone surrogates
               max_size=300))
@settings_(max_examples=300, deadline=None)
def test_any_text_encodes_to_a_wire_safe_chunk_that_decodes_back(text: str) -> None:
    import quopri

    from newsletter.message import _qp, wire_safe

    encoded = _qp(text)
    assert wire_safe(encoded + b"=\r\n")
    assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert quopri.decodestring(encoded).replace(b"\r\n", b"\n") == normalised.encode(
        "utf-8", "surrogatepass")


def test_a_personal_value_with_a_line_break_and_a_dot_stays_wire_ready(plain_factory) -> None:
    # Each personal value starts a quoted-printable line of its own (after a soft break).
    dotted = Recipient(subscriber_id=18, email="bob@example.org", name=".Bob")
    out = plain_factory.build(dotted)
    assert out.wire_ready
    assert b"\r\n." not in out.data


def test_a_message_with_dot_lines_arrives_intact_through_the_delivery_connection(
    factory, smtp_server,
) -> None:
    from newsletter.delivery import pool
    from newsletter.delivery.connection import RelayConnection

    out = factory.build(ALICE)

    async def send() -> str:  # to the smtp_server fixture (it set SMTP_HOST and SMTP_PORT)
        conn = await RelayConnection.open()
        verdict = await conn.send(out.envelope_from, out.to, out.data,
                                  wire_ready=out.wire_ready)
        await conn.quit()
        return verdict.kind

    assert pool.run(send()) == "sent"  # the worker's own loop (a browser test may hold ours)
    received = smtp_server.wait_for(1)[0].data
    assert received.replace(b"\r\n", b"\n") == out.data.replace(b"\r\n", b"\n")


# --- header safety -------------------------------------------------------------------------


def test_name_with_crlf_cannot_add_a_header(factory) -> None:
    eve = Recipient(3, "eve@example.org", "Eve\r\nBcc: x@evil.test")
    data = factory.build(eve).data
    msg = parse_email(data)
    assert "Bcc" not in msg
    assert set(msg.keys()) == EXPECTED_HEADERS
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.org"]
    assert not any(line.lower().startswith(b"bcc:") for line in _header_lines(data))


LINE_BREAKS = ["\r\n", "\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"]


def _strict(data: bytes) -> EmailMessage:
    """Parse with a policy that raises on any defect instead of recording it."""
    msg = BytesParser(policy=email.policy.strict).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.parametrize("brk", LINE_BREAKS, ids=lambda b: f"U+{ord(b[-1]):04X}")
def test_no_line_break_in_a_name_or_subject_can_add_a_header(digest, brk: str) -> None:
    eve = Recipient(3, "eve@example.org", f"Eve{brk}Bcc: x@evil.test")
    subject = f"Hi{brk}Bcc: y@evil.test"
    data = MessageFactory(digest=digest, issue_id=1, subject=subject).build(eve).data
    msg = _strict(data)
    assert set(msg.keys()) == EXPECTED_HEADERS
    assert msg["Subject"] == "Hi Bcc: y@evil.test"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Eve Bcc: x@evil.test", "eve@example.org")
    ]
    assert not any(line.lower().startswith(b"bcc:") for line in _header_lines(data))


def test_a_very_long_unbreakable_name_still_keeps_lines_under_998_octets(digest, dkim_key) -> None:
    data = MessageFactory(digest=digest, issue_id=1).build(
        Recipient(3, "x@example.org", "N" * 2000)
    )
    assert max(len(line) for line in data.data.split(b"\r\n")) <= 998
    to = _strict(data.data)["To"].addresses[0]
    # Python's parser puts a space between encoded words; mail clients do not.
    assert (to.display_name.replace(" ", ""), to.addr_spec) == ("N" * 2000, "x@example.org")
    assert _verify(data, dkim_key)


def test_control_characters_never_reach_a_header(digest) -> None:
    out = MessageFactory(digest=digest, issue_id=1, subject="A\x00B\x7fC\x9fD").build(
        Recipient(3, "x@example.org", "Zo\x80ë\x1b[31m")
    )
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and not re.search(rb"[\x00-\x1f\x7f]", head.replace(b"\r\n", b""))
    msg = _strict(out.data)
    assert msg["Subject"] == "A B C D"
    assert msg["To"].addresses[0].display_name == "Zo ë [31m"


def test_whole_message_parses_under_a_strict_policy(factory) -> None:
    msg = _strict(factory.build(Recipient(3, "zoe@example.org", "Zoë Ünïcode")).data)
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_subject_with_newline_cannot_add_a_header(digest) -> None:
    out = MessageFactory(digest=digest, issue_id=1, subject="Hi\nBcc: x@evil.test").build(ALICE)
    msg = parse_email(out.data)
    assert "Bcc" not in msg
    assert msg["Subject"] == "Hi Bcc: x@evil.test"


def test_address_with_crlf_is_refused(factory) -> None:
    with pytest.raises(ValueError, match="email address"):
        factory.build(Recipient(3, "eve@example.org\r\nBcc: x@evil.test", "Eve"))


def test_name_with_specials_is_quoted_not_parsed(factory) -> None:
    tricky = Recipient(3, "x@example.org", 'Doe, John "JD" <boss@evil.test>')
    msg = parse_email(factory.build(tricky).data)
    assert [a.addr_spec for a in msg["To"].addresses] == ["x@example.org"]
    assert msg["To"].addresses[0].display_name == 'Doe, John "JD" <boss@evil.test>'


def test_non_ascii_name_is_rfc2047_encoded(factory) -> None:
    data = factory.build(Recipient(3, "zoe@example.org", "Zoë Ünïcode")).data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"=?utf-8?" in head
    assert parse_email(data)["To"].addresses[0].display_name == "Zoë Ünïcode"


# --- one-off messages ------------------------------------------------------------------------


def test_build_message_for_a_one_off_email() -> None:
    out = build_message(
        subject="Confirm your subscription", html="<p>Click <a href='https://x.test'>here</a></p>",
        text="Click https://x.test\n", recipient=ALICE, list_headers=False,
        extra_headers={"X-Roundup-Kind": "confirm\r\nBcc: x@evil.test"},
    )
    msg = assert_email(out.data, to="alice@example.org", subject_contains="Confirm",
                       html_contains=("here",), text_contains=("https://x.test",))
    assert "List-Unsubscribe" not in msg and "Bcc" not in msg
    assert msg["X-Roundup-Kind"] == "confirm Bcc: x@evil.test"
    assert out.envelope_from == f"bounces+17@{settings.bounce_domain}"


def test_build_message_refuses_bad_extra_header_names() -> None:
    with pytest.raises(ValueError, match="header name"):
        build_message(subject="s", html="<p>h</p>", text="t", recipient=ALICE,
                      extra_headers={"X-Evil: 1\r\nBcc": "x"})


def test_build_message_refuses_overriding_core_headers() -> None:
    with pytest.raises(ValueError, match="From"):
        build_message(subject="s", html="<p>h</p>", text="t", recipient=ALICE,
                      extra_headers={"From": "boss@evil.test"})


# --- DKIM -----------------------------------------------------------------------------------


@pytest.fixture
def dkim_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Settings pointed at a fresh RSA key; returns the DNS TXT record for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    monkeypatch.setattr(settings, "dkim_private_key_path", path)
    monkeypatch.setattr(settings, "dkim_domain", "roundup.example")
    monkeypatch.setattr(settings, "dkim_selector", "s2026")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _verify(out: OutgoingMessage, txt: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2026._domainkey.roundup.example."
        return txt

    return bool(dkim.verify(out.data, dnsfunc=dnsfunc))


def test_dkim_signature_verifies(factory, dkim_key) -> None:
    assert _verify(factory.build(ALICE), dkim_key)


def test_dkim_signs_the_important_headers(factory, dkim_key) -> None:
    signature = parse_email(factory.build(ALICE).data)["DKIM-Signature"]
    signed = re.search(r"h=([^;]+)", str(signature)).group(1).replace(" ", "").split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-unsubscribe",
                 "list-unsubscribe-post"):
        assert name in signed


def test_dkim_fails_when_the_body_is_changed(factory, dkim_key) -> None:
    out = factory.build(ALICE)
    head, body = out.data.split(b"\r\n\r\n", 1)
    changed = body[:2000] + (b"Y" if body[2000:2001] != b"Y" else b"Z") + body[2001:]
    tampered = OutgoingMessage(out.envelope_from, out.to, out.message_id,
                               head + b"\r\n\r\n" + changed)
    assert not _verify(tampered, dkim_key)


def test_dkim_fails_when_a_signed_header_is_changed(factory, dkim_key) -> None:
    out = factory.build(ALICE)
    tampered = OutgoingMessage(out.envelope_from, out.to, out.message_id,
                               out.data.replace(b"To: Alice Liddell", b"To: Alice Lidell"))
    assert not _verify(tampered, dkim_key)


def test_one_off_message_is_signed_too(dkim_key) -> None:
    out = build_message(subject="Zoë’s confirmation", html="<p>h</p>", text="t\n",
                        recipient=Recipient(3, "zoe@example.org", "Zoë"))
    assert _verify(out, dkim_key)


def test_an_ed25519_key_is_refused_rather_than_signing_wrongly(factory, dkim_key, tmp_path,
                                                            monkeypatch) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from newsletter.message import DkimSettingsError

    path = tmp_path / "ed25519.pem"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    monkeypatch.setattr(settings, "dkim_private_key_path", path)
    with pytest.raises(DkimSettingsError, match="not an RSA private key"):
        factory.build(ALICE)


def test_no_signature_without_dkim_settings(factory) -> None:
    assert b"DKIM-Signature" not in factory.build(ALICE).data


# --- over-signing and the Date zone (issue 11) ------------------------------------------------

OVERSIGNED = ("from", "to", "subject", "date", "message-id", "list-unsubscribe",
              "list-unsubscribe-post")


def _signed_names(out: OutgoingMessage) -> list[str]:
    signature = str(parse_email(out.data)["DKIM-Signature"])
    return re.search(r"h=([^;]+)", signature).group(1).replace(" ", "").split(":")


def _added_in_transit(out: OutgoingMessage, header: bytes) -> OutgoingMessage:
    # Added above the signed ones: verifiers take instances from the bottom up, so
    # without over-signing the original still verifies and readers see the new one.
    return OutgoingMessage(out.envelope_from, out.to, out.message_id, header + out.data)


@pytest.mark.parametrize("header", [
    b"Subject: You won a prize, click here\r\n",
    b"List-Unsubscribe: <https://evil.example.net/u>\r\n",
    b"From: Your Bank <security@bank.example.com>\r\n",
])
def test_dkim_fails_when_a_second_header_is_added(factory, dkim_key, header) -> None:
    out = factory.build(ALICE)
    assert _verify(out, dkim_key)
    assert not _verify(_added_in_transit(out, header), dkim_key)


def test_each_important_header_is_named_once_more_than_present(factory, dkim_key) -> None:
    names = _signed_names(factory.build(ALICE))
    for name in OVERSIGNED:
        assert names.count(name) == 2, (name, names)


def test_a_header_the_message_lacks_cannot_be_added_either(dkim_key) -> None:
    """Confirmation emails carry no List-Unsubscribe; one added in transit still fails."""
    out = build_message(subject="Confirm", html="<p>h</p>", text="t\n", list_headers=False,
                        recipient=Recipient(3, "zoe@example.org", "Zoë"))
    assert _signed_names(out).count("list-unsubscribe") == 1
    assert _verify(out, dkim_key)
    assert not _verify(_added_in_transit(out, b"List-Unsubscribe: <https://x.example/u>\r\n"),
                       dkim_key)


def test_a_dkim_key_without_a_domain_never_sends_unsigned(factory, dkim_key, monkeypatch) -> None:
    monkeypatch.setattr(settings, "dkim_domain", "")
    with pytest.raises(message_module.DkimSettingsError, match="DKIM_DOMAIN"):
        factory.build(ALICE)


def test_the_date_header_says_utc_as_plus_0000(factory) -> None:
    raw = factory.build(ALICE).data
    date = re.search(rb"^Date: (.+)\r$", raw, re.MULTILINE).group(1)
    assert date.endswith(b" +0000"), date
    assert abs(parse_email(raw)["Date"].datetime.timestamp() - time.time()) < 60  # now-ish
