"""Sign-up through the form, the embed form and the JSON API: validation, double
opt-in bookkeeping, no enumeration, and the abuse protections."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from newsletter import signup
from newsletter.models import Event, EventKind, Subscriber, SubscriberStatus, utcnow
from newsletter.subscribers import followed_topics
from tests.fixtures.web import csrf_token, submit

GOOD = {"email": "ana@example.org", "name": "Ana", "topics": ["cloud-ai", "fintech"],
        "timezone": "Europe/Paris", "consent": "1"}


def _subscriber(session, email="ana@example.org"):
    session.expire_all()
    return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def test_form_lists_every_topic_with_its_description(client, session):
    page = client.get("/subscribe")
    assert page.status_code == 200
    assert 'value="cloud-ai"' in page.text
    assert "Cloud" in page.text and 'id="topic-cloud-ai-desc"' in page.text
    assert '<label for="email">' in page.text


def test_sign_up_creates_a_pending_subscriber_with_topics(client, session, sent_confirmations):
    response = submit(client, "/subscribe", GOOD)
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    sub = _subscriber(session)
    assert sub.status == SubscriberStatus.pending
    assert sub.name == "Ana" and sub.timezone == "Europe/Paris"
    assert followed_topics(session=session, subscriber_id=sub.id) == ["cloud-ai", "fintech"]
    assert sent_confirmations == [sub.id]
    assert sub.confirmation_sent_at is not None


def test_known_address_gets_the_same_response(client, session, make_subscriber):
    new = submit(client, "/subscribe", {**GOOD, "email": "new@example.org"})
    make_subscriber(email="known@example.org")
    known = submit(client, "/subscribe", {**GOOD, "email": "known@example.org"})
    assert new.status_code == known.status_code == 200
    strip = lambda r, e: r.text.replace(e, "EMAIL")  # noqa: E731
    # Only the nonce-bearing parts may differ; compare the main content.
    body = lambda r, e: strip(r, e).split('<main', 1)[1].split("</main>", 1)[0]  # noqa: E731
    assert body(new, "new@example.org") == body(known, "known@example.org")


def test_confirmed_address_is_not_sent_another_email(client, session, make_subscriber,
                                                      sent_confirmations):
    make_subscriber(email="known@example.org")
    submit(client, "/subscribe", {**GOOD, "email": "known@example.org"})
    assert sent_confirmations == []


def test_invalid_fields_refill_the_form_with_messages(client, session):
    response = submit(client, "/subscribe", {
        "email": "not-an-address", "name": "Eve\r\nBcc: x@evil.test",
        "topics": ["no-such-topic"], "timezone": "Mars/Olympus", "consent": "1"})
    assert response.status_code == 422
    assert 'value="not-an-address"' in response.text
    for field in ("email", "name", "topics", "timezone"):
        assert f'href="#{field}"' in response.text
    assert session.exec(select(Subscriber)).all() == []


def test_missing_consent_is_refused(client, session):
    response = submit(client, "/subscribe", {**GOOD, "consent": ""})
    assert response.status_code == 422
    assert 'href="#consent"' in response.text
    assert _subscriber(session) is None


def test_script_in_name_is_refused_and_escaped(client, session):
    response = submit(client, "/subscribe", {**GOOD, "name": "<script>alert(1)</script>"})
    assert response.status_code == 422
    assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert _subscriber(session) is None


def test_over_long_email_is_refused(client, session):
    response = submit(client, "/subscribe", {**GOOD, "email": "a" * 300 + "@example.org"})
    assert response.status_code == 422
    assert session.exec(select(Subscriber)).all() == []


def test_missing_csrf_token_changes_nothing(client, session):
    client.get("/subscribe")
    response = client.post("/subscribe", data=GOOD)
    assert response.status_code == 400
    assert _subscriber(session) is None


def test_csrf_token_from_another_browser_is_refused(client, web_app, session):
    from fastapi.testclient import TestClient

    other = TestClient(web_app)
    token = csrf_token(other.get("/subscribe").text)
    client.get("/subscribe")  # our own cookie, different value
    response = client.post("/subscribe", data={**GOOD, "csrf_token": token})
    assert response.status_code == 400
    assert _subscriber(session) is None


def test_honeypot_looks_like_success_but_stores_nothing(client, session, sent_confirmations):
    response = submit(client, "/subscribe", {**GOOD, "website": "http://spam.test"})
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert _subscriber(session) is None and sent_confirmations == []


def test_second_sign_up_within_cooldown_sends_no_second_email(client, session,
                                                              sent_confirmations):
    submit(client, "/subscribe", GOOD)
    submit(client, "/subscribe", GOOD)
    assert len(sent_confirmations) == 1


def test_sign_up_after_cooldown_sends_a_new_email(client, session, sent_confirmations):
    submit(client, "/subscribe", GOOD)
    sub = _subscriber(session)
    sub.confirmation_sent_at = utcnow() - timedelta(minutes=16)
    session.add(sub)
    session.commit()
    submit(client, "/subscribe", GOOD)
    assert sent_confirmations == [sub.id, sub.id]


def test_cooldown_claim_is_taken_once(session, web_settings):
    sub = signup.sign_up(session=session, signup=signup.CleanSignup(email="x@example.org"),
                         source="test")
    again = signup.claim_confirmation(session=session, subscriber_id=sub.subscriber_id)
    assert sub.claimed_at is not None and again.claimed_at is None


def test_per_ip_rate_limit_answers_429(client, session, monkeypatch, web_settings):
    monkeypatch.setattr(web_settings, "signup_rate_per_minute", 3)
    token = csrf_token(client.get("/subscribe").text)
    codes = [client.post("/subscribe", data={**GOOD, "email": f"r{i}@example.org",
                                              "csrf_token": token}).status_code
             for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert session.exec(select(Subscriber)).all().__len__() == 3


def test_rate_limit_counts_in_redis_when_reachable(redis_url, web_settings, monkeypatch):
    import redis

    from newsletter.ratelimit import Limiter

    limiter = Limiter(redis_url=redis_url)
    assert [limiter.hit("2/minute", "signup", "ip") for _ in range(3)] == [True, True, False]
    keys = redis.Redis.from_url(redis_url).keys("roundup:rl:*")
    assert len(keys) == 1 and b"signup/ip" in keys[0]
    # Another process (a new limiter on the same Redis) sees the same count.
    assert not Limiter(redis_url=redis_url).hit("2/minute", "signup", "ip")


def test_rate_limit_falls_back_to_memory_without_redis():
    from newsletter.cli.local.services import free_port
    from newsletter.ratelimit import Limiter

    limiter = Limiter(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert [limiter.hit("1/2 seconds", "ip") for _ in range(2)] == [True, False]
    import time

    time.sleep(2.1)
    assert limiter.hit("1/2 seconds", "ip")  # the window moved on


def test_broker_down_keeps_the_sign_up_and_releases_the_cooldown(
        session, web_settings, monkeypatch):
    from fastapi.testclient import TestClient

    from newsletter.cli.local.services import free_port
    from newsletter.web.app import create_app

    monkeypatch.setattr(web_settings, "redis_url", f"redis://127.0.0.1:{free_port()}/0")
    client = TestClient(create_app())  # the real Celery publisher, broker unreachable
    response = submit(client, "/subscribe", GOOD)
    assert response.status_code == 200
    sub = _subscriber(session)
    assert sub.status == SubscriberStatus.pending
    assert sub.confirmation_sent_at is None


def test_sign_up_event_records_source_referrer_and_utm(client, session):
    client.get("/subscribe?utm_source=mastodon&utm_campaign=launch",
               headers={"Referer": "https://blog.example/post"})
    page = client.get("/subscribe?utm_source=mastodon&utm_campaign=launch",
                      headers={"Referer": "https://blog.example/post"})
    data = {**GOOD, "csrf_token": csrf_token(page.text), "utm_source": "mastodon",
            "utm_campaign": "launch", "referrer": "https://blog.example/post"}
    assert 'name="utm_source" value="mastodon"' in page.text
    client.post("/subscribe", data=data)
    event = session.exec(select(Event).where(Event.kind == EventKind.signed_up)).one()
    assert event.source == "form"
    payload = json.loads(event.data)
    assert payload["utm_source"] == "mastodon" and payload["utm_campaign"] == "launch"
    assert payload["referrer"] == "https://blog.example/post"


def test_unsubscribed_address_signing_up_again_must_confirm(client, session, make_subscriber,
                                                            sent_confirmations):
    from newsletter.subscribers import unsubscribe

    sub = make_subscriber(email="back@example.org")
    unsubscribe(session=session, subscriber_id=sub.id, source="test")
    session.commit()
    submit(client, "/subscribe", {**GOOD, "email": "back@example.org"})
    assert _subscriber(session, "back@example.org").status == SubscriberStatus.pending
    assert sent_confirmations == [sub.id]


def test_embed_page_shows_a_copyable_snippet(client):
    page = client.get("/subscribe/embed")
    assert page.status_code == 200
    assert "&lt;iframe src=&#34;http://testserver/subscribe/embed/form&#34;" in page.text


def test_embed_form_may_be_framed_and_records_source_embed(client, session):
    page = client.get("/subscribe/embed/form")
    assert "x-frame-options" not in page.headers
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    assert client.get("/subscribe").headers["x-frame-options"] == "DENY"
    response = submit(client, "/subscribe/embed/form", GOOD)
    assert response.status_code == 200
    event = session.exec(select(Event).where(Event.kind == EventKind.signed_up)).one()
    assert event.source == "embed"


@pytest.mark.parametrize("email", ["api@example.org", "known@example.org"])
def test_api_answers_202_with_the_same_body(client, make_subscriber, email):
    make_subscriber(email="known@example.org")
    response = client.post("/api/subscribers", json={"email": email, "topics": ["fintech"]})
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "message": signup_message()}


def signup_message() -> str:
    from newsletter.web.api import ACCEPTED_MESSAGE

    return ACCEPTED_MESSAGE


def test_api_sign_up_is_pending_with_source_api(client, session, sent_confirmations):
    client.post("/api/subscribers", json={"email": "api@example.org", "utm_source": "x"})
    sub = _subscriber(session, "api@example.org")
    assert sub.status == SubscriberStatus.pending and sub.source == "api"
    assert sent_confirmations == [sub.id]


def test_api_rejects_unknown_topics_with_422(client, session):
    response = client.post("/api/subscribers", json={"email": "a@example.org",
                                                     "topics": ["nope"]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "topics"]
    assert session.exec(select(Subscriber)).all() == []


def test_api_lists_topics(client):
    topics = client.get("/api/topics").json()
    assert {"slug", "name", "description", "id"} <= set(topics[0])
    assert "fintech" in [t["slug"] for t in topics]


def test_api_is_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/subscribers"] and "get" in paths["/api/topics"]
    assert "/subscribe" not in paths


# --- no enumeration: the whole response is the same whatever we know ---------------------


def _known_addresses(session, make_subscriber) -> list[str]:
    """Addresses in every state an address can be in, all of the same length."""
    from newsletter.models import Suppression
    from newsletter.subscribers import unsubscribe

    make_subscriber(email="conf1@example.org")
    make_subscriber(email="pend1@example.org", confirmed=False)
    gone = make_subscriber(email="unsu1@example.org")
    unsubscribe(session=session, subscriber_id=gone.id, source="test")
    session.add(Suppression(email="supp1@example.org", reason="550 no such user"))
    session.commit()
    return ["newa1@example.org", "conf1@example.org", "pend1@example.org",
            "unsu1@example.org", "supp1@example.org"]


def _comparable(response, email: str) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in ("date",)}
    headers["content-security-policy"] = re.sub(
        r"'nonce-[^']+'", "'nonce-N'", headers.get("content-security-policy", ""))
    body = response.text.replace(email, "EMAIL")
    return response.status_code, tuple(sorted(headers.items())), body


def test_the_form_answers_byte_for_byte_alike_for_new_and_known_addresses(
        web_app, session, make_subscriber):
    from fastapi.testclient import TestClient

    answers = {}
    for email in _known_addresses(session, make_subscriber):
        browser = TestClient(web_app)  # a fresh browser each time: same cookies
        answers[email] = _comparable(submit(browser, "/subscribe", {**GOOD, "email": email}),
                                     email)
    assert answers["newa1@example.org"][0] == 200
    assert len(set(answers.values())) == 1, answers.keys()


def test_the_api_answers_byte_for_byte_alike_for_new_and_known_addresses(
        client, session, make_subscriber):
    answers = {
        email: _comparable(client.post("/api/subscribers", json={"email": email}), email)
        for email in _known_addresses(session, make_subscriber)
    }
    assert answers["newa1@example.org"][0] == 202
    assert len(set(answers.values())) == 1


# --- cooldown and rate limits ------------------------------------------------------------


def _from_ip(web_app, ip: str):
    from fastapi.testclient import TestClient

    return TestClient(web_app, client=(ip, 40000))


def test_the_cooldown_holds_whatever_the_ip(web_app, session, sent_confirmations):
    for ip in ("198.51.100.1", "198.51.100.2", "2001:db8::3"):
        assert submit(_from_ip(web_app, ip), "/subscribe", GOOD).status_code == 200
        _from_ip(web_app, ip).post("/api/subscribers", json={"email": GOOD["email"]})
    assert sent_confirmations == [_subscriber(session).id]


def test_the_rate_limit_is_per_ip(web_app, session, monkeypatch, web_settings):
    monkeypatch.setattr(web_settings, "signup_rate_per_minute", 2)
    busy, other = _from_ip(web_app, "198.51.100.7"), _from_ip(web_app, "198.51.100.8")
    token = csrf_token(busy.get("/subscribe").text)
    codes = [busy.post("/subscribe", data={**GOOD, "email": f"b{i}@example.org",
                                           "csrf_token": token}).status_code
             for i in range(3)]
    assert codes == [200, 200, 429]
    assert submit(other, "/subscribe", {**GOOD, "email": "o@example.org"}).status_code == 200


def test_the_api_shares_the_per_ip_limit_and_answers_429(client, session, monkeypatch,
                                                         web_settings):
    monkeypatch.setattr(web_settings, "signup_rate_per_minute", 2)
    codes = [client.post("/api/subscribers", json={"email": f"a{i}@example.org"}).status_code
             for i in range(3)]
    assert codes == [202, 202, 429]
    refused = client.post("/api/subscribers", json={"email": "late@example.org"})
    assert refused.headers["retry-after"] == "60" and "detail" in refused.json()
    assert _subscriber(session, "late@example.org") is None


def test_unreachable_redis_still_limits_and_never_500s(session, web_settings, monkeypatch,
                                                        sent_confirmations):
    from fastapi.testclient import TestClient

    from newsletter.cli.local.services import free_port
    from newsletter.web.app import create_app

    monkeypatch.setattr(web_settings, "redis_url", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(web_settings, "signup_rate_per_minute", 2)
    client = TestClient(create_app(send_confirmation=sent_confirmations.append))
    token = csrf_token(client.get("/subscribe").text)
    codes = [client.post("/subscribe", data={**GOOD, "email": f"r{i}@example.org",
                                             "csrf_token": token}).status_code
             for i in range(3)]
    codes.append(client.post("/api/subscribers", json={"email": "x@example.org"}).status_code)
    assert codes == [200, 200, 429, 429]
    assert len(sent_confirmations) == 2


def test_redis_going_away_mid_flight_falls_back_to_counting_in_memory(
        session, web_settings, monkeypatch, sent_confirmations):
    """Counted in Redis while it answers; when it dies the app keeps limiting."""
    import redis

    from newsletter.cli.local.services import private_redis
    from newsletter.web.app import create_app

    monkeypatch.setattr(web_settings, "signup_rate_per_minute", 3)
    with private_redis() as url:
        monkeypatch.setattr(web_settings, "redis_url", url)
        app = create_app(send_confirmation=sent_confirmations.append)
        client = _from_ip(app, "198.51.100.9")
        token = csrf_token(client.get("/subscribe").text)
        post = lambda i: client.post("/subscribe", data={  # noqa: E731
            **GOOD, "email": f"m{i}@example.org", "csrf_token": token}).status_code
        assert post(0) == 200
        counted = redis.Redis.from_url(url).keys("roundup:rl:*signup/198.51.100.9*")
        assert len(counted) == 1
    # Redis is gone now: the next requests are counted in this process.
    codes = [post(i) for i in range(1, 6)]
    assert 500 not in codes and codes[:3] == [200, 200, 200] and codes[-1] == 429


def test_embedded_sign_up_records_the_host_page_and_campaign(client, session):
    """Inside an iframe, Referer is the page embedding the form."""
    page = client.get("/subscribe/embed/form?utm_source=partner&utm_medium=iframe",
                      headers={"Referer": "https://partner.example/news"})
    client.post("/subscribe/embed/form", data={
        **GOOD, "csrf_token": csrf_token(page.text),
        **dict(re.findall(r'name="(referrer|utm_\w+)" value="([^"]*)"', page.text))})
    event = session.exec(select(Event).where(Event.kind == EventKind.signed_up)).one()
    assert event.source == "embed"
    assert {"referrer": "https://partner.example/news", "utm_source": "partner",
            "utm_medium": "iframe"}.items() <= json.loads(event.data).items()


def test_the_honeypot_answer_cannot_be_told_from_a_real_one(web_app, session,
                                                             sent_confirmations):
    from fastapi.testclient import TestClient

    real = submit(TestClient(web_app), "/subscribe", {**GOOD, "email": "real@example.org"})
    trap = submit(TestClient(web_app), "/subscribe",
                  {**GOOD, "email": "bots@example.org", "website": "x"})
    assert _comparable(real, "real@example.org") == _comparable(trap, "bots@example.org")
    assert _subscriber(session, "bots@example.org") is None
    assert len(sent_confirmations) == 1


def test_the_check_your_inbox_page_states_the_configured_cooldown(client, monkeypatch,
                                                                  web_settings):
    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 42)
    assert "in 42 minutes" in submit(client, "/subscribe", GOOD).text


# --- a known address's preferences change only when its owner confirms ------------------


def _owner(make_subscriber, session, **fields):
    from newsletter.subscribers import unsubscribe

    sub = make_subscriber(email="owner@example.org", name="Olga", topics=["logistics"],
                          timezone="Asia/Tokyo", **fields)
    if fields.get("confirmed", True):
        unsubscribe(session=session, subscriber_id=sub.id, source="test")
    session.commit()
    return sub


def _prefs(session, sub_id):
    sub = session.get(Subscriber, sub_id)
    return (sub.name, sub.timezone, sub.only_my_topics,
            followed_topics(session=session, subscriber_id=sub_id))


OWNER = ("Olga", "Asia/Tokyo", False, ["logistics"])
STRANGER = {"email": "owner@example.org", "name": "Hacked", "topics": ["fintech"],
            "timezone": "Europe/Paris", "only_my_topics": "1", "consent": "1"}


@pytest.mark.parametrize("status", ["unsubscribed", "pending"])
def test_a_stranger_signing_up_a_known_address_changes_nothing_stored(
        client, session, make_subscriber, sent_confirmations, status):
    sub = _owner(make_subscriber, session, confirmed=status == "unsubscribed")
    submit(client, "/subscribe", STRANGER)
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.pending
    assert _prefs(session, sub.id) == OWNER
    assert sent_confirmations == [sub.id]


def _confirm_link_token(session, sub_id):
    url = signup.confirm_url(session=session, subscriber_id=sub_id)
    return url.rsplit("/", 1)[1]


MAX_AGE = 7 * 24 * 3600


def test_the_confirmation_link_carries_the_submitted_preferences(
        client, session, make_subscriber, sent_confirmations):
    sub = _owner(make_subscriber, session)
    submit(client, "/subscribe", STRANGER)
    token = _confirm_link_token(session, sub.id)
    request = signup.read_confirm_token(token, max_age=MAX_AGE)
    assert request == signup.ConfirmRequest(sub.id, {
        "name": "Hacked", "topics": ["fintech"], "timezone": "Europe/Paris",
        "only_my_topics": True})
    # A link carrying preferences is not a plain confirm token, nor the other way round.
    from newsletter import tokens
    with pytest.raises(tokens.BadToken):
        tokens.read_token(tokens.CONFIRM, token)
    assert signup.read_confirm_token(token[:-2] + "xx", max_age=MAX_AGE) is None

    # Only the address's owner, clicking the link, applies them.
    assert signup.confirm_signup(session=session, request=request, source="confirm-link")
    session.commit()
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.confirmed
    assert _prefs(session, sub.id) == ("Hacked", "Europe/Paris", True, ["fintech"])
    # A second click (or an older link) changes nothing any more.
    assert not signup.confirm_signup(session=session, request=signup.ConfirmRequest(
        sub.id, {"name": "Later", "topics": [], "timezone": "UTC", "only_my_topics": False}),
        source="confirm-link")


def test_a_later_sign_up_within_the_cooldown_does_not_change_the_emailed_link(
        client, session, make_subscriber, sent_confirmations):
    sub = _owner(make_subscriber, session)
    owner_wants = {**STRANGER, "name": "Olga M.", "topics": ["logistics", "health"]}
    owner_wants.pop("only_my_topics")
    submit(client, "/subscribe", owner_wants)
    submit(client, "/subscribe", STRANGER)  # within the cooldown: no email, no effect
    assert sent_confirmations == [sub.id]
    request = signup.read_confirm_token(_confirm_link_token(session, sub.id), max_age=MAX_AGE)
    assert request.preferences["name"] == "Olga M."
    assert sorted(request.preferences["topics"]) == ["health", "logistics"]
    assert _prefs(session, sub.id) == OWNER


def test_a_new_address_gets_a_plain_confirm_link(client, session, sent_confirmations):
    from newsletter import tokens

    submit(client, "/subscribe", GOOD)
    sub = _subscriber(session)
    token = _confirm_link_token(session, sub.id)
    assert tokens.read_token(tokens.CONFIRM, token) == sub.id
    assert signup.read_confirm_token(token, max_age=MAX_AGE) == signup.ConfirmRequest(sub.id)


# --- the daily cap on confirmation emails (issue 11) ----------------------------------


def test_at_most_three_confirmations_per_address_per_day(client, session, monkeypatch,
                                                         web_settings, sent_confirmations):
    """Not a cooldown that re-arms: with the cooldown gone, the day's cap still holds."""
    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    for _ in range(6):
        assert submit(client, "/subscribe", GOOD).status_code == 200
    sub = _subscriber(session)
    assert sent_confirmations == [sub.id] * 3
    # Another address has its own budget.
    submit(client, "/subscribe", {**GOOD, "email": "bea@example.org"})
    assert len(sent_confirmations) == 4


