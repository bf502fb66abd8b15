"""The composer picks and orders items per subscriber, with a reason for each."""

from __future__ import annotations

from datetime import date

from newsletter.composer import IssueContent, ItemContent, compose, load_issue

NAMES = {"luxury": "Luxury", "logistics": "Logistics", "europe": "Europe", "africa": "Africa"}


def issue_of(*items: ItemContent) -> IssueContent:
    return IssueContent(id=1, title="T", intro="", issue_date=date(2026, 1, 5), items=items,
                        topic_names=NAMES, version="v1")


def item(id: int, topics: tuple[str, ...] = (), pinned: bool = False) -> ItemContent:
    return ItemContent(id=id, position=id, headline=f"H{id}", body="b", topics=topics,
                       pinned=pinned)


def ids(composition) -> list[int]:
    return [c.item.id for c in composition.items]


def test_matching_items_come_first_then_the_rest_in_editor_order():
    issue = issue_of(item(1), item(2, ("luxury",)), item(3), item(4, ("logistics",)))
    assert ids(compose(issue, followed=["logistics", "luxury"])) == [2, 4, 1, 3]


def test_more_matches_rank_higher_than_editor_order():
    issue = issue_of(item(1, ("luxury",)), item(2, ("luxury", "europe")))
    assert ids(compose(issue, followed=["luxury", "europe"])) == [2, 1]


def test_pinned_items_lead_even_without_a_match():
    issue = issue_of(item(1, ("luxury",)), item(2, pinned=True))
    comp = compose(issue, followed=["luxury"])
    assert ids(comp) == [2, 1]
    assert comp.items[0].reason == "Editor's pick"


def test_each_item_says_why_it_was_chosen():
    issue = issue_of(item(1, ("luxury", "europe")), item(2))
    comp = compose(issue, followed=["luxury", "europe"])
    assert [c.reason for c in comp.items] == ["You follow Luxury and Europe", "Also this week"]


def test_following_nothing_gives_the_editors_order():
    issue = issue_of(item(1, ("africa",)), item(2), item(3, ("luxury",)))
    comp = compose(issue, followed=[])
    assert ids(comp) == [1, 2, 3]
    assert {c.why for c in comp.items} == {"editor"}


def test_only_my_topics_without_a_match_means_no_email():
    issue = issue_of(item(1, ("africa",)), item(2))
    assert compose(issue, followed=["luxury"], only_my_topics=True) is None


def test_only_my_topics_drops_the_rest_of_the_week():
    issue = issue_of(item(1, ("africa",)), item(2), item(3, ("luxury",)))
    assert ids(compose(issue, followed=["luxury"], only_my_topics=True)) == [3]


def test_max_items_caps_the_also_this_week_tail():
    issue = issue_of(item(1), item(2), item(3, ("luxury",)), item(4))
    assert ids(compose(issue, followed=["luxury"], max_items=2)) == [3, 1]


def test_same_choices_share_a_composition_key_and_different_ones_do_not():
    issue = issue_of(item(1, ("luxury",)), item(2, ("africa",)))
    a = compose(issue, followed=["luxury"])
    b = compose(issue, followed=["luxury", "europe"])  # europe matches nothing: same email
    c = compose(issue, followed=["africa"])
    assert a.key == b.key
    assert a.key != c.key


def test_composition_is_deterministic():
    issue = issue_of(*(item(i, ("luxury",) if i % 2 else ()) for i in range(1, 9)))
    runs = {tuple(ids(compose(issue, followed=["luxury"]))) for _ in range(5)}
    assert len(runs) == 1


def test_load_issue_reads_visible_items_in_editor_order_with_topics(session, make_issue):
    issue = make_issue(items=[
        {"headline": "Second", "position": 1, "topics": ["logistics"]},
        {"headline": "Hidden", "hidden": True},
        {"headline": "First", "position": 0, "topics": ["luxury-fashion", "europe"]},
    ])
    content = load_issue(session=session, issue_id=issue.id)
    assert [i.headline for i in content.items] == ["First", "Second"]
    assert set(content.items[0].topics) == {"luxury-fashion", "europe"}
    assert content.topic_names["logistics"]


def test_learned_topics_lead_the_rest_of_the_week_with_their_reason():
    issue = issue_of(item(1), item(2, ("logistics",)), item(3, ("luxury",)), item(4, ("europe",)))
    comp = compose(issue, followed=["luxury"], learned=["europe", "logistics"])
    assert ids(comp) == [3, 4, 2, 1]
    assert [c.reason for c in comp.items] == [
        "You follow Luxury", "You often read Europe", "You often read Logistics",
        "Also this week"]
    assert comp.items[1].why == "editor" and comp.items[1].learned == ("europe",)


def test_learned_topic_that_is_also_followed_changes_nothing():
    issue = issue_of(item(1), item(2, ("luxury",)))
    plain = compose(issue, followed=["luxury"])
    assert compose(issue, followed=["luxury"], learned=["luxury"]).key == plain.key


def test_learned_interest_never_overtakes_pinned_or_followed_items():
    issue = issue_of(item(1, ("logistics",)), item(2, pinned=True), item(3, ("luxury",)))
    comp = compose(issue, followed=["luxury"], learned=["logistics"])
    assert ids(comp) == [2, 3, 1]


def test_learned_items_survive_the_max_items_cap():
    issue = issue_of(item(1), item(2), item(3, ("logistics",)))
    assert ids(compose(issue, followed=[], learned=["logistics"], max_items=1)) == [3]


def test_no_learned_interest_gives_the_same_key_as_before():
    issue = issue_of(item(1, ("africa",)), item(2))
    assert compose(issue, followed=[], learned=[]).key == compose(issue, followed=[]).key
    # a learned topic this issue doesn't carry renders the same email too
    assert compose(issue, followed=[], learned=["travel"]).key == compose(issue, followed=[]).key


def test_a_pinned_story_the_reader_follows_says_both() -> None:
    issue = issue_of(item(1), item(2, ("logistics",), pinned=True))
    chosen = compose(issue, followed=("logistics",))
    assert chosen is not None
    first = chosen.items[0]
    assert first.why == "pinned" and first.reason == "Editor's pick · You follow Logistics"
    plain = compose(issue, followed=())
    assert plain is not None and plain.items[0].reason == "Editor's pick"
