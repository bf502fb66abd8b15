"""The digest as readers and mailbox providers see it: every seed issue for twenty
varied readers stays unclipped by Gmail, passes SpamAssassin, and reads well in a
real Chromium at phone and desktop widths, even with <style> stripped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from newsletter.message import MessageFactory
from newsletter.render import Recipient
from tests.fixtures.emails import READERS, emails, ingest_seeds

GMAIL_CLIP_BYTES = 102 * 1024
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots" / "email"


def test_every_email_of_every_seed_issue_stays_under_gmails_clip(session) -> None:
    issues = ingest_seeds(session)
    sizes = []
    for issue, reader, composition, digest, html, text in emails(issues):
        size = len(html.encode("utf-8"))
        assert size < GMAIL_CLIP_BYTES, (issue.id, reader.name, size)
        sizes.append(size)
        # Each email has exactly the stories composed for it, each once as a heading.
        assert len(re.findall(r"<h2 ", html)) == len(composition.items)
    assert len(sizes) >= 5 * len(READERS) - 25  # "only my topics" readers may get nothing
    assert max(sizes) < GMAIL_CLIP_BYTES / 2  # excerpts, not whole articles


def test_whole_messages_stay_under_the_clip_too(session) -> None:
    issues = ingest_seeds(session)
    for issue, reader, _c, digest, _h, _t in emails(issues):
        data = MessageFactory(digest=digest, issue_id=issue.id).build(
            Recipient(7, "reader@example.org", reader.name)).data
        assert len(data) < GMAIL_CLIP_BYTES, (issue.id, reader.name, len(data))


def _spam_score(message: bytes) -> float:
    report = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True,
                            timeout=120, check=False).stdout.decode("utf-8", "replace")
    match = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", report, re.M)
    assert match, report[:2000]
    return float(match.group(1))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("spamassassin") is None,
                    reason="spamassassin is missing (apt-get install -y spamassassin)")
def test_spamassassin_local_score_stays_under_two(session, monkeypatch) -> None:
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "base_url", "https://news.roundup.example")
    issues = ingest_seeds(session)
    # One email per layout: a page scrape, a compact digest, a single interview.
    picked = {}
    for issue, reader, _c, digest, _h, _t in emails(issues):
        if reader.topics and issue.id not in picked:
            picked[issue.id] = MessageFactory(digest=digest, issue_id=issue.id).build(
                Recipient(7, "ana@example.org", reader.name)).data
    for issue_id in sorted(picked)[::2]:
        score = _spam_score(picked[issue_id])
        assert score < 2.0, (issue_id, score)


# --- in a real browser -----------------------------------------------------------------

READERS_TO_LOOK_AT = {"", "Ana Lima", "Bo", "Ines"}  # nobody, a match, only-mine, no match


def _measure(page: Any) -> dict[str, float]:
    return page.evaluate("""() => {
        const h = document.querySelector('h2');
        return {headline: h.getBoundingClientRect().top + window.scrollY,
                scroll: document.documentElement.scrollWidth, width: window.innerWidth};
    }""")


@pytest.mark.browser
@pytest.mark.slow
def test_first_story_is_near_the_top_and_nothing_scrolls_sideways(session, browser_page) -> None:
    """At 375 and 600 px, with and without <style>: the first headline is in the first
    600 px, nothing is wider than the screen, and every story link is a real link."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    issues = ingest_seeds(session)
    page = browser_page
    looked = 0
    for issue, reader, composition, _d, html, _t in emails(issues):
        if reader.name not in READERS_TO_LOOK_AT:
            continue
        looked += 1
        for width in (375, 600):
            page.set_viewport_size({"width": width, "height": 900})
            page.set_content(html)
            for styled in (True, False):
                if not styled:
                    page.evaluate("document.querySelectorAll('style').forEach(s => s.remove())")
                box = _measure(page)
                where = (issue.id, reader.name or "no name", width, styled)
                assert box["headline"] <= 600, (where, box)
                assert box["scroll"] <= box["width"], (where, box)
                if issue.id == 1 and reader.name == "Ana Lima":
                    page.screenshot(path=str(SHOTS / f"seed-{width}-{styled}.png"),
                                    full_page=True)
            # Headline and "Read the full story" of every story go through /r/.
            links = page.eval_on_selector_all("h2 a", "els => els.map(e => e.href)")
            assert len(links) == len(composition.items)
            assert all("/r/" in link for link in links)
    assert looked >= 15
