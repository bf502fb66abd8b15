"""Provider webhooks at /webhooks/bounces/<provider>: each with a good and a bad signature.

A bad signature, bad credentials or an unconfigured provider changes nothing; a good one
goes through the bounce policy (suppression, unsubscribe, events tied to the issue).
SES messages are signed here with a test certificate served by an injected fetcher, so
no test reaches the network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlmodel import select

from newsletter.inbound.sns import SnsClient, is_sns_url
from newsletter.models import Delivery, DeliveryStatus, Event, Subscriber, Suppression
from tests.fixtures.web import snapshot

WEBHOOK_SECRET = "generic-webhook-secret-0123456789"  # noqa: S105 - test value
PM_USER, PM_PASSWORD = "postmark", "postmark-password-0123456789"
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
MESSAGE_ID = "<1764590000.abcdef0123456789@roundup.example>"


@pytest.fixture
def hooks(web_settings, monkeypatch):
    monkeypatch.setattr(web_settings, "webhook_secret", WEBHOOK_SECRET)
    monkeypatch.setattr(web_settings, "postmark_webhook_user", PM_USER)
    monkeypatch.setattr(web_settings, "postmark_webhook_password", PM_PASSWORD)
    monkeypatch.setattr(web_settings, "mailgun_webhook_signing_key", MAILGUN_KEY)
    monkeypatch.setattr(web_settings, "ses_topic_arns", f"arn:aws:sns:us-east-1:1:other,{TOPIC}")
    return web_settings


@pytest.fixture
def reader(session, make_subscriber, make_issue):
    """A confirmed subscriber who was sent an issue with a known Message-ID."""
    sub = make_subscriber(email="reader@example.org")
    issue = make_issue(title="Bounced issue")
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status=DeliveryStatus.sent,
                         message_id=MESSAGE_ID, sent_at=datetime.now(UTC)))
    session.commit()
    return sub, issue


def state(session) -> tuple[Any, ...]:
    """Subscribers, topics, event count, and the suppression list."""
    return snapshot(session), tuple(sorted(
        (s.email, s.reason) for s in session.exec(select(Suppression)).all()))


def status_of(session, sub) -> str:
    session.expire_all()
    return session.get(Subscriber, sub.id).status


def events_of(session, sub) -> list[Event]:
    return list(session.exec(select(Event).where(Event.subscriber_id == sub.id)
                             .order_by(Event.id)).all())


# --- generic -------------------------------------------------------------------------


def generic(client, body, secret=WEBHOOK_SECRET):
    return client.post("/webhooks/bounces/generic", json=body,
                       headers={"Authorization": f"Bearer {secret}"})


def test_generic_hard_bounce_suppresses_and_ties_the_event_to_the_issue(
        client, hooks, session, reader):
    sub, issue = reader
    response = generic(client, {"events": [{"type": "bounce", "email": "Reader@Example.org",
                                            "status": "5.1.1", "diagnostic": "user unknown",
                                            "message_id": MESSAGE_ID}]})
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    assert status_of(session, sub) == "bounced"
    suppression = session.get(Suppression, "reader@example.org")
    assert suppression is not None and "5.1.1" in suppression.reason
    bounced = [e for e in events_of(session, sub) if e.kind == "bounced"]
    assert [e.issue_id for e in bounced] == [issue.id]


def test_generic_with_a_wrong_bearer_secret_is_401_and_changes_nothing(
        client, hooks, session, reader):
    before = state(session)
    body = {"type": "bounce", "email": "reader@example.org", "hard": True}
    for headers in ({"Authorization": "Bearer wrong-secret-but-long-enough"}, {},
                    {"Authorization": f"Basic {WEBHOOK_SECRET}"}):
        response = client.post("/webhooks/bounces/generic", json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert state(session) == before


def test_generic_event_posted_twice_with_its_id_counts_once(client, hooks, session, reader):
    sub, _ = reader
    body = {"type": "bounce", "email": "reader@example.org", "status": "4.2.2", "id": "e-1"}
    assert generic(client, body).json()["recorded"] == 1
    again = generic(client, body)
    assert again.status_code == 200 and again.json() == {
        "received": 1, "recorded": 0, "duplicates": 1}
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1


def test_generic_bad_payload_is_400_naming_the_event_and_records_nothing(
        client, hooks, session, reader):
    before = state(session)
    response = generic(client, {"events": [
        {"type": "bounce", "email": "reader@example.org", "hard": True},
        {"type": "bounce", "email": "not an address", "hard": True}]})
    assert response.status_code == 400
    assert "events[1]" in response.json()["detail"]
    assert state(session) == before


def test_unconfigured_provider_is_503_naming_the_setting(client, web_settings, session):
    response = client.post("/webhooks/bounces/generic", json={},
                           headers={"Authorization": "Bearer anything-at-all-here"})
    assert response.status_code == 503
    assert "WEBHOOK_SECRET" in response.json()["detail"]
    for provider, setting in (("postmark", "POSTMARK_WEBHOOK_USER"),
                              ("mailgun", "MAILGUN_WEBHOOK_SIGNING_KEY"),
                              ("ses", "SES_TOPIC_ARNS")):
        response = client.post(f"/webhooks/bounces/{provider}", json={})
        assert response.status_code == 503, provider
        assert setting in response.json()["detail"]


def test_unknown_provider_is_404(client, hooks):
    response = client.post("/webhooks/bounces/sendgrid", json={})
    assert response.status_code == 404
    assert "generic, ses, postmark, mailgun" in response.json()["detail"]


# --- Amazon SES through SNS ----------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A test key and self-signed certificate standing in for SNS's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


class FakeFetch:
    """Serves the test certificate at CERT_URL and records every URL asked for."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"


