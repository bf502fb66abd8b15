"""`newsletter preview`: the digest one subscriber or a set of topics would get."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.fixtures.mail import assert_email

runner = CliRunner()

ITEMS = [
    {"headline": "Hermès beats forecasts", "topics": ["luxury-fashion"],
     "link_text": "Read more", "link_url": "https://example.com/hermes"},
    {"headline": "Cainiao opens smart warehouses", "topics": ["logistics"]},
    {"headline": "Alibaba Cloud expands", "topics": ["cloud-ai"]},
]


@pytest.fixture
def issue(make_issue):
    return make_issue(title="Weekly roundup 42", items=ITEMS)


def _order(output: str, headlines: list[str]) -> list[int]:
    return [output.index(h) for h in headlines]


def test_preview_html_for_a_subscriber_puts_their_topics_first(issue, make_subscriber) -> None:
    make_subscriber(email="ana@example.org", name="Ana Lima", topics=["logistics"])
    result = runner.invoke(app, ["preview", str(issue.id), "--subscriber", "Ana@Example.org"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("<!doctype html>")
    assert "Hi Ana," in result.output
    assert "Picked for you" in result.output
    order = _order(result.output, ["Cainiao opens", "Hermès beats", "Alibaba Cloud"])
    assert order == sorted(order)


def test_preview_text_format(issue, make_subscriber) -> None:
    make_subscriber(email="ana@example.org", name="Ana", topics=["cloud-ai"])
    result = runner.invoke(
        app, ["preview", str(issue.id), "-s", "ana@example.org", "--format", "text"]
    )
    assert result.exit_code == 0, result.output
    assert "<html" not in result.output
    assert "Read more: http://localhost:8000/r/" in result.output  # its own link, tracked
    assert result.output.index("Alibaba Cloud") < result.output.index("Hermès beats")


def test_preview_eml_to_a_file_is_a_complete_message(issue, make_subscriber, tmp_path) -> None:
    make_subscriber(email="ana@example.org", name="Ana", topics=["logistics"])
    out = tmp_path / "preview.eml"
    result = runner.invoke(
        app, ["preview", str(issue.id), "-s", "ana@example.org", "-f", "eml", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    msg = assert_email(out.read_bytes(), to="ana@example.org", subject_contains="Weekly roundup 42",
                       both_contain=("Cainiao opens smart warehouses", "Hi Ana,"))
    assert "List-Unsubscribe" in msg


def test_preview_as_a_set_of_topics(issue, tmp_path: Path) -> None:
    out = tmp_path / "p.txt"
    result = runner.invoke(app, ["preview", str(issue.id), "--topics", "cloud-ai,logistics",
                                 "-f", "text", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "[Cloud & AI]" in text and "[Logistics]" in text and "PICKED FOR YOU" in text
    assert text.index("Cainiao opens") < text.index("Hermès beats")


def test_preview_with_unknown_topic_names_it(issue) -> None:
    result = runner.invoke(app, ["preview", str(issue.id), "--topics", "knitting"])
    assert result.exit_code == 1
    assert "knitting" in result.output


def test_subscriber_who_would_get_nothing_is_told_so(issue, make_subscriber) -> None:
    make_subscriber(email="ana@example.org", topics=["fintech"], only_my_topics=True)
    result = runner.invoke(app, ["preview", str(issue.id), "-s", "ana@example.org"])
    assert result.exit_code == 0
    assert "would get nothing" in result.output
    assert "<html" not in result.output


def test_unknown_subscriber_is_an_error(issue) -> None:
    result = runner.invoke(app, ["preview", str(issue.id), "-s", "nobody@example.org"])
    assert result.exit_code == 1
    assert "nobody@example.org" in result.output


def test_unknown_issue_is_an_error(session) -> None:
    result = runner.invoke(app, ["preview", "999", "--topics", "logistics"])
    assert result.exit_code == 1
    assert "999" in result.output
