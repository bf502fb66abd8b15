"""Security properties of every page: the secret check, headers, body cap, methods."""

from __future__ import annotations

import pytest

from newsletter.settings import DEFAULT_SECRET
from newsletter.web.security import InsecureSecretError


def test_create_app_refuses_the_default_secret_outside_development(app_settings, monkeypatch):
    from newsletter.web.app import create_app

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "test")
    with pytest.raises(InsecureSecretError, match="SECRET_KEY"):
        create_app()


def test_create_app_allows_the_default_secret_in_development(app_settings, monkeypatch):
    from newsletter.web.app import create_app

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "development")
    assert create_app() is not None


def test_pages_send_security_headers(client):
    headers = client.get("/subscribe").headers
    csp = headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def test_the_only_inline_script_carries_the_csp_nonce(client):
    page = client.get("/subscribe")
    nonce = page.headers["content-security-policy"].split("'nonce-", 1)[1].split("'", 1)[0]
    assert page.text.count("<script") == page.text.count(f'<script nonce="{nonce}">') == 1


def test_pages_reference_no_cdn(client):
    for path in ("/subscribe", "/subscribe/embed", "/subscribe/embed/form"):
        text = client.get(path).text
        assert "cdn" not in text.lower() and "https://" not in text.replace(
            "http://testserver", "")


def test_huge_body_is_413(client):
    response = client.post("/subscribe", content=b"email=" + b"a" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_huge_chunked_body_is_413(client):
    def chunks():
        for _ in range(20):
            yield b"a" * 8192

    response = client.post("/api/subscribers", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_wrong_method_is_405(client):
    assert client.delete("/subscribe").status_code == 405
    assert client.put("/api/subscribers", json={}).status_code == 405


def test_file_upload_is_refused_with_400(client):
    response = client.post("/subscribe", files={"email": ("a.txt", b"x")})
    assert response.status_code == 400


def test_healthz_checks_the_database(client):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_is_gone(client, monkeypatch, app_settings):
    from newsletter import db
    from newsletter.services import free_port

    # A PostgreSQL URL on a port nobody listens on: connecting fails at once.
    monkeypatch.setattr(app_settings, "database_url",
                        f"postgresql://nobody@127.0.0.1:{free_port()}/gone")
    db.reset_engine()
    response = client.get("/healthz")
    assert response.status_code == 503


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "<h1>Page not found</h1>" in response.text