@pytest.fixture
def sns_fetch(web_app, signing_key) -> FakeFetch:
    fetch = FakeFetch(signing_key[1])
    web_app.state.sns_client = SnsClient(fetch=fetch)
    return fetch


def sns_message(key: rsa.RSAPrivateKey, message_type: str, *, version: str = "1",
                **fields: Any) -> dict[str, Any]:
    """An SNS message signed as AWS documents it: `Name\\nvalue\\n` for each signed
    field in this order (written out here, independently of the code under test)."""
    msg = {"Type": message_type, "MessageId": fields.pop("MessageId", "mid-1"),
           "TopicArn": TOPIC, "Timestamp": "2026-12-01T12:00:00.000Z",
           "SignatureVersion": version, "SigningCertURL": CERT_URL, **fields}
    if message_type == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                 "Type"]
    text = "".join(f"{n}\n{msg[n]}\n" for n in names if n in msg)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    msg["Signature"] = base64.b64encode(
        key.sign(text.encode(), padding.PKCS1v15(), digest)).decode()
    return msg


def ses_bounce(email: str, bounce_type: str = "Permanent", status: str = "5.1.1") -> str:
    return json.dumps({
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": email, "status": status,
                                          "action": "failed",
                                          "diagnosticCode": f"smtp; 550 {status} no mailbox"}]},
        "mail": {"messageId": "0100018c-ses-id", "destination": [email],
                 "commonHeaders": {"messageId": MESSAGE_ID}},
    })


def post_sns(client, msg):
    return client.post("/webhooks/bounces/ses", content=json.dumps(msg),
                       headers={"x-amz-sns-message-type": msg["Type"],
                                "content-type": "text/plain; charset=UTF-8"})


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_with_a_good_signature_suppresses(
        client, hooks, session, reader, signing_key, sns_fetch, version):
    sub, issue = reader
    msg = sns_message(signing_key[0], "Notification", version=version,
                      Message=ses_bounce("reader@example.org"))
    response = post_sns(client, msg)
    assert response.status_code == 200, response.text
    assert status_of(session, sub) == "bounced"
    assert session.get(Suppression, "reader@example.org") is not None
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]
    assert sns_fetch.urls == [CERT_URL]


def test_ses_tampered_message_is_401_and_changes_nothing(
        client, hooks, session, reader, signing_key, sns_fetch):
    msg = sns_message(signing_key[0], "Notification",
                      Message=ses_bounce("someone@example.org"))
    msg["Message"] = ses_bounce("reader@example.org")  # signed for another address
    before = state(session)
    response = post_sns(client, msg)
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]
    assert state(session) == before


