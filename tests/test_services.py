"""Embedded services: a private Redis, the mail catcher, a worker subprocess."""

from __future__ import annotations

import os
import smtplib
from pathlib import Path

import pytest
import redis

from newsletter import services
from newsletter.mailcatcher import mail_catcher
from newsletter.settings import settings


def test_redis_service_starts_a_private_server_when_none_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "redis_url", f"redis://127.0.0.1:{services.free_port()}/0")
    monkeypatch.delenv("REDIS_URL", raising=False)

    with services.redis_service() as url:
        assert redis.Redis.from_url(url).ping()
        assert settings.redis_url == url == os.environ["REDIS_URL"]
        assert not url.startswith("redis://127.0.0.1:6379")

    assert not services.redis_answers(url)
    assert "REDIS_URL" not in os.environ


def test_redis_service_uses_redis_url_when_it_answers(redis_url: str) -> None:
    with services.redis_service() as url:
        assert url == redis_url


def test_private_redis_keeps_nothing_on_disk() -> None:
    with services.private_redis() as url:
        config = redis.Redis.from_url(url, decode_responses=True).config_get("save")
        appendonly = redis.Redis.from_url(url, decode_responses=True).config_get("appendonly")
    assert config["save"] == ""
    assert appendonly["appendonly"] == "no"


def test_mail_catcher_stores_each_message_as_an_eml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "smtp_host", "")
    with mail_catcher(tmp_path / "mail") as (host, port):
        assert (settings.smtp_host, settings.smtp_port) == (host, port)
        with smtplib.SMTP(host, port) as smtp:
            for n in range(2):
                smtp.sendmail("a@example.org", ["b@example.org"],
                              f"Subject: hello {n}\r\n\r\nbody {n}\r\n".encode())
    files = sorted((tmp_path / "mail").iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    assert b"Subject: hello 0" in b"".join(f.read_bytes() for f in files)
    assert settings.smtp_host == ""


def test_worker_process_is_gone_after_the_block(
    app_settings: object, redis_url: str, tmp_path: Path
) -> None:
    with services.worker_process(concurrency=1, log_path=tmp_path / "w.log") as proc:
        assert proc.poll() is None
    assert proc.poll() is not None
