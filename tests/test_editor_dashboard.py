"""Dashboard figures: whole-number axes, sends dated by when they went out, additions
counted apart from sign-ups, and charts legible on a phone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from newsletter.charts import bar_chart, column_chart
from newsletter.models import Delivery, Issue, IssueStatus
from newsletter.subscribers import import_csv


def test_axes_never_show_fractions() -> None:
    svg = str(column_chart(title="t", labels=["a", "b"], series={"x": [1, 0]}))
    ticks = re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', svg)
    assert ticks == ["0", "1"]
    svg = str(column_chart(title="t", labels=["a"], series={"x": [7]}))
    assert re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', svg) == ["0", "5", "10"]


def test_narrow_charts_write_fewer_axis_labels() -> None:
    labels = [f"w{i}" for i in range(12)]
    svg = str(column_chart(title="t", labels=labels, series={"x": [1] * 12}, width=360,
                           max_labels=4))
    written = re.findall(r'text-anchor="middle"[^>]*>(w\d+)</text>', svg)
    assert written == ["w0", "w3", "w6", "w9"]


def test_bar_chart_labels_fit_a_narrow_chart() -> None:
    svg = str(bar_chart(title="t", labels=["Livestreaming & Entertainment"], values=[3],
                        width=360))
    assert "Livestreaming &amp; Entertainment" not in re.sub(r"<title>.*?</title>", "", svg)


def test_imports_are_counted_apart_from_form_sign_ups(editor_client, session, tmp_path,
                                                      make_subscriber) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\n" + "".join(f"imp{i}@example.org\n" for i in range(6)))
    import_csv(session=session, path=path, confirmed=True)
    session.commit()
    from newsletter.subscribers import add_subscriber

    add_subscriber(session=session, email="form@example.org", source="form")
    session.commit()
    page = editor_client.get("/editor").text
    growth = re.search(r'id="chart-growth".*?</section>', page, re.S).group(0)
    assert re.search(r"<title>Sign-ups, [^<]*: 1</title>", growth)
    assert re.search(r"<title>Added \(import, API, editors\), [^<]*: 6</title>", growth)
    # Imported as confirmed: not counted a second time as confirmations.
    assert not re.search(r"<title>Confirmations, [^<]*: [1-9]", growth)


def test_deliveries_are_labelled_by_send_date(editor_client, session, make_subscriber) -> None:
    issue = Issue(title="Old roundup", issue_date=date(2026, 1, 5), status=IssueStatus.sent,
                  send_started_at=datetime(2026, 3, 2, 9, tzinfo=UTC))
    session.add(issue)
    session.commit()
    session.add(Delivery(issue_id=issue.id, subscriber_id=make_subscriber().id, status="sent"))
    session.commit()
    delivery = re.search(r'id="chart-delivery".*?</section>',
                         editor_client.get("/editor").text, re.S).group(0)
    assert f"#{issue.id} 02 Mar" in delivery and "05 Jan" not in delivery
