"""`newsletter demo`, the README's main command, run as a user runs it."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.demo import DEMO_PEOPLE

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    data_dir = tmp_path_factory.mktemp("demo") / "var"
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SMTP_HOST", "SMTP_PORT", "DATA_DIR"}}
    # As on a fresh machine: no Redis URL and no SMTP relay, so the command must
    # start its own Redis and mail catcher.
    env.update({"REDIS_URL": "", "SMTP_HOST": "", "COLUMNS": "200"})
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "demo", "--data-dir", str(data_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    return result, data_dir


def test_demo_exits_cleanly(demo_run):
    result, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_mails_every_confirmed_subscriber_with_a_match_exactly_once(demo_run):
    result, data_dir = demo_run
    recipients = [
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in (data_dir / "mail").glob("*.eml")
    ]
    addresses = sorted(r.split("<")[-1].rstrip(">") for r in recipients)
    assert len(addresses) == len(set(addresses)), "someone got the issue twice"
    pending = {a for a, _, _, _, confirmed in DEMO_PEOPLE if not confirmed}
    assert not pending & set(addresses), "a pending subscriber got a digest"
    assert len(addresses) >= 8


def test_demo_report_shows_order_reasons_and_where_files_are(demo_run):
    result, data_dir = demo_run
    out = result.stdout
    assert "You follow" in out
    assert "only my topics" in out  # at least one subscriber was skipped, and says why
    assert str(data_dir / "mail") in out.replace("\n", "")
    assert any((data_dir / "html").glob("*.html"))


def test_demo_html_follows_the_subscribers_topics(demo_run):
    _, data_dir = demo_run
    html = (data_dir / "html" / "chen@example.org.html").read_text(encoding="utf-8")
    # Chen follows logistics: the Daraz/Cainiao warehouses story leads the digest.
    assert "Picked for you" in html and ">Logistics</span>" in html  # the email's section, chip
    assert html.index("Daraz, Cainiao Build") < html.index("Hermès Q3 Sales Beat")


def test_demo_refuses_to_wipe_a_directory_it_did_not_create(tmp_path):
    from newsletter.demo import DemoError, run_demo

    live = tmp_path / "var"
    live.mkdir()
    (live / "newsletter.db").write_bytes(b"precious")
    with pytest.raises(DemoError, match="did not write"):
        run_demo(data_dir=live)
    assert (live / "newsletter.db").read_bytes() == b"precious"
