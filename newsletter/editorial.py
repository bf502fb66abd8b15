"""What editors change on an issue before it goes out.

Every function bumps `Issue.updated_at` (it versions the composition cache) and
refuses to touch an issue that is already being sent. Editing an approved or
scheduled issue sends it back to draft: approval covers what was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from newsletter.errors import UserError
from newsletter.models import Issue, IssueStatus, Item, ItemTopic, utcnow
from newsletter.settings import settings
from newsletter.topics import set_item_topics

EDITABLE = {IssueStatus.draft, IssueStatus.approved, IssueStatus.scheduled}
MAX_TITLE = 500
MAX_SUBJECT = 200  # the checks warn above 70 characters and block above 120
MAX_HEADLINE = 500
MAX_LINK_TEXT = 500
MAX_URL = 2000


class EditorialError(UserError):
    """A problem with an edit to an issue or item."""

    default_field = ""


def _has_control_chars(text: str) -> bool:
    return any(ord(c) < 32 and c not in "\n\t" for c in text)


def _single_line(value: str, *, field: str, label: str, limit: int, required: bool) -> str:
    value = (value or "").strip()
    if required and not value:
        raise EditorialError(f"{label} can't be empty.", field=field)
    if len(value) > limit:
        raise EditorialError(f"{label} is limited to {limit} characters.", field=field)
    if "\n" in value or "\r" in value or _has_control_chars(value):
        raise EditorialError(f"{label} must be a single line.", field=field)
    return value


def _multi_line(value: str, *, field: str, label: str) -> str:
    value = (value or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if _has_control_chars(value):
        raise EditorialError(f"{label} contains control characters.", field=field)
    return value


def validate_url(value: str, *, field: str = "link_url") -> str:
    """An absolute http(s) URL, or empty."""
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > MAX_URL:
        raise EditorialError(f"Links are limited to {MAX_URL} characters.", field=field)
    if any(c.isspace() for c in value) or _has_control_chars(value):
        raise EditorialError("Links can't contain spaces.", field=field)
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        _ = parts.port  # raises for a port out of range or not a number
    except ValueError:  # e.g. an unbalanced "[" in the host
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or "." not in host:
        raise EditorialError(
            "Links must be absolute http:// or https:// addresses, e.g. https://example.com/story.",
            field=field,
        )
    return value


def check_item_count(count: int, *, source: str = "") -> None:
    """An issue holds at most MAX_ITEMS_PER_ISSUE items: a digest is read, not scrolled,
    and every page about the issue must stay quick to open."""
    limit = settings.max_items_per_issue
    if count > limit:
        where = f"{source} has {count} stories" if source else f"That makes {count} items"
        raise EditorialError(
            f"{where}; an issue holds at most {limit} (MAX_ITEMS_PER_ISSUE). "
            "Split the roundup into smaller issues.", field="form")


def _refusal(status: str, verb: str) -> EditorialError:
    if status == IssueStatus.sending:
        return EditorialError(f"This issue started sending; it can no longer be {verb}.",
                              field="status")
    return EditorialError(f"This issue is {status}; it can no longer be {verb}.", field="status")


def _issue_for_edit(session: Session, issue_id: int) -> Issue:
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    if issue.status not in EDITABLE:
        raise _refusal(issue.status, "edited")
    return issue


def _set_status(session: Session, issue: Issue, *, allowed_from: Sequence[IssueStatus],
                verb: str, **values: object) -> None:
    """Write the issue's status only if it is still one of `allowed_from`.

    Beat's plan_send may move the issue to `sending` between our read and this
    write; a plain ORM write would then put a half-sent issue back to draft.
    """
    result = session.exec(  # type: ignore[call-overload]
        update(Issue)
        .where(col(Issue.id) == issue.id, col(Issue.status).in_(list(allowed_from)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        current = session.exec(select(Issue.status).where(Issue.id == issue.id)).first()
        raise _refusal(current or "gone", verb)
    for name, value in values.items():
        set_committed_value(issue, name, value)


def touch_issue(*, session: Session, issue: Issue) -> None:
    """Record an edit: new composition version, and approval no longer holds."""
    session.flush()  # the edit itself, in this transaction: rolled back if we refuse
    _set_status(session, issue, allowed_from=sorted(EDITABLE), verb="edited",
                updated_at=utcnow(), status=IssueStatus.draft, approved_at=None,
                scheduled_for=None)


def schedule_issue(*, session: Session, issue_id: int, when: datetime) -> Issue:
    """Approved (or already scheduled) -> scheduled for `when`."""
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    if issue.status not in (IssueStatus.approved, IssueStatus.scheduled):
        raise EditorialError(
            f"Only approved issues can be scheduled; this one is {issue.status}. "
            "Run the checks and approve it first.", field="status")
    _set_status(session, issue, allowed_from=[IssueStatus.approved, IssueStatus.scheduled],
                verb="scheduled", status=IssueStatus.scheduled, scheduled_for=when)
    return issue


def _item_for_edit(session: Session, item_id: int) -> tuple[Item, Issue]:
    item = session.get(Item, item_id)
    if item is None:
        raise LookupError(f"no item with id {item_id}")
    return item, _issue_for_edit(session, item.issue_id)


def update_issue(*, session: Session, issue_id: int, title: str, intro: str,
                 subject: str | None = None) -> Issue:
    issue = _issue_for_edit(session, issue_id)
    issue.title = _single_line(title, field="title", label="The title", limit=MAX_TITLE,
                               required=True)
    issue.intro = _multi_line(intro, field="intro", label="The intro")
    if subject is not None:
        _set_subject(session, issue, subject)
    touch_issue(session=session, issue=issue)
    return issue


def _set_subject(session: Session, issue: Issue, subject: str) -> None:
    """The email's subject; empty proposes one again from the issue's stories."""
    from newsletter.ingest.subject import proposed_subject

    value = _single_line(subject, field="subject", label="The subject", limit=MAX_SUBJECT,
                         required=False)
    issue.subject = value or proposed_subject(session=session, issue_id=issue.id or 0)


def set_subject(*, session: Session, issue_id: int, subject: str) -> Issue:
    """Change only the subject (the CLI); like every edit, approval no longer holds."""
    issue = _issue_for_edit(session, issue_id)
    _set_subject(session, issue, subject)
    touch_issue(session=session, issue=issue)
    return issue


def _set_fields(item: Item, *, headline: str, body: str, link_text: str, link_url: str) -> None:
    item.headline = _single_line(headline, field="headline", label="The headline",
                                 limit=MAX_HEADLINE, required=True)
    item.body = _multi_line(body, field="body", label="The body")
    item.link_text = _single_line(link_text, field="link_text", label="The link text",
                                  limit=MAX_LINK_TEXT, required=False)
    item.link_url = validate_url(link_url)
    if item.link_text and not item.link_url:
        raise EditorialError("Link text needs a link address.", field="link_url")


def _set_topics(session: Session, item_id: int, topics: Sequence[str] | None) -> None:
    if topics is None:
        return
    try:
        set_item_topics(session=session, item_id=item_id, slugs=list(topics), source="editor")
    except ValueError as exc:
        raise EditorialError(str(exc), field="topics") from None


def add_item(
    *, session: Session, issue_id: int, headline: str, body: str = "", link_text: str = "",
    link_url: str = "", topics: Sequence[str] = (), excerpt: str = "",
) -> Item:
    """Append an item at the end of the issue."""
    issue = _issue_for_edit(session, issue_id)
    item = Item(issue_id=issue_id, headline="")
    _set_fields(item, headline=headline, body=body, link_text=link_text, link_url=link_url)
    count = session.exec(select(func.count()).where(Item.issue_id == issue_id)).one()
    check_item_count(int(count) + 1)
    item.excerpt = _multi_line(excerpt, field="excerpt", label="The excerpt")
    last = session.exec(
        select(func.max(Item.position)).where(Item.issue_id == issue_id)
    ).one()
    item.position = (last if last is not None else -1) + 1
    session.add(item)
    session.flush()
    assert item.id is not None
    _set_topics(session, item.id, topics)
    touch_issue(session=session, issue=issue)
    return item


def update_item(
    *, session: Session, item_id: int, headline: str, body: str, link_text: str, link_url: str,
    topics: Sequence[str] | None = None, excerpt: str | None = None,
) -> Item:
    item, issue = _item_for_edit(session, item_id)
    _set_fields(item, headline=headline, body=body, link_text=link_text, link_url=link_url)
    if excerpt is not None:  # what the email shows; empty: the story's first ~60 words
        item.excerpt = _multi_line(excerpt, field="excerpt", label="The excerpt")
    session.add(item)
    session.flush()
    _set_topics(session, item_id, topics)
    touch_issue(session=session, issue=issue)
    return item


def set_topics(*, session: Session, item_id: int, topics: Sequence[str]) -> Issue:
    """Replace an item's topics; returns its issue, back in draft if it was approved."""
    _item, issue = _item_for_edit(session, item_id)
    _set_topics(session, item_id, topics)
    touch_issue(session=session, issue=issue)
    return issue


