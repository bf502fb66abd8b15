"""`newsletter check` names every setting not fit for production, `newsletter dns`
prints records that match the key, and production processes refuse example settings."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.cli.local.services import free_port
from newsletter.message import Recipient, build_message
from newsletter.settings import DEFAULT_SECRET, Settings, settings
from tests.fixtures import TEST_SECRET
from tests.test_procfile import procfile_env, run_process

GOOD = {
    "secret_key": TEST_SECRET,
    "secret_key_fallbacks": "",
    "base_url": "https://news.acme-widgets.com",
    "mail_from_address": "newsletter@acme-widgets.com",
    "reply_to": "editors@acme-widgets.com",
    "bounce_domain": "bounces.acme-widgets.com",
    "list_id": "weekly.acme-widgets.com",
    "unsubscribe_mailto": "unsubscribe@acme-widgets.com",
    "postal_address": "Acme Widgets Ltd, 12 Baker Row, Leeds LS1 4AP, United Kingdom",
    "dkim_domain": "acme-widgets.com",
    "dkim_selector": "news2026",
}


def _write_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


@pytest.fixture(scope="module")
def _dkim_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    _write_key(path)
    return path


@pytest.fixture
def good_settings(smtp_server: Any, _dkim_pem: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings fit for production, the relay a real SMTP server on 127.0.0.1."""
    for name, value in GOOD.items():
        monkeypatch.setattr(settings, name, value)
    monkeypatch.setattr(settings, "dkim_private_key_path", _dkim_pem)
    return settings


def check(*args: str) -> tuple[int, list[dict[str, str]]]:
    result = CliRunner().invoke(app, ["check", "--json", *args])
    return result.exit_code, json.loads(result.output)["problems"]


def test_good_settings_pass(good_settings):
    code, problems = check()
    assert problems == [] and code == 0


def test_good_settings_pass_as_a_table_too(good_settings):
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0 and "No problems" in result.output


EXAMPLE_SETTINGS = [
    ("base_url", "http://news.acme-widgets.com", "BASE_URL"),
    ("base_url", "https://localhost:8000", "BASE_URL"),
    ("base_url", "https://127.0.0.1", "BASE_URL"),
    ("base_url", "https://news.roundup.example", "BASE_URL"),
    ("mail_from_address", "newsletter@roundup.example", "MAIL_FROM_ADDRESS"),
    ("mail_from_address", "news@example.com", "MAIL_FROM_ADDRESS"),
    ("reply_to", "editors@example.org", "REPLY_TO"),
    ("bounce_domain", "bounces.example.net", "BOUNCE_DOMAIN"),
    ("list_id", "weekly.roundup.example", "LIST_ID"),
    ("unsubscribe_mailto", "unsubscribe@roundup.example", "UNSUBSCRIBE_MAILTO"),
    ("postal_address", Settings.model_fields["postal_address"].default, "POSTAL_ADDRESS"),
    ("postal_address", "", "POSTAL_ADDRESS"),
    ("secret_key", "", "SECRET_KEY"),
    ("secret_key", DEFAULT_SECRET, "SECRET_KEY"),
    ("secret_key_fallbacks", DEFAULT_SECRET, "SECRET_KEY"),
    ("dkim_domain", "", "DKIM_DOMAIN"),
    ("dkim_private_key_path", None, "DKIM_PRIVATE_KEY_PATH"),
    ("dkim_private_key_path", Path("/nonexistent/dkim.pem"), "DKIM_PRIVATE_KEY_PATH"),
    ("dkim_domain", "other-company.com", "DKIM_DOMAIN"),  # not aligned with the sender
    ("smtp_host", "", "SMTP_HOST"),
]


@pytest.mark.parametrize(("name", "value", "reported"), EXAMPLE_SETTINGS,
                         ids=[f"{n}={v!s:.30}" for n, v, _ in EXAMPLE_SETTINGS])
def test_check_reports_each_setting_not_fit_for_production(good_settings, monkeypatch, name,
                                                          value, reported):
    monkeypatch.setattr(settings, name, value)
    code, problems = check("--no-relay")
    assert code == 1
    assert [p["setting"] for p in problems] == [reported], problems


def test_check_reports_an_unreadable_dkim_key(good_settings, monkeypatch, tmp_path):
    garbage = tmp_path / "dkim.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    monkeypatch.setattr(settings, "dkim_private_key_path", garbage)
    code, problems = check("--no-relay")
    assert code == 1 and [p["setting"] for p in problems] == ["DKIM_PRIVATE_KEY_PATH"]
    assert str(garbage) in problems[0]["message"]


def test_check_reports_a_relay_that_does_not_answer(good_settings, monkeypatch):
    port = free_port()  # nobody listens here
    monkeypatch.setattr(settings, "smtp_port", port)
    code, problems = check()
    assert code == 1
    assert [p["setting"] for p in problems] == ["SMTP_HOST"]
    assert f"127.0.0.1:{port}" in problems[0]["message"]


