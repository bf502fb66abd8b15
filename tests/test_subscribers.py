"""Subscribers: validation, states, events, CSV import and the CLI."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.models import Event, Subscriber, SubscriberStatus, Suppression
from newsletter.subscribers import (
    SubscriberError,
    add_subscriber,
    confirm,
    followed_topics,
    import_csv,
    mark_bounced,
    normalise_email,
    resubscribe,
    set_topics,
    unsubscribe,
    update_preferences,
)

runner = CliRunner()


def test_email_is_normalised_to_one_form():
    assert normalise_email("  Ana.Lima@Example.ORG ") == "ana.lima@example.org"


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@b", "x@" + "d" * 260 + ".com",
                                 "a b@example.org", "ana@example.org\r\nBcc: x@evil.test",
                                 "josé@example.org", "ÿþ@example.org",
                                 "a" * 65 + "@example.org"])
def test_invalid_addresses_are_rejected_with_a_message(bad):
    with pytest.raises(SubscriberError) as exc:
        normalise_email(bad)
    assert str(exc.value)


def test_internationalised_domains_are_stored_as_punycode():
    # Every relay can carry the ASCII form; SMTPUTF8 is not assumed.
    assert normalise_email("Ana@Exämple.org") == "ana@xn--exmple-cua.org"


def test_the_same_person_cannot_subscribe_twice_in_another_case(session):
    add_subscriber(session=session, email="ana@example.org")
    with pytest.raises(SubscriberError, match="already"):
        add_subscriber(session=session, email="ANA@example.org")


def test_unknown_topics_are_named_in_the_error(session):
    with pytest.raises(SubscriberError, match="knitting") as exc:
        add_subscriber(session=session, email="a@example.org", topics=["knitting", "logistics"])
    assert exc.value.field == "topics"


def test_names_with_line_breaks_are_refused(session):
    with pytest.raises(SubscriberError) as exc:
        add_subscriber(session=session, email="a@example.org", name="Eve\r\nBcc: x@evil.test")
    assert exc.value.field == "name"


def test_sign_up_and_confirmation_are_logged_as_events(session):
    sub = add_subscriber(session=session, email="a@example.org", topics=["logistics"],
                         source="form")
    assert sub.status == SubscriberStatus.pending
    assert confirm(session=session, subscriber_id=sub.id, source="form")
    assert not confirm(session=session, subscriber_id=sub.id, source="form")  # twice: once
    session.commit()
    kinds = [e.kind for e in session.exec(select(Event).order_by(Event.id)).all()]
    assert kinds == ["signed_up", "confirmed"]


def test_topic_changes_are_logged_with_before_and_after(session):
    sub = add_subscriber(session=session, email="a@example.org", topics=["logistics"])
    set_topics(session=session, subscriber_id=sub.id, slugs=["europe", "africa"], source="manage")
    session.commit()
    assert sorted(followed_topics(session=session, subscriber_id=sub.id)) == ["africa", "europe"]
    event = session.exec(select(Event).where(Event.kind == "topics_changed")).one()
    assert json.loads(event.data)["before"] == ["logistics"]


def test_invalid_preferences_change_nothing(session):
    sub = add_subscriber(session=session, email="a@example.org", name="Ana", topics=["europe"])
    session.commit()
    with pytest.raises(SubscriberError):
        update_preferences(session=session, subscriber_id=sub.id, source="manage", name="Bo",
                           topics=["europe", "nope"])
    session.rollback()
    fresh = session.get(Subscriber, sub.id)
    assert fresh.name == "Ana"
    assert followed_topics(session=session, subscriber_id=sub.id) == ["europe"]


def test_resubscribing_needs_confirmation_again(session):
    sub = add_subscriber(session=session, email="a@example.org", confirmed=True)
    assert unsubscribe(session=session, subscriber_id=sub.id, source="link")
    resubscribe(session=session, subscriber_id=sub.id, source="form")
    session.commit()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.pending


def test_hard_bounce_suppresses_the_address(session):
    sub = add_subscriber(session=session, email="gone@example.org", confirmed=True)
    mark_bounced(session=session, email="gone@example.org", reason="550 5.1.1 no such user")
    session.commit()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.bounced
    assert session.get(Suppression, "gone@example.org") is not None


def test_csv_import_reports_bad_rows_by_line_and_keeps_the_good(session, tmp_path):
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email,name,topics\n"
        "ana@example.org,Ana,luxury-fashion;europe\n"
        "not-an-email,Bad,\n"
        "bo@example.org,Bo,unknown-topic\n"
        "cy@example.org,Cy,\n",
        encoding="utf-8",
    )
    report = import_csv(session=session, path=csv_file, confirmed=True)
    session.commit()
    assert report.added == 2
    assert [line for line, _, _ in report.rejected] == [3, 4]
    emails = session.exec(select(Subscriber.email).order_by(Subscriber.email)).all()
    assert emails == ["ana@example.org", "cy@example.org"]


def test_csv_import_keeps_line_numbers_right_after_a_quoted_multiline_field(session, tmp_path):
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        'email,name\n'
        '"hank@example.org","Hank\nEvil"\n'
        'bad-address,Bo\n',
        encoding="utf-8",
    )
    report = import_csv(session=session, path=csv_file)
    # The multi-line name is refused (names can't hold line breaks), with its own line,
    # and the next row is reported on the line it really starts on.
    assert [line for line, _, _ in report.rejected] == [2, 4]
    assert report.added == 0


def test_cli_add_then_list_as_json(app_settings):
    result = runner.invoke(app, ["subscribers", "add", "Ana@Example.org", "--topics",
                                 "logistics,europe", "--confirmed"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["subscribers", "list", "--json"])
    rows = json.loads(listed.stdout)
    assert rows[0]["email"] == "ana@example.org"
    assert rows[0]["status"] == "confirmed"
    assert rows[0]["topics"] == ["europe", "logistics"]


def test_cli_add_rejects_an_invalid_address_with_exit_code_1(app_settings):
    result = runner.invoke(app, ["subscribers", "add", "nope"])
    assert result.exit_code == 1
    assert "valid email" in result.output


def test_cli_import_prints_rejected_rows(app_settings, tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("email\nok@example.org\nbroken\n", encoding="utf-8")
    result = runner.invoke(app, ["subscribers", "import", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "Imported 1" in result.output
    assert "broken" in result.output


def test_cli_confirm_confirms_a_pending_subscriber_and_says_so(app_settings):
    assert runner.invoke(app, ["subscribers", "add", "bo@example.org"]).exit_code == 0
    result = runner.invoke(app, ["subscribers", "confirm", "Bo@Example.org"])
    assert result.exit_code == 0, result.output
    assert "Confirmed bo@example.org" in result.output
    rows = json.loads(runner.invoke(app, ["subscribers", "list", "--json"]).stdout)
    assert rows[0]["status"] == "confirmed"


def test_cli_confirm_of_an_unknown_address_exits_1(app_settings):
    result = runner.invoke(app, ["subscribers", "confirm", "nobody@example.org"])
    assert result.exit_code == 1
    assert "nobody@example.org" in result.output


def test_cli_import_reports_as_json(app_settings, tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("email\nok@example.org\nbroken\n", encoding="utf-8")
    result = runner.invoke(app, ["subscribers", "import", str(csv_file), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 1
    assert report["rejected"][0]["line"] == 3
