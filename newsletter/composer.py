"""The composer: which items one subscriber gets this week, in what order, and why.

Pure functions over an `IssueContent` snapshot, so one issue is loaded once and
composed for thousands of subscribers, and subscribers with the same topic choices
get the same `Composition.key` (and so share one rendered email).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from sqlmodel import Session, col, select

from newsletter.models import Issue, Item, ItemTopic, Topic

Why = Literal["pinned", "topic", "editor"]


@dataclass(frozen=True)
class ItemContent:
    """An item as the composer and renderer see it."""

    id: int
    position: int
    headline: str
    body: str
    link_text: str = ""
    link_url: str = ""
    kind: str = "news"
    pinned: bool = False
    topics: tuple[str, ...] = ()  # slugs

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.body.split("\n\n") if p.strip()]


@dataclass(frozen=True)
class IssueContent:
    """A snapshot of an issue's visible items in editor order."""

    id: int
    title: str
    intro: str
    issue_date: date
    items: tuple[ItemContent, ...]
    topic_names: dict[str, str] = field(default_factory=dict)  # slug -> name
    version: str = ""  # changes whenever the issue or its items change


@dataclass(frozen=True)
class ChosenItem:
    """An item picked for one subscriber, with the reason shown next to it."""

    item: ItemContent
    why: Why
    reason: str
    matched: tuple[str, ...] = ()  # followed topic slugs this item carries
    learned: tuple[str, ...] = ()  # learned-interest slugs this item carries (see learned=)


@dataclass(frozen=True)
class Composition:
    """One subscriber's digest: the chosen items in order. Same key, same email."""

    issue_id: int
    items: tuple[ChosenItem, ...]
    key: str

    @property
    def matched_count(self) -> int:
        return sum(1 for c in self.items if c.why == "topic")


def load_issue(*, session: Session, issue_id: int) -> IssueContent:
    """Read an issue, its visible items and their topics in a fixed number of queries."""
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    items = session.exec(
        select(Item)
        .where(Item.issue_id == issue_id, col(Item.hidden).is_(False))
        .order_by(col(Item.position), col(Item.id))
    ).all()
    ids = [i.id for i in items]
    tags: dict[int, list[str]] = {i: [] for i in ids if i is not None}
    names: dict[str, str] = {}
    if ids:
        rows = session.exec(
            select(ItemTopic.item_id, Topic.slug, Topic.name)
            .join(Topic, col(Topic.id) == col(ItemTopic.topic_id))
            .where(col(ItemTopic.item_id).in_(ids))
            .order_by(col(Topic.slug))
        ).all()
        for item_id, slug, name in rows:
            tags[item_id].append(slug)
            names[slug] = name
    for slug, name in session.exec(select(Topic.slug, Topic.name)).all():
        names.setdefault(slug, name)
    return IssueContent(
        id=issue_id,
        title=issue.title,
        intro=issue.intro,
        issue_date=issue.issue_date,
        items=tuple(
            ItemContent(
                id=i.id or 0,
                position=i.position,
                headline=i.headline,
                body=i.body,
                link_text=i.link_text,
                link_url=i.link_url,
                kind=i.kind,
                pinned=i.pinned,
                topics=tuple(tags.get(i.id or 0, ())),
            )
            for i in items
        ),
        topic_names=names,
        # Every edit to an issue or its items bumps Issue.updated_at (see touch_issue).
        version=issue.updated_at.isoformat(),
    )


def _join_names(names: list[str]) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def compose(
    issue: IssueContent,
    *,
    followed: Iterable[str] = (),
    only_my_topics: bool = False,
    max_items: int | None = None,
    learned: Sequence[str] = (),
) -> Composition | None:
    """Pick and order items for someone following `followed`.

    Pinned items first, then items matching followed topics (more matches first,
    then editor order), then the rest of the week, capped at `max_items`. Returns
    None when "only my topics" leaves nothing to send.

    `learned` is the reader's learned interest, strongest first (see
    `engagement.interests.interests_by_subscriber`): within the rest of the week,
    stories on a learned topic come first, strongest topic first, with the reason
    "You often read Logistics"; the others follow in editor order. Empty (the
    default, and always when click tracking is off) keeps the editor's order.
    """
    wanted = frozenset(followed)
    # A followed topic already leads the email: learning only reorders the rest.
    rank = {slug: i for i, slug in enumerate(t for t in dict.fromkeys(learned) if t not in wanted)}
    pinned: list[ChosenItem] = []
    matching: list[tuple[int, int, ChosenItem]] = []
    rest: list[tuple[int, int, ChosenItem]] = []
    for index, item in enumerate(issue.items):
        matched = tuple(t for t in item.topics if t in wanted)
        if item.pinned:
            # A pinned story on a topic the reader follows says both (the preview and
            # the email show why it is there for them, not only that it is pinned).
            names = [issue.topic_names.get(t, t) for t in matched]
            reason = ("Editor's pick · You follow " + _join_names(names) if matched
                      else "Editor's pick")
            pinned.append(ChosenItem(item, "pinned", reason, matched))
        elif matched:
            names = [issue.topic_names.get(t, t) for t in matched]
            reason = f"You follow {_join_names(names)}"
            matching.append((-len(matched), index, ChosenItem(item, "topic", reason, matched)))
        else:
            liked = tuple(sorted((t for t in item.topics if t in rank), key=rank.__getitem__))
            if liked:
                reason = f"You often read {issue.topic_names.get(liked[0], liked[0])}"
                rest.append((rank[liked[0]], index, ChosenItem(item, "editor", reason, (),
                                                               liked)))
            else:
                reason = "Also this week" if wanted else "From this week's roundup"
                rest.append((len(rank), index, ChosenItem(item, "editor", reason)))
    matching.sort(key=lambda entry: (entry[0], entry[1]))
    rest.sort(key=lambda entry: (entry[0], entry[1]))
    if only_my_topics and not matching:
        return None
    chosen = pinned + [entry[2] for entry in matching]
    if not only_my_topics:
        chosen += [entry[2] for entry in rest]
    if max_items is not None:
        chosen = chosen[: max(max_items, len(pinned))]
    return Composition(issue_id=issue.id, items=tuple(chosen), key=composition_key(issue, chosen))


def composition_key(issue: IssueContent, chosen: Iterable[ChosenItem]) -> str:
    """A short hash of everything the rendered email depends on, except personal parts."""
    h = hashlib.sha256(f"{issue.id}|{issue.version}".encode())
    for c in chosen:
        h.update(f"|{c.item.id}:{c.why}:{c.reason}".encode())
    return h.hexdigest()[:24]
