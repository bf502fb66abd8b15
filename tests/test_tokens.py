"""Signed tokens: round trips, tampering, expiry and purpose separation."""

from __future__ import annotations

import time

import pytest

from newsletter import tokens
from newsletter.settings import settings
from newsletter.tokens import BadToken, make_token, read_token
from tests.fixtures import TEST_SECRET


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "secret_key", TEST_SECRET)
    monkeypatch.setattr(settings, "secret_key_fallbacks", "")


def test_token_round_trips_subscriber_id() -> None:
    assert read_token("manage", make_token("manage", 42)) == 42


def test_tampered_token_is_rejected() -> None:
    token = make_token("manage", 42)
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(BadToken):
        read_token("manage", forged)


def test_token_for_another_purpose_is_rejected() -> None:
    with pytest.raises(BadToken):
        read_token("unsubscribe", make_token("manage", 42))


def test_token_signed_with_another_secret_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token("confirm", 7)
    monkeypatch.setattr(settings, "secret_key", "a-different-secret")
    with pytest.raises(BadToken):
        read_token("confirm", token)


def test_expired_token_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token("confirm", 7)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    with pytest.raises(BadToken):
        read_token("confirm", token, max_age=60)


def test_token_within_max_age_is_accepted() -> None:
    assert read_token("confirm", make_token("confirm", 7), max_age=60) == 7


def test_garbage_is_a_bad_token_not_a_crash() -> None:
    with pytest.raises(BadToken):
        read_token("manage", "not-a-token")


def test_custom_purposes_are_separate() -> None:
    token = make_token("preferences-export", 9)
    assert read_token("preferences-export", token) == 9
    with pytest.raises(BadToken):
        read_token("manage", token)


def test_urls_use_base_url_and_carry_a_readable_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "base_url", "https://news.example.org/")
    for func, path, purpose in (
        (tokens.manage_url, "manage", "manage"),
        (tokens.unsubscribe_url, "unsubscribe", "unsubscribe"),
        (tokens.confirm_url, "confirm", "confirm"),
    ):
        url = func(5)
        prefix = f"https://news.example.org/{path}/"
        assert url.startswith(prefix)
        assert read_token(purpose, url.removeprefix(prefix)) == 5


@pytest.mark.parametrize("subscriber_id", [0, 7, 999_999_999, 2**31, 10**15, 111_111_111_111])
def test_fast_tokens_are_exactly_what_itsdangerous_makes(
    monkeypatch: pytest.MonkeyPatch, subscriber_id: int
) -> None:
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    for purpose in (tokens.MANAGE, tokens.UNSUBSCRIBE):
        reference = tokens._serializer(settings.secret_key, purpose).dumps(subscriber_id)
        assert make_token(purpose, subscriber_id) == reference
        assert read_token(purpose, make_token(purpose, subscriber_id)) == subscriber_id


def test_a_changed_secret_key_changes_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    before = make_token("manage", 5)
    monkeypatch.setattr(settings, "secret_key", "rotated-secret")
    assert make_token("manage", 5) != before
    assert read_token("manage", make_token("manage", 5)) == 5


def test_one_recipient_costs_one_signature_per_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.render import Recipient, personal_values

    made: list[str] = []
    real = tokens.make_token

    def counting(purpose: str, subscriber_id: int) -> str:
        made.append(purpose)
        return real(purpose, subscriber_id)

    monkeypatch.setattr(tokens, "make_token", counting)
    values = personal_values(Recipient(5, "a@example.org", "A"))
    assert sorted(made) == ["manage", "unsubscribe"]
    assert values.unsubscribe_url.endswith("/unsubscribe/" + values.unsubscribe_token)
    assert read_token("manage", values.manage_url.rsplit("/", 1)[1]) == 5


# --- key rotation and link lifetimes (issue 11) -------------------------------------------

OLD_KEY = "old-key-Ql8m2v9XkP4sT7wZbN1cR6yH3jF5dG0a"
NEW_KEY = "new-key-Zr4nV8bM1xC6qW3eT9yU2iO5pA7sD0fG"


def _rotate(monkeypatch: pytest.MonkeyPatch, fallbacks: str) -> None:
    monkeypatch.setattr(settings, "secret_key", NEW_KEY)
    monkeypatch.setattr(settings, "secret_key_fallbacks", fallbacks)


def test_a_link_signed_with_a_fallback_key_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    old = make_token(tokens.UNSUBSCRIBE, 42)
    _rotate(monkeypatch, f"some-older-key-Hd7Kq2Lm9Np4Rs6Tv8Wx, {OLD_KEY}")
    assert read_token(tokens.UNSUBSCRIBE, old) == 42


def test_after_rotation_new_links_are_signed_with_the_new_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _rotate(monkeypatch, OLD_KEY)
    fresh = make_token(tokens.UNSUBSCRIBE, 42)
    monkeypatch.setattr(settings, "secret_key_fallbacks", "")
    assert read_token(tokens.UNSUBSCRIBE, fresh) == 42  # only the new key needed
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    with pytest.raises(BadToken):
        read_token(tokens.UNSUBSCRIBE, fresh)


def test_a_retired_key_no_longer_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    old = make_token(tokens.MANAGE, 42)
    _rotate(monkeypatch, "")
    with pytest.raises(BadToken):
        read_token(tokens.MANAGE, old)


def _later(monkeypatch: pytest.MonkeyPatch, days: float) -> None:
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + days * 24 * 3600)


def test_unsubscribe_links_never_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token(tokens.UNSUBSCRIBE, 7)
    _later(monkeypatch, 10 * 365)
    assert read_token(tokens.UNSUBSCRIBE, token) == 7


def test_manage_links_expire_after_manage_link_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "manage_link_days", 30)
    token = make_token(tokens.MANAGE, 7)
    _later(monkeypatch, 29)
    assert read_token(tokens.MANAGE, token) == 7
    _later(monkeypatch, 2)  # 31 days in all
    with pytest.raises(tokens.ExpiredToken):
        read_token(tokens.MANAGE, token)


def test_a_forged_token_is_bad_not_expired() -> None:
    token = make_token(tokens.MANAGE, 7)
    with pytest.raises(BadToken) as raised:
        read_token(tokens.MANAGE, token[:-3] + "AAA")
    assert not isinstance(raised.value, tokens.ExpiredToken)


def test_a_reader_given_secret_key_also_verifies_with_the_fallbacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Signers written as `_serializer(settings.secret_key, purpose)` rotate too."""
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    old = tokens._serializer(settings.secret_key, "click").dumps([1, 2, 3])
    _rotate(monkeypatch, OLD_KEY)
    assert tokens._serializer(settings.secret_key, "click").loads(old) == [1, 2, 3]


def test_nothing_is_ever_signed_with_an_empty_key(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path) -> None:
    from itsdangerous import URLSafeTimedSerializer

    monkeypatch.setattr(settings, "secret_key", "")
    monkeypatch.setattr(settings, "data_dir", tmp_path)
    token = make_token(tokens.MANAGE, 5)
    key = (tmp_path / "secret_key").read_text().strip()
    assert settings.secret_key == key
    assert URLSafeTimedSerializer(key, salt="roundup.manage").loads(token) == 5
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        URLSafeTimedSerializer("", salt="roundup.manage").loads(token)
