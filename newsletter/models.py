"""Database tables. One SQLModel family per entity: Base, table, Public (API view)."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now: SQLModel stores datetimes as UTC and refuses naive ones."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A datetime read back from the database, aware: SQLite returns them naive (UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class IssueStatus(enum.StrEnum):
    draft = "draft"
    approved = "approved"
    scheduled = "scheduled"
    sending = "sending"
    paused = "paused"
    sent = "sent"
    cancelled = "cancelled"


class SubscriberStatus(enum.StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"
    bounced = "bounced"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # planned, waiting for a batch task
    sending = "sending"  # claimed by a worker until lease_until
    sent = "sent"  # the server answered 250
    failed = "failed"  # permanent (5xx) or out of retries
    skipped = "skipped"  # nothing to send: "only my topics" and no match
    suppressed = "suppressed"  # unsubscribed/bounced/paused by send time
    cancelled = "cancelled"  # the editor cancelled the send


class EventKind(enum.StrEnum):
    signed_up = "signed_up"
    confirmed = "confirmed"
    topics_changed = "topics_changed"
    preferences_changed = "preferences_changed"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    deleted = "deleted"
    confirmation_sent = "confirmation_sent"
    suppressed = "suppressed"  # an editor put the address on the suppression list
    unsuppressed = "unsuppressed"
    welcome_sent = "welcome_sent"


# --- Topics ------------------------------------------------------------------


class TopicBase(SQLModel):
    """Fields every view of a topic shares."""

    slug: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=120)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Topic(TopicBase, table=True):
    """A taxonomy entry that items are tagged with and subscribers follow."""

    id: int | None = Field(default=None, primary_key=True)
    # one keyword per line
    keywords: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class TopicPublic(TopicBase):
    """A topic as the API and CLI show it."""

    id: int


# --- Issues and items --------------------------------------------------------


class IssueBase(SQLModel):
    """Fields every view of an issue shares."""

    title: str = Field(max_length=500)
    intro: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    issue_date: date


class Issue(IssueBase, table=True):
    """One weekly roundup: the unit that is previewed, approved and sent."""

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default=IssueStatus.draft, max_length=16, index=True)
    source_name: str = Field(default="", max_length=500)
    source_hash: str | None = Field(default=None, max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    approved_at: datetime | None = None
    scheduled_for: datetime | None = None  # UTC
    send_started_at: datetime | None = None
    sent_at: datetime | None = None
    # Why the issue is paused or stopped, in words a person can act on (a relay's own
    # reply, a bounce rate); empty when nothing is wrong.
    status_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # "Deliver at this wall time in each reader's time zone" (empty: everyone at once).
    local_send_date: date | None = None
    local_send_time: str = Field(default="", max_length=5)  # HH:MM
    # The email's subject line, proposed at ingest from the top stories (issue 9);
    # empty means "the title".
    subject: str = Field(default="", max_length=200)


class IssuePublic(IssueBase):
    """An issue as the API and CLI show it."""

    id: int
    status: str


class ItemBase(SQLModel):
    """Fields every view of an item shares."""

    headline: str = Field(max_length=500)
    # paragraphs separated by a blank line
    body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    link_text: str = Field(default="", max_length=500)
    link_url: str = Field(default="", max_length=2000)
    kind: str = Field(default="news", max_length=16)  # news | feature
    # What the email shows of the story (issue 9): empty means its first ~60 words.
    excerpt: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    image_url: str = Field(default="", max_length=2000)  # optional picture above the story
    image_alt: str = Field(default="", max_length=500)


class Item(ItemBase, table=True):
    """A story in an issue, in the editor's order."""

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    position: int = 0
    pinned: bool = False
    hidden: bool = False


class ItemPublic(ItemBase):
    """An item as the API and CLI show it."""

    id: int
    position: int
    pinned: bool
    topics: list[str] = []


class ItemTopic(SQLModel, table=True):
    """An item's topic tag; `source` says whether ingest or an editor set it."""

    item_id: int = Field(foreign_key="item.id", primary_key=True)
    topic_id: int = Field(foreign_key="topic.id", primary_key=True)
    source: str = Field(default="auto", max_length=16)  # auto | editor


# --- Subscribers -------------------------------------------------------------


class SubscriberBase(SQLModel):
    """Fields a subscriber can set themselves."""

    email: str = Field(max_length=320, unique=True, index=True)  # normalised
    name: str = Field(default="", max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    only_my_topics: bool = False


class Subscriber(SubscriberBase, table=True):
    """Someone on the list, whatever their status."""

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default=SubscriberStatus.pending, max_length=16, index=True)
    paused: bool = False
    source: str = Field(default="cli", max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    confirmation_sent_at: datetime | None = None  # for the sign-up cooldown
    track_clicks: bool = True  # "Don't record my clicks" in the preference centre


class SubscriberPublic(SubscriberBase):
    """A subscriber as the API and CLI show it."""

    id: int
    status: str
    topics: list[str] = []


class SubscriberTopic(SQLModel, table=True):
    """A topic a subscriber follows."""

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True)
    topic_id: int = Field(foreign_key="topic.id", primary_key=True)