def test_ses_signed_by_another_key_is_401(client, hooks, session, reader, sns_fetch):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = state(session)
    msg = sns_message(other, "Notification", Message=ses_bounce("reader@example.org"))
    assert post_sns(client, msg).status_code == 401
    assert state(session) == before


@pytest.mark.parametrize("cert_url", [
    "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    "http://sns.eu-west-1.amazonaws.com/cert.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
])
def test_ses_certificate_off_an_sns_host_is_never_fetched(
        client, hooks, session, reader, signing_key, sns_fetch, cert_url):
    msg = sns_message(signing_key[0], "Notification", Message=ses_bounce("reader@example.org"),
                      SigningCertURL=cert_url)
    before = state(session)
    response = post_sns(client, msg)
    assert response.status_code == 401
    assert "SigningCertURL" in response.json()["detail"]
    assert sns_fetch.urls == []
    assert state(session) == before


def test_ses_topic_outside_the_allow_list_is_401(
        client, hooks, session, reader, signing_key, sns_fetch):
    msg = sns_message(signing_key[0], "Notification", Message=ses_bounce("reader@example.org"))
    msg["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:someone-elses"
    msg = sns_message(signing_key[0], "Notification", Message=msg["Message"],
                      TopicArn=msg["TopicArn"])
    before = state(session)
    response = post_sns(client, msg)
    assert response.status_code == 401
    assert "SES_TOPIC_ARNS" in response.json()["detail"]
    assert state(session) == before


def test_ses_complaint_unsubscribes_and_suppresses(
        client, hooks, session, reader, signing_key, sns_fetch):
    sub, issue = reader
    complaint = json.dumps({
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "reader@example.org"}],
                      "complaintFeedbackType": "abuse"},
        "mail": {"headers": [{"name": "Message-ID", "value": MESSAGE_ID}]}})
    msg = sns_message(signing_key[0], "Notification", version="2", Message=complaint)
    assert post_sns(client, msg).status_code == 200
    assert status_of(session, sub) == "unsubscribed"
    assert session.get(Suppression, "reader@example.org") is not None
    kinds = {e.kind: e.issue_id for e in events_of(session, sub)}
    assert kinds["complained"] == issue.id


def test_ses_soft_bounce_redelivered_by_sns_counts_once_and_cert_is_cached(
        client, hooks, session, reader, signing_key, sns_fetch):
    sub, _ = reader
    msg = sns_message(signing_key[0], "Notification", MessageId="retry-me",
                      Message=ses_bounce("reader@example.org", "Transient", "4.2.2"))
    assert post_sns(client, msg).json()["recorded"] == 1
    assert post_sns(client, msg).json()["duplicates"] == 1
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1
    assert status_of(session, sub) == "confirmed"
    assert sns_fetch.urls == [CERT_URL]  # fetched once, then cached


def test_ses_subscription_confirmation_visits_the_sns_subscribe_url(
        client, hooks, session, signing_key, sns_fetch):
    url = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
           f"&TopicArn={TOPIC}&Token=abc")
    msg = sns_message(signing_key[0], "SubscriptionConfirmation", Token="abc",
                      SubscribeURL=url, Message="You have chosen to subscribe...")
    response = post_sns(client, msg)
    assert response.status_code == 200, response.text
    assert response.json() == {"confirmed": TOPIC}
    assert sns_fetch.urls == [CERT_URL, url]


def test_ses_subscription_confirmation_with_a_foreign_subscribe_url_is_not_visited(
        client, hooks, session, signing_key, sns_fetch):
    msg = sns_message(signing_key[0], "SubscriptionConfirmation", Token="abc",
                      SubscribeURL="https://attacker.example/?Action=ConfirmSubscription",
                      Message="You have chosen to subscribe...")
    response = post_sns(client, msg)
    assert response.status_code == 400
    assert "SubscribeURL" in response.json()["detail"]
    assert sns_fetch.urls == [CERT_URL]  # the certificate only


