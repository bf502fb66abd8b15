"""Property-based fuzzing of the editors' console: a logged-in editor sends malformed
input to every /editor route and form, and nothing answers 500.

The routes are read from the router itself, so a route added later is fuzzed too.
Requests carry a valid CSRF token most of the time, so the forms' own validation is
reached; ids are real, missing, zero or too large for the database. The app talks to
a real Redis (send now, resume) and a real SMTP server (test sends).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from newsletter.models import IssueStatus, Item
from newsletter.web.editor import router
from tests.fixtures.web import csrf_token

# Bounded by the example count, not by a clock: a time budget would make hypothesis's
# replay of a failing example draw different data and report the test as flaky.
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Logging out ends the session the rest of the run needs; it takes no input anyway.
SKIPPED = {("POST", "/editor/logout")}
ROUTES = sorted(
    (method, route.path)
    for route in router.routes if isinstance(route, APIRoute)
    for method in route.methods
    if (method, route.path) not in SKIPPED
    and ("{rest:path}" not in route.path or method in ("GET", "POST"))  # the catch-all
)
# Every field any editor form has, plus some it does not.
FIELDS = ["title", "intro", "headline", "body", "link_text", "link_url", "topics", "email",
          "only", "to", "text", "mode", "source_name", "issue_date", "password", "next",
          "csrf_token", "file"]

nasty_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from([
        "", " ", "\r\n", "\x00", "<script>alert(1)</script>", "a" * 3000, "fintech",
        "logistics", "ana@example.org", "ANA@example.org\r\nBcc: x@y", "javascript:alert(1)",
        "https://example.com:99999/x", "http://[::1", "https://example.com/a b", "2026-11-23",
        "2026-02-30", "99999-01-01", "write", "paste", "//evil.example", "/editor/../admin",
        "%00", "😀" * 40, "---\ntitle: x\n---\n## A\nTopics: nope\n", "## Only a headline",
        "---\ndate: [1, 2\n---\n", "ana", "_", "%",
    ]),
)
form_bodies = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=12),
    st.one_of(nasty_text, st.lists(nasty_text, max_size=4)),
    max_size=8,
)


@pytest.fixture
def fuzz_client(editor_client: Any, make_issue: Any, make_subscriber: Any, session: Any,
                redis_url: str, smtp_server: Any) -> Any:
    issues = {
        "draft": make_issue(title="Draft", items=[
            {"headline": "Warehouse news", "topics": ["logistics"],
             "link_url": "https://example.com/w"},
            {"headline": "Payments news", "topics": ["fintech"]}, "Untagged news"]),
        "approved": make_issue(title="Approved", items=["A"], status=IssueStatus.approved),
        "sending": make_issue(title="Sending", items=["B"], status=IssueStatus.sending),
        "sent": make_issue(title="Sent", items=["C"], status=IssueStatus.sent),
    }
    make_subscriber(email="ana@example.org", topics=["fintech"])
    make_subscriber(email="picky@example.org", topics=["health"], only_my_topics=True)
    editor_client.issue_ids = [i.id for i in issues.values()]
    editor_client.item_ids = list(session.exec(select(Item.id)).all())
    editor_client.csrf = csrf_token(editor_client.get("/editor").text)
    return editor_client


def _ids(real: list[int]) -> st.SearchStrategy[str]:
    # Mostly real ids, so the handlers' own validation runs; sometimes none at all.
    wrong = st.sampled_from([0, 9999, 2**31, 10**20]) | st.integers(min_value=0)
    return st.one_of(*[st.sampled_from(real)] * 4, wrong).map(str)


@FUZZ
@given(data=st.data())
def test_no_editor_route_answers_500(fuzz_client: Any, data: Any) -> None:
    client = fuzz_client
    method, path = data.draw(st.sampled_from(ROUTES), label="route")
    path = re.sub(r"\{issue_id(:int)?\}", lambda _: data.draw(_ids(client.issue_ids)), path)
    path = re.sub(r"\{item_id(:int)?\}", lambda _: data.draw(_ids(client.item_ids)), path)
    path = re.sub(r"\{action\}", lambda _: data.draw(
        st.sampled_from(["up", "down", "pin", "unpin", "hide", "show", "delete", "x"]) | st.text(
            alphabet="abcxyz-_", min_size=1, max_size=8)), path)
    path = re.sub(r"\{rest:path\}", lambda _: data.draw(
        st.text(alphabet="abc/._-0129", max_size=20)), path)
    fields = data.draw(form_bodies, label="fields")
    if method == "GET":
        response = client.get(path, params=fields, follow_redirects=False)
    else:
        if data.draw(st.integers(0, 9), label="csrf") < 8:
            fields["csrf_token"] = client.csrf
        files = None
        if data.draw(st.booleans(), label="upload"):
            files = {"file": (data.draw(st.sampled_from(["r.txt", "r.md", "", "../x"])),
                              data.draw(st.binary(max_size=300)), "text/plain")}
        response = client.request(method, path, data=fields, files=files,
                                  follow_redirects=False)
    # Redis and the SMTP server are up, so not even a 502 or 503 is expected.
    assert response.status_code < 500, (method, path, fields, response.status_code,
                                        response.text[:500])