def test_check_lists_every_problem_in_one_report(monkeypatch):
    for name, value in GOOD.items():  # back to the shipped defaults
        monkeypatch.setattr(settings, name, Settings.model_fields[name].default)
    monkeypatch.setattr(settings, "dkim_private_key_path", Path("/etc/roundup/dkim.pem"))
    result = CliRunner().invoke(app, ["check", "--no-relay"])
    assert result.exit_code == 1
    for name in ("SECRET_KEY", "BASE_URL", "MAIL_FROM_ADDRESS", "REPLY_TO", "BOUNCE_DOMAIN",
                 "LIST_ID", "UNSUBSCRIBE_MAILTO", "POSTAL_ADDRESS", "DKIM_DOMAIN"):
        assert name in result.output


# --- newsletter dns ------------------------------------------------------------------------


def test_dns_prints_the_dkim_record_of_the_configured_key(good_settings, _dkim_pem):
    result = CliRunner().invoke(app, ["dns", "--json"])
    assert result.exit_code == 0
    records = {r["kind"]: r for r in json.loads(result.output)}
    record = records["DKIM"]
    assert record["name"] == "news2026._domainkey.acme-widgets.com"
    private = serialization.load_pem_private_key(_dkim_pem.read_bytes(), password=None)
    expected = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    assert re.search(r"\bp=([A-Za-z0-9+/=]+)", record["value"]).group(1) == expected

    # The printed record verifies what we sign.
    out = build_message(subject="Hello", html="<p>h</p>", text="t\n",
                        recipient=Recipient(3, "zoe@example.org", "Zoë"))

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news2026._domainkey.acme-widgets.com."
        return record["value"].encode()

    assert dkim.verify(out.data, dnsfunc=dnsfunc)
    assert records["SPF"]["name"] == "bounces.acme-widgets.com"
    assert records["SPF"]["value"].startswith("v=spf1 ip4:127.0.0.1")
    assert records["DMARC"]["name"] == "_dmarc.acme-widgets.com"
    assert records["DMARC"]["value"].startswith("v=DMARC1; p=")


def test_dns_record_of_another_key_does_not_verify(good_settings, tmp_path):
    """The check above could not pass with a record made from some other key."""
    other = tmp_path / "other.pem"
    _write_key(other)
    out = build_message(subject="Hello", html="<p>h</p>", text="t\n",
                        recipient=Recipient(3, "zoe@example.org", "Zoë"))
    settings.dkim_private_key_path = other
    result = CliRunner().invoke(app, ["dns", "--json"])
    value = next(r["value"] for r in json.loads(result.output) if r["kind"] == "DKIM")
    assert not dkim.verify(out.data, dnsfunc=lambda name, timeout=5: value.encode())


def test_dns_zone_lines_split_long_values():
    from newsletter.preflight.dns import Record

    line = Record("DKIM", "s._domainkey.a.com", "v=DKIM1; k=rsa; p=" + "A" * 400).zone_line()
    assert all(len(part) <= 255 for part in re.findall(r'"([^"]*)"', line))
    assert "".join(re.findall(r'"([^"]*)"', line)) == "v=DKIM1; k=rsa; p=" + "A" * 400


# --- production processes refuse example settings -------------------------------------------


@pytest.mark.parametrize("name", ["release", "web", "worker"])
def test_production_processes_refuse_to_start_with_example_settings(tmp_path, name):
    env = procfile_env(tmp_path, ENVIRONMENT="production", SECRET_KEY=TEST_SECRET)
    result = run_process(name, env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 78, output[-3000:]
    for setting in ("BASE_URL", "MAIL_FROM_ADDRESS", "POSTAL_ADDRESS", "SMTP_HOST"):
        assert setting in output
    assert "Traceback" not in output


def test_a_worker_with_a_dkim_key_but_no_domain_does_not_start(tmp_path, _dkim_pem):
    """In every environment: mail is signed, or the worker does not run."""
    env = procfile_env(tmp_path, ENVIRONMENT="development", SECRET_KEY=TEST_SECRET,
                       DKIM_PRIVATE_KEY_PATH=str(_dkim_pem))
    result = run_process("worker", env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 78, output[-3000:]
    assert "DKIM_DOMAIN is not set" in output and "Traceback" not in output


@pytest.mark.slow
def test_the_procfile_web_starts_in_production_with_good_settings(tmp_path, smtp_server,
                                                                   database_url, redis_url):
    import httpx

    from tests.test_procfile import _serve, _stop

    good = {name.upper(): str(value) for name, value in GOOD.items()
            if name not in ("dkim_domain", "dkim_selector")}
    env = procfile_env(tmp_path, ENVIRONMENT="production", DATABASE_URL=database_url,
                       REDIS_URL=redis_url, SMTP_HOST="127.0.0.1",
                       SMTP_PORT=str(smtp_server.port), **good)
    proc, url = _serve(env, tmp_path, tmp_path / "web.log")
    try:
        assert url, (tmp_path / "web.log").read_text()
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        _stop(proc)