class Event(SQLModel, table=True):
    """Append-only log of what happened to a subscriber (kept, anonymised, after deletion)."""

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(default=None, index=True)
    issue_id: int | None = Field(default=None, index=True)  # the issue it concerns, if any
    kind: str = Field(max_length=32, index=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    source: str = Field(default="", max_length=32)
    data: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))  # JSON


class Suppression(SQLModel, table=True):
    """An address we must never mail again (hard bounce or complaint)."""

    email: str = Field(max_length=320, primary_key=True)
    reason: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


# --- Delivery ledger ---------------------------------------------------------


class Delivery(SQLModel, table=True):
    """One row per (issue, subscriber): the ledger that makes sending exactly-once."""

    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id", name="uq_delivery_issue_subscriber"),
        # A batch's pending rows, for claims; the batch last so counts by status use it
        # too (migration 0150, issue 7).
        Index("ix_delivery_issue_status_batch", "issue_id", "status", "batch"),
        # Leases held right now, for the sweep (migration 0117, issue 7).
        Index("ix_delivery_lease_held", "lease_until",
              postgresql_where=text("status = 'sending'"),
              sqlite_where=text("status = 'sending'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No foreign keys: their per-row checks were half the cost of planning a send, and
    # only plan_send writes rows, from issues and subscribers that are never deleted
    # (migration 0117, issue 7).
    issue_id: int
    subscriber_id: int = Field(index=True)
    status: str = Field(default=DeliveryStatus.pending, max_length=16)
    composition_key: str = Field(default="", max_length=64)  # same key, same rendered email
    batch: int = 0
    attempts: int = 0
    lease_until: datetime | None = None
    claim_token: str = Field(default="", max_length=36, index=True)  # which task holds the lease
    next_attempt_at: datetime | None = None  # 4xx backoff: not before this time
    message_id: str = Field(default="", max_length=255, index=True)  # bounces find rows by it
    error: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class DeliveryPublic(SQLModel):
    """Counts by state for one issue."""

    issue_id: int
    counts: dict[str, int]


# --- Engagement (issue 9) ------------------------------------------------------------


class Click(SQLModel, table=True):
    """A reader opened a story from an email: recorded once per (subscriber, issue, item)."""

    __table_args__ = (UniqueConstraint("subscriber_id", "issue_id", "item_id",
                                       name="uq_click_subscriber_issue_item"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(index=True)  # no FK: clicks outlive an erased subscriber
    issue_id: int = Field(index=True)
    item_id: int
    at: datetime = Field(default_factory=utcnow, index=True)


# --- Audience (issue 10) ---------------------------------------------------------------


class ImportJob(SQLModel, table=True):
    """A CSV import started from the console: progress, and the rows it refused."""

    id: int | None = Field(default=None, primary_key=True)
    editor_id: int | None = None
    filename: str = Field(default="", max_length=200)
    status: str = Field(default="queued", max_length=16)  # queued | running | done | failed
    confirmed: bool = False  # rows are imported as confirmed (they agreed elsewhere)
    total: int = 0
    done: int = 0
    added: int = 0
    rejected: int = 0
    errors_csv: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    message: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class EditorSession(SQLModel, table=True):
    """A logged-in browser of an editor: listed on their account page, ended one by one."""

    id: str = Field(primary_key=True, max_length=32)  # random; named in the session cookie
    editor_id: int = Field(foreign_key="editor.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=300)
    revoked_at: datetime | None = None


class IssueUndo(SQLModel, table=True):
    """The issue as it was before the console's last change to it: one step of undo."""

    issue_id: int = Field(foreign_key="issue.id", primary_key=True)
    label: str = Field(default="", max_length=300)  # what the change was, for the notice
    snapshot: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    # The issue's updated_at right after the change: undo only while nothing else changed.
    after: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)


# --- Inbound mail and bounce policy (issue 8) -------------------------------------------


class InboundMessage(SQLModel, table=True):
    """A message that came back (bounce, complaint, unsubscribe, auto-reply, webhook event),
    recorded once: the unique key makes processing the same message twice a no-op."""

    id: int | None = Field(default=None, primary_key=True)
    # sha256 of the caller's key (the Message-ID, a provider's event id)
    key: str = Field(max_length=64, unique=True, index=True)
    ref: str = Field(default="", max_length=255)  # the caller's key, shortened, for people
    source: str = Field(default="", max_length=32)  # smtp, imap, ses, postmark, ...
    outcome: str = Field(default="", max_length=32, index=True)  # Outcome.kind
    subscriber_id: int | None = Field(default=None, index=True)
    issue_id: int | None = Field(default=None, index=True)
    detail: str = Field(default="", max_length=1000)
    received_at: datetime = Field(default_factory=utcnow, index=True)
# --- Branding (issue 10) -------------------------------------------------------------


class SiteSetting(SQLModel, table=True):
    """One console setting (newsletter name, sender, logo...) overriding the environment."""

    key: str = Field(max_length=64, primary_key=True)
    value: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=320)  # the editor's email


class BrandingAsset(SQLModel, table=True):
    """An uploaded logo's bytes: DATA_DIR/branding/ is only a cache of these, so every
    web machine (and one whose disk was wiped) can serve logos that emails point at."""

    filename: str = Field(max_length=64, primary_key=True)  # <sha256 prefix>.<ext>
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