def test_the_daily_cap_is_configurable_and_shared_by_form_and_api(
        client, session, monkeypatch, web_settings, sent_confirmations):
    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    monkeypatch.setattr(web_settings, "confirmations_per_day", 2)
    submit(client, "/subscribe", GOOD)
    client.post("/api/subscribers", json={"email": GOOD["email"]})
    client.post("/api/subscribers", json={"email": GOOD["email"]})
    assert len(sent_confirmations) == 2


def test_a_capped_sign_up_keeps_the_claim_free_for_tomorrow(session, web_settings, monkeypatch):
    """A refusal by the cap gives the cooldown claim back (nothing was sent)."""
    from newsletter.ratelimit import Limiter

    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    monkeypatch.setattr(web_settings, "confirmations_per_day", 1)
    allow = signup.daily_cap(Limiter())
    wanted = signup.SignupRequest(signup=signup.CleanSignup(email="cap@example.org"),
                                  source="test")
    first = signup.process_signup(session=session, request=wanted, allow=allow)
    session.commit()
    sent_at = _subscriber(session, "cap@example.org").confirmation_sent_at
    second = signup.process_signup(session=session, request=wanted, allow=allow)
    session.commit()
    assert first.claimed_at is not None and second.claimed_at is None
    assert _subscriber(session, "cap@example.org").confirmation_sent_at == sent_at


