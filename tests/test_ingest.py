"""Ingest: the seed roundups, synthetic documents of each layout, Markdown, errors, the CLI."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import db
from newsletter.cli import app
from newsletter.ingest import (
    IngestError,
    ParsedIssue,
    decode,
    ingest_file,
    ingest_text,
    parse_document,
)
from newsletter.models import Delivery, Issue, Item, ItemTopic, Subscriber, Topic

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
DATA = Path(__file__).resolve().parent / "data" / "ingest"


def seed(prefix: str) -> Path:
    return next(SEEDS.glob(f"{prefix}_*.txt"))


def parse_file(path: Path) -> ParsedIssue:
    return parse_document(path.read_text(encoding="utf-8"), source_name=str(path))


SEED_HEADLINES = {
    "000": [
        "Hermès Q3 Sales Beat Market Forecasts On Strong China Growth",
        "Daraz, Cainiao Build Pakistan’s First Smart Distribution Centers",
        "Netpreneur Training Program Launches Second African Edition",
        "Q&A: Alibaba’s Roland Palmer On Why British Brands Are Launching In China",
        "How Luxury Brands Can Build A Loyal Fan Base During 11.11 Shopping Festival",
        "Hungary’s Nanushka Launches on Alibaba’s Tmall, Opens Shanghai Store",
    ],
    "001": [
        "Alibaba Shares Key Updates During Investor Day Event",
        "AACA Launches SME Advisory Committee",
        "Dunhill Opens Flagship Store on Tmall Luxury Pavilion",
        "Taobao Live Hosts Virtual Tour of Switzerland",
        "AliExpress Celebrates 10th Anniversary with New Retail Pop-up",
        "Alibaba, Emlyon Business School Pen Agreement for Joint Master’s Program",
    ],
    "002": [
        "Alibaba Group Concludes 6.18 Sales Campaign",
        "Alibaba and Coresight Host Webinar for Brands Coping with Covid-19",
        "Cainiao Reinforces Global Logistics Network with New Investments",
        "Lazada Announces New Group CEO",
        "Taobao to Connect Educators with Students",
        "Alibaba Celebrates Olympic Day with Digital Technology",
        "ICBC Taps into Alipay’s Livestreaming Feature",
        "Alibaba.com Boosts Italian Merchants with Online Export Summit",
        "Tmall Introduced Plant-Based Rice Dumplings for Dragon Boat Festival",
    ],
    "003": [
        "Alibaba Leads Economic Recovery with Major Shopping Festivals",
        "Fliggy Fuels Travel and Hospitality Sectors",
        "Ant Financial’s Online Bank Drives Growth for SMEs",
        "Jack Ma Calls for Solidarity to Combat Covid-19",
        "Luohan Academy Covers Coronavirus Solutions in Online Broadcast",
        "Alibaba Cloud Soars to New Heights with VMware Partnership",
        "Decathlon Launches Tmall Super Brand Day Campaign",
        "Richemont, Tmall Luxury Pavilion Bring ‘Watches & Wonders’ to Chinese Consumers",
        "H&M’s Arket Announces Tmall Partnership",
        "Damai and Youku Announce Online Concert Tribute to Medical Workers",
    ],
    "004": ["Alibaba conquering brands"],
}


# --- Seed roundups -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", sorted(SEED_HEADLINES))
def test_seed_headlines_are_found_exactly_and_in_order(prefix: str) -> None:
    parsed = parse_file(seed(prefix))
    assert [i.headline for i in parsed.items] == SEED_HEADLINES[prefix]


@pytest.mark.parametrize("prefix", sorted(SEED_HEADLINES))
def test_every_seed_item_has_body_paragraphs(prefix: str) -> None:
    parsed = parse_file(seed(prefix))
    assert all(item.paragraphs for item in parsed.items)


def test_page_scrape_title_is_first_line_and_intro_skips_furniture() -> None:
    parsed = parse_file(seed("000"))
    assert parsed.title.startswith("Alibaba News Roundup: Hermès Beats Quarterly Expectations")
    intro = parsed.intro.split("\n\n")
    assert len(intro) == 3
    assert intro[0].startswith("This week, global luxury house Hermès")
    assert "Main Content" not in parsed.intro and "Photo credit" not in parsed.intro


def test_link_text_is_kept_on_its_item_not_as_a_paragraph() -> None:
    items = parse_file(seed("000")).items
    assert items[3].link_text == "Read the interview here"
    assert items[4].link_text == "Tune in on Spotify or Apple Podcasts, and read the interview here"
    assert items[5].link_text == "Learn more about Nanushka’s expansion here"
    assert not any(p.split()[-1] == "here" for item in items for p in item.paragraphs)


def test_photo_captions_never_become_paragraphs() -> None:
    texts = [
        p for prefix in ("000", "003") for i in parse_file(seed(prefix)).items for p in i.paragraphs
    ]
    assert not any("Photo credit" in t for t in texts)
    assert not any(t.startswith("Alibaba Group’s mascots gear up") for t in texts)
    assert "Roland Palmer" not in texts and "Alibaba mascots Decathlon" not in texts


def test_site_furniture_after_the_last_item_is_dropped() -> None:
    last = parse_file(seed("003")).items[-1]
    assert last.paragraphs[-1].endswith("fighting against the coronavirus.")
    assert not any("Reuse this content" in p or "Newsletter" in p for p in last.paragraphs)


def test_run_together_tag_line_is_split_into_tags() -> None:
    assert parse_file(seed("000")).tags == [
        "Africa",
        "Africa Netpreneur Prize",
        "Alibaba News Roundup",
        "Daraz",
        "E-Commerce",
        "Europe",
        "Luxury",
        "Rest of World",
    ]
    tags = parse_file(seed("003")).tags
    assert {
        "Covid-19",
        "E-Commerce",
        "H&M",
        "Jack Ma",
        "Livestreaming",
        "Tmall Luxury Pavilion",
        "Travel",
    } <= set(tags)


def test_compact_digest_without_title_gets_one_from_roundup_name_and_headlines() -> None:
    parsed = parse_file(seed("001"))
    assert parsed.title == (
        "Alibaba News Roundup: Alibaba Shares Key Updates During Investor Day Event; "
        "AACA Launches SME Advisory Committee"
    )
    assert parsed.intro.startswith("The Alibaba News Roundup is a weekly digest")
    assert "To receive the latest news" not in parsed.intro


def test_glued_leading_the_is_repaired_in_the_intro() -> None:
    parsed = parse_file(seed("002"))
    assert parsed.intro.startswith("The Alibaba News Roundup is")
    assert parsed.title.startswith("Alibaba News Roundup: Alibaba Group Concludes 6.18")


def test_single_article_becomes_one_feature_item_titled_by_the_document() -> None:
    parsed = parse_file(seed("004"))
    (item,) = parsed.items
    assert (parsed.title, item.kind, item.headline) == (
        "Alibaba conquering brands",
        "feature",
        "Alibaba conquering brands",
    )
    assert item.paragraphs[0].startswith("Decision makers. With more than 1,800 French brands")
    assert "Leave a Comment" not in item.paragraphs


def test_pull_quote_repeating_the_body_is_dropped_from_a_feature() -> None:
    (item,) = parse_file(seed("004")).items
    assert (
        "“We are committed to reducing our carbon footprint by 50% by 2030”" not in item.paragraphs
    )


# --- Synthetic documents: the parser generalises -----------------------------------


# Other roundups in both layouts (tests/data/ingest/): title, then exact headlines.
OTHER_ROUNDUPS: dict[str, tuple[str, list[str]]] = {
    "page_market_week.txt": (
        "Market Week: Coffee Chains Go Digital; Solar Farms Power Warehouses",
        [
            "Coffee Chains Race to Launch Mobile Ordering",
            "Solar Panels Now Power Two Regional Warehouses",
            "Meet the Potter Who Sells to 40 Countries",
        ],
    ),
    "page_harbour_notes.txt": (
        "Harbour Notes: Ferries Return",
        ["Ferries Return to the Northern Islands", "Fishing Quotas Set for the Coming Year"],
    ),
    # BOM, CRLF, a title and headlines ending in "?" or "!", a title-cased pull quote.
    "page_farm_gazette.txt": (
        "Farm Gazette: Harvest Robots Arrive; Will Rain Save the Wheat?",
        [
            "Harvest Robots Arrive at Three Family Farms!",
            "Will Rain Save the Wheat Harvest?",
            "Record Pumpkin Weighs In at 1,247 kg",
            "JCB and AgriTech Launch Joint EV Tractor",
        ],
    ),
    # A zero-width "blank" line, captions with and without their alt text.
    "page_city_arts.txt": (
        "City Arts Weekly: Museum Reopens; Players Win Award",
        [
            "Museum of Modern Craft Reopens After Two-Year Refit",
            "Theatre Company Wins National Award",
            "YouTube Music and iPlayer Team Up for the Proms",
        ],
    ),
    "compact_retail_briefing.txt": (
        "Retail Tech Briefing: Grocer Opens First Checkout-Free Store in Lisbon; "
        "Payments Startup Partners with Regional Bank",
        [
            "Grocer Opens First Checkout-Free Store in Lisbon",
            "Payments Startup Partners with Regional Bank",
            "Warehouse Robots Cut Picking Times in Half",
        ],
    ),
    "compact_city_digest.txt": (
        "City Digest: New Library Opens; Night Buses Extended",
        ["New Central Library Opens Its Doors", "Night Bus Routes Extended to the Suburbs"],
    ),
    # BOM, non-breaking spaces, "!" and "?" headlines, one that looks like a tag line.
    "compact_fintech_weekly.txt": (
        "Fintech Weekly: PayPal Adds WeChat Pay Support for Travellers; "
        "Instant Payments Go Live Across the Eurozone!",
        [
            "PayPal Adds WeChat Pay Support for Travellers",
            "Instant Payments Go Live Across the Eurozone!",
            "Are Buy-Now-Pay-Later Loans Too Easy to Get?",
            "Neobank Reaches Ten Million Customers",
        ],
    ),
}


def other(name: str) -> ParsedIssue:
    return parse_file(DATA / name)


def test_every_other_roundup_is_in_the_table() -> None:
    assert sorted(OTHER_ROUNDUPS) == sorted(p.name for p in DATA.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(OTHER_ROUNDUPS))
def test_other_roundups_give_their_title_and_exact_headlines(name: str) -> None:
    parsed = other(name)
    assert (parsed.title, [i.headline for i in parsed.items]) == OTHER_ROUNDUPS[name]
    assert all(item.paragraphs for item in parsed.items)


def test_other_page_scrape_drops_furniture_and_keeps_intro_tags_and_links() -> None:
    parsed = other("page_market_week.txt")
    assert parsed.intro.count("\n\n") == 1
    assert parsed.items[2].link_text == "Watch the video interview here"
    assert (
        parsed.items[1].paragraphs[-1]
        == "The company says the project will pay for itself within five years."
    )
    assert parsed.tags == [
        "Coffee Chains",
        "Logistics",
        "Solar",
        "Small Business",
        "Sustainability",
    ]


def test_page_scrape_with_crlf_and_caption_and_no_intro() -> None:
    parsed = other("page_harbour_notes.txt")
    assert parsed.intro == ""
    assert parsed.items[0].paragraphs == [
        "After a winter without service, the ferry to the northern islands sails again"
        " from Monday.",
        "Tickets can be booked online.",
    ]
    assert parsed.items[1].link_text == "Read the full decision here"


def test_compact_digests_keep_multi_line_bodies_title_lines_and_links() -> None:
    assert other("compact_retail_briefing.txt").items[1].paragraphs[-1] == (
        "The service starts in September."
    )
    city = other("compact_city_digest.txt")
    assert city.intro == "This is your weekly digest of what changed in the city."
    assert city.items[1].link_text == "Learn more about the new timetable here"


def test_page_scrape_with_bom_crlf_exclamations_questions_and_a_titled_pull_quote() -> None:
    data = (DATA / "page_farm_gazette.txt").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfFarm Gazette") and b"\r\n" in data
    parsed = parse_document(decode(data, source_name="f.txt"), source_name="f.txt")
    # The title ends in "?" and is still the title, so its repeat below is dropped.
    assert parsed.intro.startswith("Welcome to the Farm Gazette")
    assert parsed.intro.count("\n\n") == 1
    robots, rain, pumpkin, tractor = parsed.items
    # The photo and caption between the headline and the story are gone; the quote stays.
    assert robots.paragraphs == [
        "Three family farms in Herefordshire have started using strawberry-picking robots"
        " this season.",
        "“The robots work through the night, so the fruit reaches the shops a day earlier,”"
        " said farmer Ruth Evans.",
        "Each robot picks around 25,000 strawberries a day.",
    ]
    # A non-breaking space is an ordinary space; the link line stays with its item.
    assert rain.paragraphs[0].startswith("After the driest spring in 50 years,")
    assert rain.link_text == "Read the full forecast here"
    # The title-cased pull quote repeats the body: neither a headline nor a paragraph.
    assert len(pumpkin.paragraphs) == 2 and not pumpkin.paragraphs[1].startswith("“")
    assert (tractor.paragraphs, tractor.link_text) == (
        ["The two companies will build an electric tractor for small farms."],
        "Learn more about the tractor here",
    )
    assert parsed.tags == ["Farm Machinery", "Harvest", "JCB", "Weather", "Pumpkins"]


def test_compact_digest_with_bom_and_headlines_that_exclaim_ask_or_look_like_tags() -> None:
    parsed = other("compact_fintech_weekly.txt")
    assert parsed.intro.startswith("The Fintech Weekly is a digest") and parsed.tags == []
    assert parsed.items[1].paragraphs[0].startswith("Banks in 20 countries now send")
    assert parsed.items[1].paragraphs[1].startswith("“This is the biggest change to payments")
    assert parsed.items[2].link_text == "Read the consultation here"
    assert [len(i.paragraphs) for i in parsed.items] == [1, 2, 1, 1]


def test_page_scrape_with_invisible_blank_lines_and_captions_without_their_photo() -> None:
    parsed = other("page_city_arts.txt")
    museum, theatre, proms = parsed.items
    # A line holding only a zero-width space is blank, so the intro ends there.
    assert parsed.intro == (
        "The City Arts Weekly rounds up news from galleries, theatres and music venues."
    )
    # The photo directly under the headline (no blank line between) is not the story.
    assert museum.paragraphs == [
        "The Museum of Modern Craft reopened on Saturday after a two-year, £40 million refit.",
        "Entry remains free.",
    ]
    # A credited caption whose alt text was lost is neither a headline nor a paragraph.
    assert theatre.paragraphs == [
        "The Riverside Players won best ensemble at the national theatre awards on Sunday.",
        "The company was founded in 1998 in a disused warehouse.",
    ]
    assert proms.link_text == "Read more about the Proms stream here"


def test_unicode_line_separators_end_lines() -> None:
    text = (
        "The Port Digest is a weekly digest of news from the port.\u2028"
        "Cranes Arrive at the Container Terminal\u2029"
        "Four new cranes arrived by ship on Monday.\x85"
        "Dredging Starts in the Channel\r"
        "Work to deepen the channel begins next week.\n"
    )
    parsed = parse_document(text, source_name="port.txt")
    assert [(i.headline, i.line) for i in parsed.items] == [
        ("Cranes Arrive at the Container Terminal", 2),
        ("Dredging Starts in the Channel", 4),
    ]


def test_a_section_label_before_a_question_headline_is_not_an_empty_item() -> None:
    text = (
        "Weekly Notes: Rates and Rain\n\nIntro for the week.\n\n"
        "Rates Rise Again\n\nThe bank raised rates by a quarter point.\n\n"
        "In Brief\n\nWill It Rain on Sunday?\n\nForecasters are split.\n"
    )
    parsed = parse_document(text, source_name="notes.txt")
    assert [(i.headline, i.paragraphs) for i in parsed.items] == [
        ("Rates Rise Again", ["The bank raised rates by a quarter point."]),
        ("Will It Rain on Sunday?", ["Forecasters are split."]),
    ]


def test_a_document_that_only_repeats_its_title_is_refused_not_a_crash() -> None:
    with pytest.raises(IngestError, match=r"^t\.txt:1: no items found"):
        parse_document("Weekly Notes\n\nWeekly Notes\n", source_name="t.txt")


def test_camel_case_headline_mid_document_is_not_taken_for_a_tag_line() -> None:
    text = (
        "The Video Roundup is a weekly digest of news about online video.\n"
        "TikTok Teams Up with YouTube on Safety\n"
        "The two platforms will share research on keeping teenagers safe.\n"
        "Streaming Prices Rise Again\n"
        "Three services raised their monthly prices this week.\n"
        "TikTokYouTubeStreaming\n"
    )
    parsed = parse_document(text, source_name="video.txt")
    assert [i.headline for i in parsed.items] == [
        "TikTok Teams Up with YouTube on Safety",
        "Streaming Prices Rise Again",
    ]
    assert parsed.tags == ["TikTok", "YouTube", "Streaming"]


# --- Markdown ------------------------------------------------------------------------


def test_example_markdown_issue_parses_front_matter_and_item_properties() -> None:
    parsed = parse_document(
        (SEEDS / "example-issue.md").read_text(), source_name="example-issue.md"
    )
    assert parsed.issue_date == date(2024, 5, 6)
    assert parsed.tags == ["Logistics", "Luxury", "Africa"]
    first = parsed.items[0]
    assert (first.topics, first.pinned) == (["logistics", "south-southeast-asia"], True)
    assert (first.link_text, first.link_url) == (
        "Read the announcement",
        "https://example.com/news/cainiao-daraz-hubs",
    )
    assert first.paragraphs[0].startswith(
        "Daraz and Cainiao have opened automated distribution centers in Karachi and Lahore,"
    )
    assert len(parsed.items) == 3


def test_markdown_without_front_matter_uses_h1_title_and_leading_intro() -> None:
    text = "# My Roundup\n\nHello readers.\n\n## First Story\n\nIt happened.\n"
    parsed = parse_document(text, source_name="x.md")
    assert (parsed.title, parsed.intro, parsed.items[0].paragraphs) == (
        "My Roundup",
        "Hello readers.",
        ["It happened."],
    )


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "---\ntitle: T\n---\n\n## Lonely Headline\n\n## Next\n\nBody.\n",
            5,
            "item has a headline but no body",
        ),
        ("---\ntitle: [unclosed\n---\n## A\n\nB.\n", 2, "invalid front matter"),
        ("---\ntitle: T\ndate: 6 May\n---\n## A\n\nB.\n", 3, "date must be YYYY-MM-DD"),
        ("---\ntitle: T\ntittle: x\n---\n## A\n\nB.\n", 3, "unknown front matter key 'tittle'"),
        ("---\ntitle: T\n---\nJust an intro.\n", 4, "no items found"),
        ("---\ntitle: T\n## A\n\nB.\n", 1, "no closing '---'"),
        ("---\ndate: 2024-01-01\n---\n## A\n\nB.\n", 1, "no title"),
        ("---\ntitle: T\n---\n## A\n\nB.\n\n[x](javascript:alert(1))\n", 8, "http(s)"),
        ("---\ntitle: T\n---\n## A\nPinned: maybe\n\nB.\n", 5, "pinned must be yes or no"),
        (
            "---\ntitle: T\n---\n## A\nTopics: Not A Slug\n\nB.\n",
            5,
            "topics must be comma-separated slugs",
        ),
    ],
)
def test_bad_markdown_names_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(IngestError) as err:
        parse_document(text, source_name="seeds/x.md")
    assert (err.value.path, err.value.line) == ("seeds/x.md", line)
    assert fragment in err.value.message
    assert str(err.value).startswith(f"seeds/x.md:{line}: ")


def test_markdown_title_written_over_several_lines_is_one_line() -> None:
    text = "---\ntitle: |\n  Weekly\n  Roundup\n---\n## A Story\n\nBody.\n"
    assert parse_document(text, source_name="x.md").title == "Weekly Roundup"


def test_empty_text_file_is_refused() -> None:
    with pytest.raises(IngestError, match=r"^a\.txt:1: file is empty$"):
        parse_document(" \n\n", source_name="a.txt")


def test_text_with_no_headlines_and_no_title_is_refused() -> None:
    with pytest.raises(IngestError, match="no items found"):
        parse_document("This is a sentence.\nAnother sentence follows here.\n", source_name="a.txt")


# --- Service -------------------------------------------------------------------------


def test_ingesting_a_seed_stores_items_in_order_with_bodies_and_auto_topics(
    session: Session,
) -> None:
    result = ingest_file(session=session, path=seed("000"), issue_date=date(2024, 1, 1))
    session.commit()
    assert (result.created, result.item_count) == (True, 6)
    issue = session.get(Issue, result.issue_id)
    assert issue is not None and issue.issue_date == date(2024, 1, 1) and issue.status == "draft"
    items = session.exec(
        select(Item).where(Item.issue_id == result.issue_id).order_by(col(Item.position))
    ).all()
    assert [i.position for i in items] == list(range(6))
    assert items[0].body.split("\n\n")[1] == (
        "The French luxury design house said sales in Asia excluding Japan leapt 34%"
        " in the quarter."
    )
    # The scrape lost the interview's URL: its "Read the interview here" is dead text.
    assert items[3].link_text == "" and "interview here" not in items[3].body
    sources = set(session.exec(select(ItemTopic.source)).all())
    assert sources == {"auto"}
    for item in items:
        assert session.exec(select(ItemTopic).where(ItemTopic.item_id == item.id)).first(), (
            item.headline
        )


def test_reingesting_the_same_content_creates_nothing(session: Session, tmp_path: Path) -> None:
    first = ingest_file(session=session, path=seed("001"))
    session.commit()
    copy = tmp_path / "copy.txt"
    copy.write_bytes(
        seed("001").read_bytes().replace(b"\n", b"\r\n")
    )  # same words, other line endings
    again = ingest_file(session=session, path=copy)
    assert (again.created, again.issue_id, again.item_count) == (False, first.issue_id, 6)
    assert len(session.exec(select(Issue)).all()) == 1


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_other_roundups_ingest_once(session: Session, path: Path) -> None:
    first = ingest_file(session=session, path=path)
    session.commit()
    again = ingest_file(session=session, path=path)
    assert first.created and not again.created and again.issue_id == first.issue_id
    assert first.item_count == len(parse_file(path).items) >= 2
    assert len(session.exec(select(Item)).all()) == first.item_count
    assert len(session.exec(select(Issue)).all()) == 1


def test_issue_date_comes_from_argument_then_front_matter_then_today(session: Session) -> None:
    text = (SEEDS / "example-issue.md").read_text()
    from_front = ingest_text(session=session, text=text, source_name="a.md")
    overridden = ingest_text(
        session=session,
        text=text + "\nOne more paragraph.\n",
        source_name="b.md",
        issue_date=date(2030, 1, 7),
    )
    plain = ingest_file(session=session, path=DATA / "compact_city_digest.txt")
    dates = [session.get(Issue, r.issue_id).issue_date for r in (from_front, overridden, plain)]  # type: ignore[union-attr]
    assert dates[0] == date(2024, 5, 6) and dates[1] == date(2030, 1, 7)
    assert dates[2] == date.today() or abs((dates[2] - date.today()).days) <= 1


def test_explicit_markdown_topics_are_stored_as_editor_tags(session: Session) -> None:
    result = ingest_text(
        session=session, text=(SEEDS / "example-issue.md").read_text(), source_name="e.md"
    )
    first = session.exec(
        select(Item).where(Item.issue_id == result.issue_id, Item.position == 0)
    ).one()
    rows = session.exec(
        select(Topic.slug, ItemTopic.source)
        .join(ItemTopic, col(ItemTopic.topic_id) == col(Topic.id))
        .where(ItemTopic.item_id == first.id)
    ).all()
    assert sorted(rows) == [("logistics", "editor"), ("south-southeast-asia", "editor")]
    assert first.pinned is True and first.link_url == "https://example.com/news/cainiao-daraz-hubs"


def test_unknown_explicit_topic_names_its_line_and_writes_nothing(session: Session) -> None:
    text = "---\ntitle: T\n---\n## A\n\nB.\n\n## C\nTopics: logistics, no-such-topic\n\nD.\n"
    with pytest.raises(IngestError) as err:
        ingest_text(session=session, text=text, source_name="x.md")
    assert err.value.line == 9 and "no-such-topic" in err.value.message
    session.rollback()
    assert session.exec(select(Issue)).all() == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
        (b"Title\n\nCaf\xe9 opens.\n", "not UTF-8"),
    ],
)
def test_unusable_files_are_refused_with_their_name(
    session: Session, tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(IngestError, match=fragment) as err:
        ingest_file(session=session, path=path)
    assert err.value.path == str(path)
    assert session.exec(select(Issue)).all() == []


def test_non_utf8_error_points_at_the_offending_line(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"Title\n\nFirst line.\nCaf\xe9 opens.\n")
    with pytest.raises(IngestError) as err:
        ingest_file(session=session, path=path)
    assert err.value.line == 4


# --- CLI -----------------------------------------------------------------------------


@pytest.fixture
def runner(app_settings) -> CliRunner:  # type: ignore[no-untyped-def]
    return CliRunner()


def test_cli_ingest_reports_json_and_keeps_going_after_a_bad_file(
    runner: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("---\ntitle: T\n---\n## Lonely\n")
    result = runner.invoke(
        app, ["ingest", str(bad), str(seed("002")), "--json", "--date", "2024-02-05"]
    )
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert [(i["items"], i["created"]) for i in payload["issues"]] == [(9, True)]
    assert payload["errors"] == [
        {"file": str(bad), "line": 4, "message": "item has a headline but no body"}
    ]
    assert f"{bad}:4: item has a headline but no body" in result.stderr
    with db.session_scope() as s:
        assert [i.issue_date for i in s.exec(select(Issue)).all()] == [date(2024, 2, 5)]


def test_cli_ingest_twice_says_existing(runner: CliRunner) -> None:
    runner.invoke(app, ["ingest", str(seed("004"))])
    result = runner.invoke(app, ["ingest", str(seed("004"))])
    assert result.exit_code == 0
    assert "existing" in result.stdout and "created" not in result.stdout


def test_cli_items_list_and_tag(runner: CliRunner) -> None:
    runner.invoke(app, ["ingest", str(seed("003"))])
    listed = json.loads(runner.invoke(app, ["items", "list", "1", "--json"]).stdout)
    cloud = next(i for i in listed if i["headline"].startswith("Alibaba Cloud Soars"))
    assert cloud["topics"] == ["cloud-ai"] and cloud["position"] == 5
    tagged = runner.invoke(app, ["items", "tag", str(cloud["id"]), "--topics", "europe,cloud-ai"])
    assert tagged.exit_code == 0
    again = json.loads(runner.invoke(app, ["items", "list", "1", "--json"]).stdout)
    assert next(i for i in again if i["id"] == cloud["id"])["topics"] == ["cloud-ai", "europe"]


def test_cli_items_tag_rejects_unknown_slug(runner: CliRunner) -> None:
    runner.invoke(app, ["ingest", str(seed("004"))])
    result = runner.invoke(app, ["items", "tag", "1", "--topics", "bogus"])
    assert result.exit_code == 1
    assert "bogus" in result.stderr and "luxury-fashion" in result.stderr


def test_cli_topics_lists_item_counts(runner: CliRunner) -> None:
    runner.invoke(app, ["ingest", str(seed("004"))])
    rows = {r["slug"]: r for r in json.loads(runner.invoke(app, ["topics", "--json"]).stdout)}
    assert (
        rows["luxury-fashion"]["items"] == 1
        and rows["luxury-fashion"]["name"] == "Luxury & Fashion"
    )
    assert rows["logistics"]["items"] == 0


def _issue_status(issue_id: int, status: str | None = None) -> str:
    with db.session_scope() as s:
        issue = s.get(Issue, issue_id)
        assert issue is not None
        if status is not None:
            issue.status = status
        return str(issue.status)


def test_cli_items_tag_on_an_approved_issue_returns_it_to_draft(runner: CliRunner) -> None:
    runner.invoke(app, ["ingest", str(seed("004"))])
    _issue_status(1, "scheduled")
    result = runner.invoke(app, ["items", "tag", "1", "--topics", "logistics"])
    assert result.exit_code == 0, result.output
    assert "draft again" in result.stdout and "approve it again" in result.stdout
    assert _issue_status(1) == "draft"


@pytest.mark.parametrize("status", ["sending", "sent"])
def test_cli_items_tag_refuses_an_issue_that_went_out(runner: CliRunner, status: str) -> None:
    runner.invoke(app, ["ingest", str(seed("004"))])
    _issue_status(1, status)
    before = json.loads(runner.invoke(app, ["items", "list", "1", "--json"]).stdout)
    result = runner.invoke(app, ["items", "tag", "1", "--topics", "logistics"])
    assert result.exit_code == 1
    assert "can no longer be edited" in result.stderr
    assert json.loads(runner.invoke(app, ["items", "list", "1", "--json"]).stdout) == before
    assert _issue_status(1) == status


def test_cli_items_tag_unknown_item_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["items", "tag", "999", "--topics", "logistics"])
    assert result.exit_code == 1 and "no item with id 999" in result.stderr


def test_cli_issues_lists_status_items_and_deliveries(runner: CliRunner) -> None:
    assert "No issues yet" in runner.invoke(app, ["issues"]).stdout
    runner.invoke(app, ["ingest", str(seed("004")), "--date", "2024-03-04"])
    runner.invoke(app, ["ingest", str(seed("003")), "--date", "2024-03-11"])
    with db.session_scope() as s:
        sub = Subscriber(email="a@example.com")
        s.add(sub)
        s.flush()
        s.add(Delivery(issue_id=1, subscriber_id=sub.id, status="sent"))
    rows = json.loads(runner.invoke(app, ["issues", "--json"]).stdout)
    assert [(r["id"], r["date"], r["status"]) for r in rows] == [
        (2, "2024-03-11", "draft"), (1, "2024-03-04", "draft")]
    assert rows[1]["deliveries"] == {"sent": 1} and rows[0]["deliveries"] == {}
    assert rows[1]["items"] > 0 and rows[1]["title"]
    table = runner.invoke(app, ["issues"])
    assert table.exit_code == 0 and "1 sent" in table.stdout and "2024-03-11" in table.stdout


# --- the email's words: subject, dead calls to action, images and excerpts (issue 9) ---


def test_ingest_proposes_a_short_subject_for_every_seed(session: Session) -> None:
    for path in sorted(SEEDS.glob("*.txt")):
        result = ingest_file(session=session, path=path)
        issue = session.get(Issue, result.issue_id)
        assert issue is not None
        assert 10 <= len(issue.subject) <= 70, (path.name, issue.subject)
        assert not issue.subject.startswith("Alibaba News Roundup"), issue.subject


def test_subject_names_the_top_story_and_counts_the_rest(session: Session) -> None:
    issue = session.get(Issue, ingest_file(session=session, path=seed("000")).issue_id)
    assert issue is not None
    assert issue.subject == "Hermès Beats Quarterly Expectations Thanks to China + 5 more"


def test_subject_proposal_shortens_and_joins_headlines() -> None:
    from newsletter.ingest.subject import propose_subject, short_headline

    assert short_headline("Hermès Q3 Sales Beat Market Forecasts On Strong China Growth") \
        == "Hermès Q3 Sales Beat Market Forecasts"
    # Too few words before the phrase: the headline stays whole.
    assert short_headline("Jack Ma Calls for Solidarity") == "Jack Ma Calls for Solidarity"
    subject = propose_subject(["Cainiao Opens Two Hubs", "Nanushka Comes to Tmall", "Third"])
    assert subject == "Cainiao Opens Two Hubs, Nanushka Comes to Tmall + 1 more"
    long = ["A Very Long Headline About Warehouses " * 3, "Another Equally Long One " * 3]
    assert len(propose_subject(long)) <= 70 and propose_subject(long).endswith("+ 1 more")
    assert propose_subject([]) == ""


def test_sentence_case_only_when_the_stories_show_the_words_are_ordinary() -> None:
    from newsletter.ingest.subject import propose_subject

    body = "The new smart hubs opened. Cainiao said it opens hubs that are smart and new."
    assert propose_subject(["Cainiao Opens New Smart Hubs"], body_text=body) \
        == "Cainiao opens new smart hubs"
    # "Zephyr" is never used in the text: keep Title Case rather than guess.
    assert propose_subject(["Cainiao Opens New Zephyr Hubs"], body_text=body) \
        == "Cainiao Opens New Zephyr Hubs"


@pytest.mark.parametrize(("sentence", "dead"), [
    ("Read the interview here", True),
    ("Tune in on Spotify or Apple Podcasts, and read the interview here", True),
    ("Click here to read more.", True),
    ("Read more about this year’s 6.18 here.", True),
    ("Find out more.", True),
    ("The store is here.", False),
    ("See you here next year.", False),
    ("Readers can find the full list of brands on the company’s website.", False),
])
def test_dead_calls_to_action_are_recognised(sentence: str, dead: bool) -> None:
    from newsletter.ingest.cta import is_dead_cta

    assert is_dead_cta(sentence) is dead


def test_dead_calls_to_action_are_removed_at_ingest(session: Session) -> None:
    from newsletter.ingest.cta import dead_ctas

    for path in sorted(SEEDS.glob("*.txt")):
        ingest_file(session=session, path=path)
    items = session.exec(select(Item)).all()
    assert items
    for item in items:
        assert dead_ctas(item.body.split("\n\n")) == [], item.headline
        assert not item.link_text or item.link_url, item.headline
    # The rest of the paragraph stays: only the call to action went.
    six18 = next(i for i in items if i.headline == "Alibaba Group Concludes 6.18 Sales Campaign")
    assert six18.body.endswith("year-over-year.")


def test_a_call_to_action_with_a_link_becomes_the_story_link(session: Session) -> None:
    text = ("---\ntitle: Weekly\n---\n\n## Cainiao Opens Hubs\n\n"
            "Two hubs opened. Read more here.\n\n[Read the announcement](https://example.com/a)\n")
    result = ingest_text(session=session, text=text, source_name="w.md")
    item = session.exec(select(Item).where(Item.issue_id == result.issue_id)).one()
    assert (item.body, item.link_text, item.link_url) == (
        "Two hubs opened.", "Read the announcement", "https://example.com/a")


def test_markdown_sets_an_image_and_an_excerpt(session: Session) -> None:
    text = ("---\ntitle: Weekly\n---\n\n## Cainiao Opens Hubs\n\nExcerpt: Two new hubs.\n\n"
            "![Robots sorting parcels](https://img.example.com/hubs.jpg)\n\nThe body.\n")
    result = ingest_text(session=session, text=text, source_name="w.md")
    item = session.exec(select(Item).where(Item.issue_id == result.issue_id)).one()
    assert (item.excerpt, item.image_url, item.image_alt, item.body) == (
        "Two new hubs.", "https://img.example.com/hubs.jpg", "Robots sorting parcels", "The body.")


def test_markdown_image_must_be_http(session: Session) -> None:
    text = "---\ntitle: W\n---\n\n## Headline Here\n\n![x](javascript:alert(1))\n\nBody.\n"
    with pytest.raises(IngestError, match=r"w\.md:7: image must be an http"):
        ingest_text(session=session, text=text, source_name="w.md")


def test_a_call_to_action_that_writes_its_address_becomes_the_link(session: Session) -> None:
    text = ("Weekly Roundup: Cainiao Opens Hubs\n\nThis week in brief, with more to come.\n\n"
            "Cainiao Opens Two Smart Hubs\n\nCainiao opened two smart hubs in Karachi this "
            "week. Read the interview here: https://www.alizila.com/cainiao-hubs.\n\n"
            "Nanushka Comes To Tmall\n\nThe fashion house opened a store in Shanghai.\n")
    result = ingest_text(session=session, text=text, source_name="scrape.txt")
    items = session.exec(select(Item).where(Item.issue_id == result.issue_id)
                         .order_by(col(Item.position))).all()
    assert (items[0].body, items[0].link_text, items[0].link_url) == (
        "Cainiao opened two smart hubs in Karachi this week.", "Read the interview here",
        "https://www.alizila.com/cainiao-hubs")
    assert (items[1].link_text, items[1].link_url) == ("", "")
