"""Due times per reader's zone across DST, and the send forecast."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.models import Delivery
from newsletter.scheduling import due_times, first_due, forecast, local_instant

NINE = time(9, 0)


def test_nine_in_london_and_new_york_across_the_march_changes() -> None:
    # 2027: the US moves its clocks on 14 March, the UK on 28 March.
    london, new_york = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")
    assert local_instant(date(2027, 3, 13), NINE, new_york) == datetime(2027, 3, 13, 14, tzinfo=UTC)
    assert local_instant(date(2027, 3, 15), NINE, new_york) == datetime(2027, 3, 15, 13, tzinfo=UTC)
    assert local_instant(date(2027, 3, 27), NINE, london) == datetime(2027, 3, 27, 9, tzinfo=UTC)
    assert local_instant(date(2027, 3, 29), NINE, london) == datetime(2027, 3, 29, 8, tzinfo=UTC)
    for day, zone in ((date(2027, 3, 14), new_york), (date(2027, 3, 28), london)):
        instant = local_instant(day, NINE, zone)
        assert instant.astimezone(zone).time() == NINE  # 09:00 on the change day itself


def test_a_wall_time_in_the_spring_gap_moves_forward() -> None:
    london = ZoneInfo("Europe/London")
    instant = local_instant(date(2027, 3, 28), time(1, 30), london)
    assert instant.astimezone(london).time() == time(2, 30)


def test_due_times_never_lie_in_the_past_and_unknown_zones_use_the_default() -> None:
    now = datetime(2027, 3, 15, 12, tzinfo=UTC)
    due = due_times(day=date(2027, 3, 15), at=NINE, zones=["Asia/Tokyo", "America/New_York",
                                                           "Not/AZone"],
                    default_zone="Europe/London", now=now)
    assert due["Asia/Tokyo"] == now  # 09:00 in Tokyo was 00:00 UTC: already past, send now
    assert due["America/New_York"] == datetime(2027, 3, 15, 13, tzinfo=UTC)
    assert due["Not/AZone"] == now  # London 09:00 GMT = 09:00 UTC, past


def test_the_send_starts_with_the_earliest_zone() -> None:
    start = first_due(day=date(2027, 3, 15), at=NINE, zones=["Europe/London", "Pacific/Auckland"],
                      default_zone="UTC")
    assert start == datetime(2027, 3, 14, 20, tzinfo=UTC)  # 09:00 NZDT


def test_forecast_counts_recipients_and_versions(session, make_issue, make_subscriber) -> None:
    issue = make_issue(items=[{"headline": "A", "topics": ["logistics"]},
                              {"headline": "B", "topics": ["fintech"]}])
    make_subscriber(topics=["logistics"])
    make_subscriber(topics=["logistics"])
    make_subscriber(topics=["fintech"])
    make_subscriber(topics=["travel"], only_my_topics=True)  # gets nothing
    make_subscriber(confirmed=False)  # not a recipient
    result = forecast(session=session, issue_id=issue.id)
    assert (result.recipients, result.versions, result.get_nothing) == (3, 2, 1)
    assert not result.measured and result.duration_text == "under a minute"


def test_forecast_uses_the_rate_measured_on_earlier_sends(session, make_issue,
                                                         make_subscriber) -> None:
    old = make_issue(items=["A"], status="sent")
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    for n in range(200):
        sub = make_subscriber()
        session.add(Delivery(issue_id=old.id, subscriber_id=sub.id, status="sent",
                             sent_at=start + timedelta(seconds=n)))
    session.commit()
    new = make_issue(items=["B"])
    result = forecast(session=session, issue_id=new.id)
    assert result.measured and 0.9 < result.rate < 1.1  # 200 messages over 199 s
    assert result.recipients == 200 and result.duration_text == "about 3 minutes"
