"""A real send orders each reader's "Also this week" by what they keep opening."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from newsletter import delivery
from newsletter.models import Click, Delivery, IssueStatus, utcnow
from tests.fixtures.mail import parse_email
from tests.test_learning import item_ids


def test_a_real_send_puts_learned_topics_first_for_that_reader_only(
        session, make_issue, make_subscriber, any_smtp_server):
    past = make_issue(status=IssueStatus.sent, items=[
        {"headline": f"Old logistics {n}", "topics": ["logistics"]} for n in range(3)])
    learner, plain = make_subscriber(topics=["europe"]), make_subscriber(topics=["europe"])
    for item in item_ids(session, past):
        session.add(Click(subscriber_id=learner.id, issue_id=past.id, item_id=item,
                          at=utcnow() - timedelta(days=3)))
    session.commit()
    week = make_issue(status=IssueStatus.approved, items=[
        {"headline": "Euro story", "topics": ["europe"]}, "Fintech round",
        {"headline": "Port automation", "topics": ["logistics"]}])
    delivery.plan_send(session=session, issue_id=week.id)
    session.commit()
    for batch in sorted({d.batch for d in session.exec(select(Delivery))}):
        delivery.run_batch(session=session, issue_id=week.id, batch=batch)
    texts = {}
    for m in any_smtp_server.messages:
        msg = parse_email(m.data)
        texts[msg["To"]] = msg.get_body(("plain",)).get_content()
    mine = next(t for to, t in texts.items() if learner.email in to)
    theirs = next(t for to, t in texts.items() if plain.email in to)
    assert "You often read Logistics" in mine
    assert mine.index("Port automation") < mine.index("Fintech round")
    assert theirs.index("Fintech round") < theirs.index("Port automation")
