"""Turning a parsed roundup into an Issue with its Items and topic tags."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlmodel import Session, select

from newsletter.ingest.cta import clean_item
from newsletter.ingest.markdown import looks_like_markdown, parse_markdown
from newsletter.ingest.subject import propose_subject
from newsletter.ingest.text import normalise, parse_text
from newsletter.ingest.types import IngestError, ParsedIssue
from newsletter.models import Issue, Item, ItemTopic, Topic, utcnow
from newsletter.topics import (
    TopicSpec,
    load_taxonomy,
    suggest_topics,
    sync_topics,
    taxonomy_from_db,
)

MARKDOWN_SUFFIXES = (".md", ".markdown")


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one document did."""

    issue_id: int
    created: bool  # False: the same content was ingested before
    item_count: int
    title: str


def _known_tags(taxonomy: list[TopicSpec] | None) -> list[str]:
    specs = taxonomy if taxonomy is not None else load_taxonomy()
    return [k for spec in specs for k in spec.keywords]


def parse_document(
    text: str, *, source_name: str, taxonomy: list[TopicSpec] | None = None
) -> ParsedIssue:
    """Parse a roundup, choosing the format by file extension, else by content."""
    if "\x00" in text:
        raise IngestError(source_name, 1, "file looks binary, expected UTF-8 text")
    if not text.strip():
        raise IngestError(source_name, 1, "file is empty")
    if source_name.lower().endswith(MARKDOWN_SUFFIXES) or looks_like_markdown(text):
        return parse_markdown(text, source_name=source_name)
    return parse_text(text, source_name=source_name, known_tags=_known_tags(taxonomy))


def check_topics(parsed: ParsedIssue, known: Collection[str], *, source_name: str) -> None:
    """Refuse explicit topics that are not in the taxonomy, naming the line."""
    for item in parsed.items:
        unknown = [s for s in item.topics if s not in known]
        if unknown:
            raise IngestError(source_name, item.topics_line or item.line,
                              f"unknown topic {unknown[0]!r} (valid: {', '.join(sorted(known))})")


def content_hash(text: str) -> str:
    """Same words, same hash, whatever the line endings or trailing spaces."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def decode(data: bytes, *, source_name: str) -> str:
    """UTF-8 text of an uploaded or read file, or an IngestError saying why not."""
    if b"\x00" in data[:8192]:
        raise IngestError(source_name, 1, "file looks binary, expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IngestError(
            source_name, line, f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x})"
        ) from exc


def ingest_text(
    *, session: Session, text: str, source_name: str, issue_date: date | None = None
) -> IngestResult:
    """Create a draft issue from a document (or find the one made from the same text).

    Everything is parsed and validated before the first write, so a bad document
    writes nothing; the caller's transaction is the unit (one per file), and its
    commit or rollback decides whether the issue exists.
    """
    digest = content_hash(text)
    existing = session.exec(select(Issue).where(Issue.source_hash == digest)).first()
    if existing is not None and existing.id is not None:
        count = len(session.exec(select(Item.id).where(Item.issue_id == existing.id)).all())
        return IngestResult(existing.id, False, count, existing.title)

    taxonomy = taxonomy_from_db(session=session)
    if not taxonomy:
        # A database nobody ran `newsletter init` on: load the shipped taxonomy
        # rather than ingesting a week's items with no topics at all.
        sync_topics(session=session)
        taxonomy = taxonomy_from_db(session=session)
    parsed = parse_document(text, source_name=source_name, taxonomy=taxonomy)
    for parsed_item in parsed.items:
        parsed_item.paragraphs, parsed_item.link_text, parsed_item.link_url = clean_item(
            parsed_item.paragraphs, parsed_item.link_text, parsed_item.link_url)
    topic_ids = {t.slug: t.id for t in session.exec(select(Topic)).all() if t.id is not None}
    check_topics(parsed, topic_ids, source_name=source_name)

    issue = Issue(
        title=parsed.title[:500],
        intro=parsed.intro,
        issue_date=issue_date or parsed.issue_date or utcnow().date(),
        source_name=source_name[-500:],
        source_hash=digest,
        subject=_subject(parsed),
    )
    session.add(issue)
    session.flush()
    assert issue.id is not None
    for position, parsed_item in enumerate(parsed.items):
        item = Item(
            issue_id=issue.id,
            position=position,
            headline=parsed_item.headline[:500],
            body=parsed_item.body,
            link_text=parsed_item.link_text[:500],
            link_url=parsed_item.link_url[:2000],
            kind=parsed_item.kind,
            pinned=parsed_item.pinned,
            excerpt=parsed_item.excerpt,
            image_url=parsed_item.image_url[:2000],
            image_alt=parsed_item.image_alt[:500],
        )
        session.add(item)
        session.flush()
        assert item.id is not None
        if parsed_item.topics:
            slugs, source = parsed_item.topics, "editor"
        else:
            slugs = suggest_topics(
                text="\n\n".join([parsed_item.body, parsed_item.link_text]),
                headline=parsed_item.headline,
                tags=parsed.tags,
                taxonomy=taxonomy,
            )
            source = "auto"
        for slug in dict.fromkeys(slugs):
            session.add(ItemTopic(item_id=item.id, topic_id=topic_ids[slug], source=source))
    session.flush()
    return IngestResult(issue.id, True, len(parsed.items), issue.title)


def _subject(parsed: ParsedIssue) -> str:
    """The proposed subject: pinned stories first, as every reader gets them."""
    ordered = sorted(parsed.items, key=lambda i: not i.pinned)
    body = "\n\n".join([parsed.intro, *(i.body for i in parsed.items)])
    return propose_subject([i.headline for i in ordered], title=parsed.title, body_text=body)


def ingest_file(*, session: Session, path: Path, issue_date: date | None = None) -> IngestResult:
    """Ingest one file; errors name the file and line."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(name, 1, f"cannot read file: {exc.strerror or exc}") from exc
    return ingest_text(
        session=session,
        text=decode(data, source_name=name),
        source_name=name,
        issue_date=issue_date,
    )
