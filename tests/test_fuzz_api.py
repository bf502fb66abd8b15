"""Property-based fuzzing: malformed input to every endpoint never causes a 500.

Hypothesis drives the in-process app with random methods, query strings, Referer
headers, form fields (with a valid CSRF token half of the time, so validation is
reached), JSON and raw bodies. Token routes get valid tokens (for a fresh pending,
confirmed or unsubscribed subscriber), tokens made for another purpose, tampered
ones, ones for an unknown subscriber and garbage. A 500 raises in the TestClient.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from newsletter import tokens
from newsletter.models import Subscriber
from tests.fixtures.web import csrf_token

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

FIELDS = ["email", "name", "topics", "timezone", "only_my_topics", "consent", "paused",
          "sure", "website", "referrer", "utm_source", "List-Unsubscribe", "csrf_token"]
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", "\r\n", "\x00", "<script>alert(1)</script>", "a" * 5000,
                     "ana@example.org", "ANA@EXAMPLE.ORG\r\nBcc: x@y", "fintech",
                     "Europe/Paris", "../../etc/passwd", "One-Click", "%00", "😀" * 50]),
)
form_bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20),
                              st.one_of(nasty_text, st.lists(nasty_text, max_size=5)),
                              max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | nasty_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
api_bodies = st.fixed_dictionaries({}, optional={
    "email": json_values | nasty_text, "name": json_values, "topics": json_values,
    "timezone": json_values, "only_my_topics": json_values, "referrer": json_values,
})


# Every subscriber-facing route (the editors' console has its own tests);
# test_the_fuzzed_paths_cover_every_route keeps this list complete.
PATHS = [
    "/", "/subscribe", "/subscribe/embed", "/subscribe/embed/form", "/confirm/{token}",
    "/manage/{token}", "/manage/{token}/unsubscribe", "/manage/{token}/export",
    "/manage/{token}/delete", "/unsubscribe/{token}", "/unsubscribe/{token}/resubscribe",
    "/api/subscribers", "/api/topics", "/healthz", "/openapi.json", "/static/site.css",
]
PURPOSES = {"confirm": tokens.CONFIRM, "manage": tokens.MANAGE, "unsubscribe": tokens.UNSUBSCRIBE}
STATUSES = ["pending", "confirmed", "unsubscribed"]


def test_the_fuzzed_paths_cover_every_route(web_app: Any) -> None:
    served = {getattr(r, "path", "") for r in web_app.routes}
    public = {p for p in served if p and not p.startswith("/editor")}
    fuzzed = {p for p in PATHS if not p.startswith("/static/")} | {"/static"}
    assert public <= fuzzed, sorted(public - fuzzed)


@pytest.fixture
def fuzz_client(client: Any, session: Any, make_subscriber: Any) -> Any:
    from newsletter.subscribers import unsubscribe

    def fresh(status: str) -> int:
        """A new subscriber per example: an earlier example may have deleted the last."""
        sub = make_subscriber(topics=["travel"], confirmed=status != "pending")
        if status == "unsubscribed":
            unsubscribe(session=session, subscriber_id=sub.id, source="test")
            session.commit()
        return int(sub.id)

    client.fresh = fresh  # type: ignore[attr-defined]
    client.csrf = csrf_token(client.get("/subscribe").text)  # type: ignore[attr-defined]
    return client


def _token(data: Any, client: Any, route: str) -> str:
    choice = data.draw(st.sampled_from(
        ["valid", "other purpose", "tampered", "unknown id", "garbage"]), label="token kind")
    if choice == "garbage":
        return str(data.draw(st.text(max_size=200).map(lambda t: quote(t, safe="")).filter(bool),
                             label="garbage token"))
    if choice == "unknown id":
        return tokens.make_token(PURPOSES[route], 10**9)
    sub_id = client.fresh(data.draw(st.sampled_from(STATUSES), label="status"))
    purpose = PURPOSES[route]
    if choice == "other purpose":
        purpose = data.draw(st.sampled_from(sorted(set(PURPOSES.values()) - {purpose})))
    token = tokens.make_token(purpose, sub_id)
    return token[:-4] + "AAAA" if choice == "tampered" else token


@FUZZ
@given(data=st.data())
def test_no_endpoint_answers_500_to_malformed_requests(fuzz_client: Any, data: Any) -> None:
    client = fuzz_client
    path = data.draw(st.sampled_from(PATHS), label="path")
    if "{token}" in path:
        path = path.replace("{token}", _token(data, client, path.split("/")[1]))
    query = data.draw(st.dictionaries(st.sampled_from(["utm_source", "utm_campaign",
                                                       "referrer", "x"]), nasty_text,
                                      max_size=3), label="query")
    headers = {}
    if data.draw(st.booleans(), label="with referer"):
        headers["referer"] = data.draw(nasty_text.filter(lambda t: "\n" not in t
                                                         and "\r" not in t
                                                         and "\x00" not in t
                                                         and t.isascii()), label="referer")
    method = data.draw(st.sampled_from(["GET", "HEAD", "POST", "POST", "POST", "PUT",
                                        "DELETE"]), label="method")
    body = data.draw(form_bodies, label="form")
    if data.draw(st.booleans(), label="with csrf"):
        body["csrf_token"] = client.csrf
    kind = data.draw(st.sampled_from(["form", "json", "raw"]), label="kind")
    kwargs: dict[str, Any] = {"params": query, "headers": headers}
    if method not in ("GET", "HEAD"):
        if kind == "form":
            kwargs["data"] = body
        elif kind == "json":
            kwargs["json"] = data.draw(json_values, label="json")
        else:
            kwargs["content"] = data.draw(st.binary(max_size=2000), label="raw")
            kwargs["headers"]["content-type"] = data.draw(st.sampled_from([
                "application/x-www-form-urlencoded", "multipart/form-data; boundary=xx",
                "multipart/form-data", "application/json", "text/plain", "\x7f/\x7f"]))
    response = client.request(method, path, **kwargs)
    assert response.status_code < 500, (method, path, kwargs, response.text[:500])


@FUZZ
@given(body=api_bodies)
def test_api_never_answers_500_and_stores_only_valid_addresses(
        fuzz_client: Any, session: Any, body: dict[str, Any]) -> None:
    response = fuzz_client.post("/api/subscribers", json=body)
    assert response.status_code in (202, 422, 429), response.text[:500]
    session.expire_all()
    for sub in session.exec(select(Subscriber)).all():
        assert re.fullmatch(r"[^\s<>\x00-\x1f]+@[^\s<>\x00-\x1f]+", sub.email), sub.email
        assert "\n" not in sub.name and "<" not in sub.name