def delete_item(*, session: Session, item_id: int) -> None:
    item, issue = _item_for_edit(session, item_id)
    session.exec(delete(ItemTopic).where(col(ItemTopic.item_id) == item_id))  # type: ignore[call-overload]
    session.delete(item)
    session.flush()
    _renumber(session, issue.id or 0)
    touch_issue(session=session, issue=issue)


def _ordered(session: Session, issue_id: int) -> list[Item]:
    return list(session.exec(
        select(Item).where(Item.issue_id == issue_id).order_by(col(Item.position), col(Item.id))
    ).all())


def _renumber(session: Session, issue_id: int, items: list[Item] | None = None) -> None:
    for position, item in enumerate(items if items is not None else _ordered(session, issue_id)):
        if item.position != position:
            item.position = position
            session.add(item)
    session.flush()


def move_item(*, session: Session, item_id: int, direction: Literal["up", "down"]) -> bool:
    """Swap an item with its neighbour; False when it is already first/last."""
    if direction not in ("up", "down"):
        raise EditorialError("Items move up or down.", field="direction")
    item, issue = _item_for_edit(session, item_id)
    items = _ordered(session, item.issue_id)
    index = next(i for i, it in enumerate(items) if it.id == item_id)
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(items):
        return False
    items[index], items[other] = items[other], items[index]
    _renumber(session, item.issue_id, items)
    touch_issue(session=session, issue=issue)
    return True


