"""One step of undo for the issue editor: the issue as it was before the last change.

The console snapshots an editable issue (title, intro, every item with its flags,
position and topics) before each change and keeps it with a label ("Moved “X” up").
Undo puts that state back, but only while nothing else changed the issue since
(compared by Issue.updated_at), so it never silently reverts someone else's edit.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from newsletter.editorial import EditorialError, _issue_for_edit, touch_issue
from newsletter.models import IssueUndo, Item, ItemTopic, Topic, utcnow

ITEM_FIELDS = ("headline", "body", "link_text", "link_url", "kind", "position", "pinned",
               "hidden")


def snapshot(*, session: Session, issue_id: int) -> dict[str, Any]:
    issue = _issue_for_edit(session, issue_id)
    items = session.exec(select(Item).where(Item.issue_id == issue_id)
                         .order_by(col(Item.position), col(Item.id))).all()
    topics: dict[int, list[tuple[int, str]]] = {}
    for item_id, topic_id, source in session.exec(
            select(ItemTopic.item_id, ItemTopic.topic_id, ItemTopic.source).where(
                col(ItemTopic.item_id).in_([i.id for i in items]))).all():
        topics.setdefault(item_id, []).append((topic_id, source))
    return {
        "title": issue.title, "intro": issue.intro,
        "items": [{"id": i.id, **{f: getattr(i, f) for f in ITEM_FIELDS},
                   "topics": topics.get(i.id or 0, [])} for i in items],
    }


def remember(*, session: Session, issue_id: int, before: dict[str, Any], label: str) -> None:
    """Keep `before` as the state Undo restores (call after the change, same transaction)."""
    issue = _issue_for_edit(session, issue_id)
    row = session.get(IssueUndo, issue_id) or IssueUndo(issue_id=issue_id, snapshot="{}")
    row.snapshot = json.dumps(before)
    row.label = label[:300]
    row.after = issue.updated_at
    row.created_at = utcnow()
    session.add(row)


def last_change(*, session: Session, issue_id: int) -> str:
    """The label of the change Undo would revert, or "" when there is none (or it's stale)."""
    row = session.get(IssueUndo, issue_id)
    if row is None:
        return ""
    issue = _issue_for_edit(session, issue_id)
    return row.label if row.after == issue.updated_at else ""


def undo(*, session: Session, issue_id: int) -> str:
    """Restore the issue as it was before the last change; returns that change's label."""
    row = session.get(IssueUndo, issue_id)
    issue = _issue_for_edit(session, issue_id)  # refuses issues no longer editable
    if row is None or row.after != issue.updated_at:
        raise EditorialError("There is nothing to undo: the issue changed since, or was "
                             "never changed here.", field="undo")
    state = json.loads(row.snapshot)
    issue.title, issue.intro = state["title"], state["intro"]
    session.add(issue)
    kept = {spec["id"] for spec in state["items"]}
    current = {i.id: i for i in session.exec(select(Item).where(Item.issue_id == issue_id))}
    for item_id in set(current) - kept:  # added by the change: remove
        session.exec(delete(ItemTopic).where(col(ItemTopic.item_id) == item_id))  # type: ignore[call-overload]
        session.delete(current[item_id])
    session.flush()
    known_topics = set(session.exec(select(Topic.id)).all())
    for spec in state["items"]:
        item = current.get(spec["id"]) or Item(id=spec["id"], issue_id=issue_id, headline="")
        for name in ITEM_FIELDS:
            setattr(item, name, spec[name])
        session.add(item)
        session.flush()
        session.exec(delete(ItemTopic).where(col(ItemTopic.item_id) == spec["id"]))  # type: ignore[call-overload]
        session.add_all(ItemTopic(item_id=spec["id"], topic_id=t, source=source)
                        for t, source in spec["topics"] if t in known_topics)
    session.delete(row)
    touch_issue(session=session, issue=issue)
    return row.label