def test_the_daily_cap_holds_in_redis_across_web_processes(
        session, web_settings, redis_url, monkeypatch, sent_confirmations):
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app

    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    for _ in range(2):  # two web processes, each with its own memory
        client = TestClient(create_app(send_confirmation=sent_confirmations.append))
        for _ in range(3):
            submit(client, "/subscribe", GOOD)
    assert len(sent_confirmations) == 3


def test_the_sign_up_request_only_publishes_a_task(session, web_settings, redis_url,
                                                   make_subscriber):
    """Known or not, the request writes nothing: the worker decides."""
    import redis as redis_lib
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app
    from tests.fixtures.web import snapshot

    make_subscriber(email="known@example.org")
    client = TestClient(create_app())
    before = snapshot(session)
    for email in ("known@example.org", "new@example.org"):
        assert submit(client, "/subscribe", {**GOOD, "email": email}).status_code == 200
    assert client.post("/api/subscribers", json={"email": "api@example.org"}).status_code == 202
    assert snapshot(session) == before
    queued = redis_lib.Redis.from_url(redis_url).lrange("roundup", 0, -1)
    assert len(queued) == 3
    assert all(b"workers.signup_tasks.process_signup" in m for m in queued)


@pytest.mark.slow
def test_a_real_worker_decides_sign_ups_and_applies_the_daily_cap(
        session, web_settings, redis_url, smtp_server, celery_workers, make_subscriber):
    """The production path: the request publishes, the worker decides and mails."""
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app
    from tests.fixtures.services import wait_until

    make_subscriber(email="known@example.org")  # confirmed: never mailed again
    celery_workers.start(SIGNUP_COOLDOWN_MINUTES="0")
    client = TestClient(create_app())
    for email in ["ana@example.org"] * 5 + ["known@example.org"]:
        assert submit(client, "/subscribe", {**GOOD, "email": email}).status_code == 200
    decided = re.compile(r"process_signup\[[^\]]+\] succeeded")
    wait_until(lambda: len(decided.findall(celery_workers.logs())) == 6, timeout=60,
               message=celery_workers.logs)
    wait_until(lambda: len(smtp_server.messages) >= 3, timeout=30)
    time.sleep(1)  # a fourth email, if the cap failed, would be on its way by now
    assert smtp_server.recipients() == ["ana@example.org"] * 3
    assert _subscriber(session).status == SubscriberStatus.pending