def reorder_items(*, session: Session, issue_id: int, item_ids: Sequence[int]) -> None:
    """Put the issue's items in exactly this order (every item once)."""
    issue = _issue_for_edit(session, issue_id)
    items = {i.id or 0: i for i in _ordered(session, issue_id)}
    if sorted(item_ids) != sorted(items):
        raise EditorialError("The new order must list every item of the issue once.",
                             field="order")
    _renumber(session, issue_id, [items[i] for i in item_ids])
    touch_issue(session=session, issue=issue)


def _set_flag(session: Session, item_id: int, **flag: bool) -> Item:
    item, issue = _item_for_edit(session, item_id)
    for name, value in flag.items():
        setattr(item, name, value)
    session.add(item)
    touch_issue(session=session, issue=issue)
    return item


def set_pinned(*, session: Session, item_id: int, pinned: bool) -> Item:
    return _set_flag(session, item_id, pinned=pinned)


def set_hidden(*, session: Session, item_id: int, hidden: bool) -> Item:
    return _set_flag(session, item_id, hidden=hidden)


class ApprovalRefused(EditorialError):
    """Blocking checks failed; `failures` are the failing CheckResults."""

    def __init__(self, failures: Sequence[object]) -> None:
        super().__init__("Approval refused: " + "; ".join(
            f"{getattr(f, 'title', f)}: {getattr(f, 'reason', '')}" for f in failures
        ), field="approve")
        self.failures = list(failures)


def approve_issue(*, session: Session, issue_id: int) -> Issue:
    """Run the checks and approve; ApprovalRefused while a blocking check fails."""
    from newsletter.checks import run_checks

    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    if issue.status != IssueStatus.draft:
        raise EditorialError(f"Only drafts can be approved; this issue is {issue.status}.",
                             field="status")
    report = run_checks(session=session, issue_id=issue_id)
    blocking = [c for c in report.results if c.blocking and not c.ok]
    if blocking:
        raise ApprovalRefused(blocking)
    _set_status(session, issue, allowed_from=[IssueStatus.draft], verb="approved",
                status=IssueStatus.approved, approved_at=utcnow())
    return issue


def unapprove_issue(*, session: Session, issue_id: int) -> Issue:
    issue = _issue_for_edit(session, issue_id)
    touch_issue(session=session, issue=issue)
    return issue
