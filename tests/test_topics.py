"""The taxonomy file, tagging items, editing tags and counting topics."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter.ingest import parse_document
from newsletter.models import Issue, Item, ItemTopic, Topic, utcnow
from newsletter.topics import (
    TaxonomyError,
    TopicSpec,
    load_taxonomy,
    set_item_topics,
    split_tag_line,
    suggest_topics,
    sync_topics,
    topic_counts,
)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
TAXONOMY = load_taxonomy()


def seed_topics() -> dict[str, list[str]]:
    """Headline -> suggested topics for every seed item."""
    out: dict[str, list[str]] = {}
    for path in sorted(SEEDS.glob("*.txt")):
        parsed = parse_document(path.read_text(encoding="utf-8"), source_name=str(path))
        for item in parsed.items:
            out[item.headline] = suggest_topics(
                text="\n\n".join([item.body, item.link_text]),
                headline=item.headline,
                tags=parsed.tags,
                taxonomy=TAXONOMY,
            )
    return out


SEED_TOPICS = seed_topics()


def topics_of(prefix: str) -> list[str]:
    return next(v for k, v in SEED_TOPICS.items() if k.startswith(prefix))


# --- The taxonomy file ------------------------------------------------------------


def test_shipped_taxonomy_has_a_dozen_described_topics() -> None:
    assert 12 <= len(TAXONOMY) <= 16
    assert all(t.name and t.description.endswith(".") and t.keywords for t in TAXONOMY)
    assert {"luxury-fashion", "logistics", "cloud-ai", "fintech", "africa", "europe"} <= {
        t.slug for t in TAXONOMY
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '[[topic]]\nslug = "a"\nname = "A"\ndescription = "About A."\nkeywords = ["alpha"]\n'


def test_invalid_toml_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[[topic]]\nslug = "b\n')
    with pytest.raises(TaxonomyError, match=rf"^{path}:8: invalid TOML"):
        load_taxonomy(path)


def test_missing_field_error_points_at_its_topic_table(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[[topic]]\nslug = "b"\nname = "B"\nkeywords = ["beta"]\n')
    with pytest.raises(TaxonomyError, match=rf"^{path}:7: topic is missing 'description'"):
        load_taxonomy(path)


def test_duplicate_slug_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n" + GOOD)
    with pytest.raises(
        TaxonomyError, match=rf"^{path}:7: duplicate slug 'a' \(first defined at line 1\)"
    ):
        load_taxonomy(path)


def test_sync_updates_by_slug_and_deletes_only_unused_topics(
    session: Session, tmp_path: Path, make_subscriber
) -> None:
    make_subscriber(topics=["africa"])
    path = write(tmp_path, GOOD.replace('"a"', '"logistics"').replace('"A"', '"Parcels"'))
    assert sync_topics(session=session, path=path) == 1
    slugs = {t.slug: t.name for t in session.exec(select(Topic)).all()}
    assert slugs == {"logistics": "Parcels", "africa": "Africa"}


# --- Tagging ----------------------------------------------------------------------


def test_every_seed_item_gets_at_least_one_topic() -> None:
    assert [h for h, slugs in SEED_TOPICS.items() if not slugs] == []


@pytest.mark.parametrize(
    ("headline_start", "expected"),
    [
        ("Hermès Q3", {"luxury-fashion"}),
        ("Daraz, Cainiao", {"logistics", "south-southeast-asia"}),
        ("Netpreneur Training", {"africa", "entrepreneurs-education"}),
        ("Alibaba Cloud Soars", {"cloud-ai"}),
        ("ICBC Taps", {"fintech", "livestreaming"}),
        ("Fliggy Fuels", {"travel"}),
        ("Cainiao Reinforces", {"logistics"}),
        ("Lazada Announces", {"south-southeast-asia"}),
        ("How Luxury Brands", {"luxury-fashion", "shopping-festivals"}),
    ],
)
def test_seed_items_get_the_topics_an_editor_would_pick(
    headline_start: str, expected: set[str]
) -> None:
    assert expected <= set(topics_of(headline_start))


def test_seed_items_do_not_get_unrelated_topics() -> None:
    assert "health" not in topics_of("Fliggy Fuels")  # a passing mention of Covid-19
    assert "south-southeast-asia" not in topics_of("Hermès Q3")  # one store in Manila
    assert topics_of("Alibaba Cloud Soars") == ["cloud-ai"]


SPECS = [
    TopicSpec("travel", "Travel", "Trips.", ["travel", "hotel", "airline"]),
    TopicSpec("cloud-ai", "Cloud & AI", "Clouds.", ["cloud", "AI", "data center"]),
    TopicSpec("festivals", "Festivals", "Sales.", ["11.11", "Singles' Day"]),
    TopicSpec("europe", "Europe", "Europe.", ["Europe", "French"]),
]


def test_a_keyword_in_the_headline_weighs_more_than_in_the_body() -> None:
    assert suggest_topics(
        text="Nothing else here.", headline="Hotel Bookings Rise", taxonomy=SPECS
    ) == ["travel"]
    assert (
        suggest_topics(
            text="A hotel opened. Nothing else here.",
            headline="Bookings Rise",
            taxonomy=SPECS[:2] + SPECS[3:],
        )
        == []
    )


def test_two_distinct_body_keywords_are_enough() -> None:
    assert suggest_topics(
        text="The airline opened a hotel and expects more travel.", taxonomy=SPECS
    ) == ["travel"]


def test_keywords_match_whole_words_case_insensitively_including_punctuation() -> None:
    # "AI" inside "said"/"Cainiao" must not count; "11.11" and curly apostrophes must.
    assert (
        suggest_topics(
            text="Cainiao said it said so, said Cainiao again.", headline="", taxonomy=SPECS
        )
        == []
    )
    assert suggest_topics(
        text="Deals for 11.11, or Singles’ Day.", headline="", taxonomy=SPECS
    ) == ["festivals"]


def test_tag_line_tips_a_weak_mention_but_never_tags_alone() -> None:
    weak = "The French brand sold out."
    assert suggest_topics(text=weak, taxonomy=SPECS) == []
    assert suggest_topics(text=weak, tags=["Europe", "Luxury"], taxonomy=SPECS) == ["europe"]
    assert suggest_topics(text="A story about nothing.", tags=["Europe"], taxonomy=SPECS) == []


def test_at_most_three_strongest_topics() -> None:
    text = "travel hotel airline cloud AI data center 11.11 Singles' Day Europe French"
    assert len(suggest_topics(text=text, headline="Travel Cloud 11.11 Europe", taxonomy=SPECS)) == 3


def test_split_tag_line_protects_known_camel_case_words() -> None:
    assert split_tag_line(
        "AliExpressEuropeLivestreamingPodcasts", known=["AliExpress", "Livestreaming"]
    ) == [
        "AliExpress",
        "Europe",
        "Livestreaming",
        "Podcasts",
    ]


# --- Editing tags and counts ------------------------------------------------------


@pytest.fixture
def item(session: Session, make_issue) -> Item:
    """An untagged item whose issue was last updated a day ago."""
    issue = make_issue(items=["H"])
    issue.updated_at = utcnow() - timedelta(days=1)
    session.add(issue)
    session.flush()
    return session.exec(select(Item).where(Item.issue_id == issue.id)).one()


def item_slugs(session: Session, item_id: int) -> set[tuple[str, str]]:
    rows = session.exec(
        select(Topic.slug, ItemTopic.source).join(ItemTopic).where(ItemTopic.item_id == item_id)
    ).all()
    return set(rows)


def test_set_item_topics_replaces_tags_and_bumps_the_issue(session: Session, item: Item) -> None:
    session.add(ItemTopic(item_id=item.id, topic_id=_topic_id(session, "travel"), source="auto"))
    session.flush()
    assert set_item_topics(session=session, item_id=item.id, slugs=["europe", "africa"]) == [
        "europe",
        "africa",
    ]
    assert item_slugs(session, item.id) == {("europe", "editor"), ("africa", "editor")}
    issue = session.get(Issue, item.issue_id)
    assert issue is not None and issue.updated_at > utcnow() - timedelta(minutes=1)


def _topic_id(session: Session, slug: str) -> int:
    topic = session.exec(select(Topic).where(Topic.slug == slug)).one()
    assert topic.id is not None
    return topic.id


def test_set_item_topics_refuses_unknown_slug_and_lists_valid_ones(
    session: Session, item: Item
) -> None:
    set_item_topics(session=session, item_id=item.id, slugs=["travel"])
    with pytest.raises(ValueError, match=r"unknown topic 'nope'; valid topics: africa, cloud-ai"):
        set_item_topics(session=session, item_id=item.id, slugs=["europe", "nope"])
    assert item_slugs(session, item.id) == {("travel", "editor")}


def test_topic_counts_count_items_and_only_confirmed_subscribers(
    session: Session, item: Item, make_subscriber
) -> None:
    set_item_topics(session=session, item_id=item.id, slugs=["travel", "europe"])
    for confirmed in (True, False, True):
        make_subscriber(topics=["travel"], confirmed=confirmed)
    counts = {t.slug: (items, subs) for t, items, subs in topic_counts(session=session)}
    assert counts["travel"] == (1, 2)
    assert counts["europe"] == (1, 0)
    assert counts["africa"] == (0, 0)