def test_ses_subscription_confirmation_with_a_bad_signature_is_not_visited(
        client, hooks, session, signing_key, sns_fetch):
    url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    msg = sns_message(signing_key[0], "SubscriptionConfirmation", Token="abc",
                      SubscribeURL=url, Message="You have chosen to subscribe...")
    msg["Token"] = "forged"
    assert post_sns(client, msg).status_code == 401
    assert url not in sns_fetch.urls


@pytest.mark.parametrize(("url", "ok"), [
    ("https://sns.us-east-1.amazonaws.com/x.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
    ("https://sns.us-east-1.amazonaws.com:443/x.pem", True),
    ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
    ("https://sns.us-east-1.amazonaws.com@evil.example/x.pem", False),
    ("https://sqs.us-east-1.amazonaws.com/x.pem", False),
    ("https://sns.amazonaws.com/x.pem", False),
    ("https://sns.us-east-1.evil.com/x.pem", False),
    ("ftp://sns.us-east-1.amazonaws.com/x.pem", False),
    ("not a url", False),
])
def test_only_https_sns_hosts_are_sns_urls(url, ok):
    assert is_sns_url(url) is ok


# --- Postmark ------------------------------------------------------------------------


def postmark(client, body, user=PM_USER, password=PM_PASSWORD):
    return client.post("/webhooks/bounces/postmark", json=body, auth=(user, password))


def pm_bounce(email: str, kind: str = "HardBounce", **extra: Any) -> dict[str, Any]:
    return {"RecordType": "Bounce", "ID": 42, "Type": kind, "TypeCode": 1, "Email": email,
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does "
                       "not exist", "Description": "The server was unable to deliver",
            "BouncedAt": "2026-12-01T12:00:00Z", **extra}


def test_postmark_hard_bounce_with_good_auth_suppresses(client, hooks, session, reader):
    sub, issue = reader
    content = f"Received: by mx\r\nMessage-ID: {MESSAGE_ID}\r\nSubject: hi\r\n\r\nbody"
    response = postmark(client, pm_bounce("reader@example.org", Content=content))
    assert response.status_code == 200, response.text
    assert status_of(session, sub) == "bounced"
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]


def test_postmark_soft_bounce_is_counted_not_suppressed(client, hooks, session, reader):
    sub, _ = reader
    response = postmark(client, pm_bounce("reader@example.org", "SoftBounce", ID=7,
                                          Details="452 4.2.2 mailbox full"))
    assert response.status_code == 200
    assert status_of(session, sub) == "confirmed"
    assert session.get(Suppression, "reader@example.org") is None
    soft = [e for e in events_of(session, sub) if e.kind == "soft_bounced"]
    assert len(soft) == 1 and '"4.2.2"' in soft[0].data


def test_postmark_auto_responder_is_not_a_bounce(client, hooks, session, reader):
    before = state(session)
    response = postmark(client, pm_bounce("reader@example.org", "AutoResponder"))
    assert response.status_code == 200 and response.json()["received"] == 0
    assert state(session) == before


def test_postmark_spam_complaint_unsubscribes_and_suppresses(client, hooks, session, reader):
    sub, _ = reader
    body = {"RecordType": "SpamComplaint", "ID": 43, "Type": "SpamComplaint",
            "TypeCode": 100001, "Email": "reader@example.org"}
    assert postmark(client, body).status_code == 200
    assert status_of(session, sub) == "unsubscribed"
    assert session.get(Suppression, "reader@example.org") is not None


@pytest.mark.parametrize(("user", "password"), [
    (PM_USER, "wrong-password-0123456789"), ("someone", PM_PASSWORD), ("", "")])
def test_postmark_bad_basic_auth_is_401_and_changes_nothing(
        client, hooks, session, reader, user, password):
    before = state(session)
    response = postmark(client, pm_bounce("reader@example.org"), user, password)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert state(session) == before


def test_postmark_without_auth_is_401(client, hooks, session, reader):
    before = state(session)
    response = client.post("/webhooks/bounces/postmark", json=pm_bounce("reader@example.org"))
    assert response.status_code == 401
    assert state(session) == before


# --- Mailgun -------------------------------------------------------------------------


def mailgun_body(email: str, *, severity: str = "permanent", token: str = "tok-1",
                 timestamp: int | None = None, key: str = MAILGUN_KEY,
                 event: str = "failed") -> dict[str, Any]:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": ts, "token": token, "signature": signature},
            "event-data": {"event": event, "severity": severity, "recipient": email,
                           "reason": "bounce",
                           "delivery-status": {"code": 550, "enhanced-code": "5.1.1",
                                               "message": "5.1.1 no such user"},
                           "message": {"headers": {"message-id": MESSAGE_ID.strip("<>")}}}}


def mailgun(client, body):
    return client.post("/webhooks/bounces/mailgun", json=body)


def test_mailgun_permanent_failure_with_good_signature_suppresses(
        client, hooks, session, reader):
    sub, issue = reader
    response = mailgun(client, mailgun_body("reader@example.org"))
    assert response.status_code == 200, response.text
    assert status_of(session, sub) == "bounced"
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]


def test_mailgun_bad_signature_is_401_and_changes_nothing(client, hooks, session, reader):
    before = state(session)
    forged = mailgun_body("reader@example.org", key="key-not-the-real-one-0123456789")
    assert mailgun(client, forged).status_code == 401
    tampered = mailgun_body("someone@example.org")
    tampered["signature"]["token"] = "tok-other"
    assert mailgun(client, tampered).status_code == 401
    assert state(session) == before


def test_mailgun_replayed_token_is_401_and_counts_once(client, hooks, session, reader):
    sub, _ = reader
    body = mailgun_body("reader@example.org", severity="temporary", token="tok-replay")
    assert mailgun(client, body).status_code == 200
    before = state(session)
    replay = mailgun(client, body)
    assert replay.status_code == 401
    assert "replay" in replay.json()["detail"]
    assert state(session) == before
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1


def test_mailgun_stale_timestamp_is_401(client, hooks, session, reader):
    before = state(session)
    old = mailgun_body("reader@example.org", timestamp=int(time.time()) - 3600)
    response = mailgun(client, old)
    assert response.status_code == 401
    assert "stale" in response.json()["detail"]
    assert state(session) == before


def test_mailgun_complaint_unsubscribes(client, hooks, session, reader):
    sub, _ = reader
    assert mailgun(client, mailgun_body("reader@example.org", event="complained",
                                        token="tok-c")).status_code == 200
    assert status_of(session, sub) == "unsubscribed"
    assert session.get(Suppression, "reader@example.org") is not None


def test_postmark_bounce_with_a_large_original_message_is_accepted(
        client, hooks, session, reader):
    sub, issue = reader
    content = f"Message-ID: {MESSAGE_ID}\r\nSubject: hi\r\n\r\n" + "x" * 200_000
    response = postmark(client, pm_bounce("reader@example.org", Content=content))
    assert response.status_code == 200, response.text[:200]
    assert status_of(session, sub) == "bounced"


def test_ses_certificate_that_cannot_be_fetched_is_503_so_sns_retries(
        client, hooks, session, reader, signing_key, web_app):
    def unreachable(url: str) -> bytes:
        raise OSError("connection timed out")

    web_app.state.sns_client = SnsClient(fetch=unreachable)
    before = state(session)
    msg = sns_message(signing_key[0], "Notification", Message=ses_bounce("reader@example.org"))
    response = post_sns(client, msg)
    assert response.status_code == 503
    assert "connection timed out" in response.json()["detail"]
    assert state(session) == before


def test_default_fetcher_refuses_urls_off_sns_hosts_without_connecting():
    from newsletter.inbound.sns import SnsError, fetch_url

    with pytest.raises(SnsError, match="refusing to fetch"):
        fetch_url("https://127.0.0.1:1/not-sns.pem")


def test_mailgun_retries_of_one_message_failing_temporarily_are_one_soft_bounce(
        client, hooks, session, reader, web_settings, monkeypatch):
    sub, _ = reader
    monkeypatch.setattr(web_settings, "soft_bounce_limit", 2)
    for attempt in range(3):  # Mailgun reports each failed retry with a fresh token
        body = mailgun_body("reader@example.org", severity="temporary", token=f"tok-r{attempt}")
        assert mailgun(client, body).status_code == 200
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1
    assert status_of(session, sub) == "confirmed"


def test_mailgun_giving_up_on_a_message_is_not_a_hard_bounce(client, hooks, session, reader):
    sub, _ = reader
    body = mailgun_body("reader@example.org", token="tok-old")
    body["event-data"]["reason"] = "old"
    body["event-data"]["delivery-status"] = {"message": "Too old", "code": 498}
    assert mailgun(client, body).status_code == 200
    assert status_of(session, sub) == "confirmed"
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1


def test_postmark_soft_bounces_of_one_message_count_once(client, hooks, session, reader):
    sub, _ = reader
    for record_id in (100, 101):
        body = pm_bounce("reader@example.org", "Transient", ID=record_id,
                         MessageID="883953f4-6105-42a2-a16a-77a8eac79483")
        assert postmark(client, body).status_code == 200
    assert [e.kind for e in events_of(session, sub)].count("soft_bounced") == 1


@pytest.mark.parametrize("body", [b"not json", b"[" * 100_000, b'"a string"', b"[1, 2]",
                                  b'{"events": [1]}', b'{"events": []}'])
def test_generic_malformed_bodies_are_400_not_500(client, hooks, session, body):
    response = client.post("/webhooks/bounces/generic", content=body,
                           headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    assert response.status_code == 400, response.text[:200]


@pytest.mark.parametrize("provider", ["postmark", "mailgun"])
def test_provider_bodies_that_are_not_objects_are_rejected_cleanly(
        client, hooks, session, provider):
    response = client.post(f"/webhooks/bounces/{provider}", content=b"[1, 2]",
                           auth=(PM_USER, PM_PASSWORD))
    assert response.status_code in (400, 401)


def test_ses_bounce_is_tied_to_the_issue_by_verp_when_ses_replaced_the_message_id(
        client, hooks, session, reader, signing_key, sns_fetch):
    from newsletter.message import verp_address

    sub, issue = reader
    notification = json.loads(ses_bounce("reader@example.org"))
    notification["mail"]["commonHeaders"]["messageId"] = "<0100018c@email.amazonses.com>"
    notification["mail"]["source"] = verp_address(sub.id, issue.id)
    msg = sns_message(signing_key[0], "Notification", Message=json.dumps(notification))
    assert post_sns(client, msg).status_code == 200
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]


def test_ses_prefers_our_message_id_in_the_original_headers(
        client, hooks, session, reader, signing_key, sns_fetch):
    sub, issue = reader
    notification = json.loads(ses_bounce("reader@example.org"))
    notification["mail"]["commonHeaders"]["messageId"] = "<0100018c@email.amazonses.com>"
    notification["mail"]["headers"] = [{"name": "Message-ID", "value": MESSAGE_ID}]
    msg = sns_message(signing_key[0], "Notification", Message=json.dumps(notification))
    assert post_sns(client, msg).status_code == 200
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]


def test_verp_of_another_subscriber_does_not_attribute_the_issue(
        client, hooks, session, reader, make_subscriber):
    from newsletter.message import verp_address

    sub, issue = reader
    other = make_subscriber(email="other@example.org")
    body = mailgun_body("reader@example.org", token="tok-verp")
    del body["event-data"]["message"]
    body["event-data"]["envelope"] = {"sender": verp_address(other.id, issue.id)}
    assert mailgun(client, body).status_code == 200
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [None]


def test_mailgun_bounce_is_tied_to_the_issue_by_its_envelope_verp(
        client, hooks, session, reader):
    from newsletter.message import verp_address

    sub, issue = reader
    body = mailgun_body("reader@example.org", token="tok-verp2")
    del body["event-data"]["message"]
    body["event-data"]["envelope"] = {"sender": verp_address(sub.id, issue.id)}
    assert mailgun(client, body).status_code == 200
    assert [e.issue_id for e in events_of(session, sub) if e.kind == "bounced"] == [issue.id]
