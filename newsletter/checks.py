"""Pre-approval checks, and the audience analysis they (and the preview) share.

`audiences` groups confirmed subscribers by what they would receive this week: one
entry per distinct composition (same key, same email) plus one for "only my topics"
subscribers who get nothing. Each composition is rendered once and checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

from sqlalchemy import exists
from sqlmodel import Session, col, select

from newsletter.composer import Composition, IssueContent, compose, load_issue
from newsletter.digest import load_extras
from newsletter.ingest.cta import dead_ctas
from newsletter.message import MessageFactory
from newsletter.models import Subscriber, SubscriberStatus, Suppression
from newsletter.render import PersonalValues, Recipient, RenderedDigest, render_digest
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail clips messages whose HTML is larger
SUBJECT_WARN = 70  # phones cut the subject around here (ingest proposes at most this)
SUBJECT_MAX = 120
PREVIEW_ADDRESS = "preview@roundup.invalid"


@dataclass(frozen=True)
class Reader:
    """Who a composition is rendered for: a subscriber, or a stand-in for a topic set."""

    subscriber_id: int
    email: str
    name: str = ""
    followed: tuple[str, ...] = ()
    only_my_topics: bool = False

    @property
    def recipient(self) -> Recipient:
        return Recipient(subscriber_id=self.subscriber_id, email=self.email, name=self.name)


@dataclass
class Audience:
    """Subscribers who get the same email (composition None: they get nothing)."""

    composition: Composition | None
    readers: list[Reader] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.composition.key if self.composition is not None else "nothing"

    @property
    def count(self) -> int:
        return len(self.readers)


def readers(*, session: Session) -> list[Reader]:
    """Every subscriber a send would go to now, with their followed topics.

    The same people `delivery.plan_send` writes rows for: confirmed, not paused and
    not suppressed, so "N subscribers get this version" is what the send will do.
    """
    suppressed = select(Suppression.email).where(col(Suppression.email) == Subscriber.email)
    subs = session.exec(
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.confirmed, col(Subscriber.paused).is_(False),
               ~exists(suppressed))
        .order_by(col(Subscriber.id))
    ).all()
    # Many readers: one scan of the whole table beats a huge IN list.
    followed = topics_by_subscriber(
        session=session, subscriber_ids=None if len(subs) > 500 else [s.id for s in subs
                                                                       if s.id is not None])
    return [
        Reader(subscriber_id=s.id or 0, email=s.email, name=s.name,
               followed=tuple(followed.get(s.id or 0, ())), only_my_topics=s.only_my_topics)
        for s in subs
    ]


def compose_for(issue: IssueContent, reader: Reader) -> Composition | None:
    return compose(issue, followed=reader.followed, only_my_topics=reader.only_my_topics,
                   max_items=settings.digest_max_items)


def audiences(*, issue: IssueContent, people: Sequence[Reader]) -> list[Audience]:
    """Group readers by composition, biggest group first; composing once per topic set."""
    by_choice: dict[tuple[tuple[str, ...], bool], Composition | None] = {}
    groups: dict[str, Audience] = {}
    for reader in people:
        choice = (reader.followed, reader.only_my_topics)
        if choice not in by_choice:
            by_choice[choice] = compose_for(issue, reader)
        composition = by_choice[choice]
        key = composition.key if composition is not None else "nothing"
        groups.setdefault(key, Audience(composition)).readers.append(reader)
    return sorted(groups.values(), key=lambda a: (a.composition is None, -a.count))


# --- Rendering one preview --------------------------------------------------------


@dataclass(frozen=True)
class RenderedPreview:
    """One composition as a reader would get it: bodies, subject and the real headers."""

    reader: Reader
    composition: Composition
    digest: RenderedDigest
    html: str
    text: str
    headers: list[tuple[str, str]]
    data: bytes
    # The personal values (links with signed tokens) the bodies were filled with;
    # tokens carry a timestamp, so checks must compare against these, not fresh ones.
    values: PersonalValues

    @property
    def subject(self) -> str:
        return self.digest.subject

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


def render_preview(
    issue: IssueContent, composition: Composition, reader: Reader, *, test: bool = False
) -> RenderedPreview:
    digest = render_digest(issue, composition, test=test)
    values = digest.values(reader.recipient)
    html, text = digest.personalise(reader.recipient, values)
    # The real message the delivery pipeline would send, for its headers.
    data = MessageFactory(digest=digest, issue_id=digest.issue_id).build(reader.recipient).data
    parsed = BytesParser(policy=default_policy).parsebytes(data, headersonly=True)
    headers = [(k, str(v)) for k, v in parsed.items()]
    return RenderedPreview(reader=reader, composition=composition, digest=digest, html=html,
                           text=text, headers=headers, data=data, values=values)


def _people(n: int) -> str:
    return f"{n} subscriber" if n == 1 else f"{n} subscribers"


# --- Checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    name: str
    title: str
    ok: bool
    reason: str
    blocking: bool = True
    details: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if self.ok:
            return "pass"
        return "fail" if self.blocking else "warn"


@dataclass
class CheckReport:
    issue: IssueContent
    audiences: list[Audience]
    results: list[CheckResult]

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.blocking and not r.ok]

    @property
    def approvable(self) -> bool:
        return not self.blocking_failures


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and "href" in values:
            self.links.append(values["href"] or "")
        elif tag == "img":
            self.images.append(values)


def scan_html(html: str) -> _Scan:
    scan = _Scan()
    scan.feed(html)
    scan.close()
    return scan


def link_problem(url: str) -> str:
    """Why a link in an email is malformed, or "" when it is fine."""
    if not url or url != url.strip() or any(c.isspace() for c in url):
        return "empty or contains spaces"
    if re.fullmatch(r"#[A-Za-z][\w-]*", url):
        return ""  # a story further down the email ("In this issue")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises for a port out of range or not a number
    except ValueError as exc:
        return str(exc)
    if parts.scheme == "mailto":
        return "" if "@" in parts.path else "mailto link without an address"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    if not host:
        return "no host name"
    return ""


def _label(audience: Audience) -> str:
    return f"version for {_people(audience.count)}"


def _samples(issue: IssueContent, groups: list[Audience]) -> list[tuple[str, Composition, Reader]]:
    """One (label, composition, reader) per distinct email, plus the no-topics version."""
    out: list[tuple[str, Composition, Reader]] = []
    seen: set[str] = set()
    for audience in groups:
        if audience.composition is not None and audience.key not in seen:
            seen.add(audience.key)
            out.append((_label(audience), audience.composition, audience.readers[0]))
    everyone = Reader(subscriber_id=0, email=PREVIEW_ADDRESS)
    default = compose_for(issue, everyone)
    if default is not None and default.key not in seen:
        out.append(("version for readers without topics", default, everyone))
    return out


def run_checks(*, session: Session, issue_id: int) -> CheckReport:
    issue = load_issue(session=session, issue_id=issue_id)
    people = readers(session=session)
    groups = audiences(issue=issue, people=people)
    results: list[CheckResult] = []

    results.append(CheckResult(
        "items", "Has items", bool(issue.items),
        f"{len(issue.items)} visible item(s)." if issue.items
        else "Every item is hidden or deleted: there is nothing to send."))

    previews = [
        (label, render_preview(issue, composition, reader))
        for label, composition, reader in _samples(issue, groups)
    ]

    too_big = [f"{label}: {p.html_bytes / 1024:.1f} KB" for label, p in previews
               if p.html_bytes >= GMAIL_CLIP_BYTES]
    largest = max((p.html_bytes for _, p in previews), default=0)
    results.append(CheckResult(
        "size", "HTML under Gmail's 102 KB clipping limit", not too_big,
        (f"The only version is {largest / 1024:.1f} KB." if len(previews) == 1 else
         f"Largest of {len(previews)} versions is {largest / 1024:.1f} KB.")
        if not too_big else
        f"{len(too_big)} version{'' if len(too_big) == 1 else 's'} would be clipped by Gmail.",
        details=tuple(too_big)))

    bad_links: dict[str, str] = {}
    missing_alt: list[str] = []
    for _label_text, p in previews:
        scan = scan_html(p.html)
        for url in scan.links:
            problem = link_problem(url)
            if problem:
                bad_links.setdefault(url, problem)
        for image in scan.images:
            if not (image.get("alt") or "").strip():
                missing_alt.append(image.get("src") or "(no src)")
    for item in issue.items:
        if item.link_url:
            problem = link_problem(item.link_url)
            if problem:
                bad_links.setdefault(item.link_url, f"{problem} (item “{item.headline}”)")
    results.append(CheckResult(
        "links", "Every link is well-formed", not bad_links,
        "All links are absolute http(s) or mailto links." if not bad_links
        else f"{len(bad_links)} malformed link(s).",
        details=tuple(f"{url[:200]} — {why}" for url, why in bad_links.items())))
    results.append(CheckResult(
        "alt", "Every image has alt text", not missing_alt,
        "No image lacks alt text." if not missing_alt
        else f"{len(missing_alt)} image(s) without alt text.",
        details=tuple(dict.fromkeys(missing_alt))))

    results.append(_unsubscribe_check(previews))
    results.append(_subject_check(previews))

    results.append(_cta_check(issue))

    untagged = [item.headline for item in issue.items if not item.topics and not item.pinned]
    results.append(CheckResult(
        "topics", "Every item has a topic", not untagged,
        "Every unpinned item carries at least one topic." if not untagged
        else f"{len(untagged)} item(s) have no topic: readers following topics will "
        "only see them under “Also this week”, and “only my topics” readers never.",
        blocking=False, details=tuple(untagged)))

    empty = [a for a in groups if a.composition is not None and not a.composition.items]
    results.append(CheckResult(
        "empty", "No subscriber gets an empty email", not empty,
        "Every subscriber's email has at least one story." if not empty
        else f"{_people(sum(a.count for a in empty))} would get an email with no stories.",
        details=tuple(r.email for a in empty for r in a.readers[:20])))
    nothing = [r for a in groups if a.composition is None for r in a.readers]
    results.append(CheckResult(
        "skipped", "Nobody is left without an email", not nothing,
        "Every subscriber gets this issue." if not nothing
        else f"{_people(len(nothing))} with “only my topics” "
        f"{'gets' if len(nothing) == 1 else 'get'} nothing this week.",
        blocking=False, details=tuple(r.email for r in nothing[:50])))
    return CheckReport(issue=issue, audiences=groups, results=results)


def _unsubscribe_check(previews: list[tuple[str, RenderedPreview]]) -> CheckResult:
    problems: list[str] = []
    for label, p in previews:
        if p.values.unsubscribe_url not in p.html.replace("&amp;", "&"):
            problems.append(f"{label}: no unsubscribe link in the HTML part")
        if p.values.unsubscribe_url not in p.text:
            problems.append(f"{label}: no unsubscribe link in the text part")
        names = {k.lower(): v for k, v in p.headers}
        if "list-unsubscribe" not in names:
            problems.append(f"{label}: no List-Unsubscribe header")
        if names.get("list-unsubscribe-post", "").strip() != "List-Unsubscribe=One-Click":
            problems.append(f"{label}: no List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return CheckResult(
        "unsubscribe", "Unsubscribe link and List-Unsubscribe headers", not problems,
        "Both parts link to unsubscribe; one-click List-Unsubscribe headers are set."
        if not problems else f"{len(problems)} problem(s) with unsubscribing.",
        details=tuple(problems))


def _subject_check(previews: list[tuple[str, RenderedPreview]]) -> CheckResult:
    subjects = {p.subject for _, p in previews}
    if not subjects:
        return CheckResult("subject", "Subject length", False, "No version to take a subject from.")
    subject = max(subjects, key=len)
    length = len(subject)
    if not subject.strip():
        return CheckResult("subject", "Subject length", False, "The subject is empty.")
    if length > SUBJECT_MAX:
        return CheckResult("subject", "Subject length", False,
                           f"The subject has {length} characters; keep it under {SUBJECT_MAX}.")
    if length > SUBJECT_WARN:
        return CheckResult(
            "subject", "Subject length", False,
            f"The subject has {length} characters; inboxes cut it after about {SUBJECT_WARN}.",
            blocking=False, details=(subject,))
    return CheckResult("subject", "Subject length", True,
                       f"{length} characters: “{subject}”.", details=())


def _cta_check(issue: IssueContent) -> CheckResult:
    """Calls to action that point nowhere ("Read the interview here" with no link)."""
    excerpts = load_extras(issue).items
    found: list[str] = []
    for item in issue.items:
        extra = excerpts.get(item.id)
        texts = [*item.paragraphs, extra.excerpt if extra else ""]
        if item.link_text and not item.link_url:
            texts.append(item.link_text)
        found += [f"“{item.headline}”: “{cta}”" for cta in dead_ctas(texts)]
    return CheckResult(
        "cta", "No dead calls to action", not found,
        "No story says “read more here” without a link." if not found
        else f"{len(found)} call(s) to action point nowhere: give the story its link "
        "(Link URL) or delete the words. Every story already links to its full text.",
        blocking=False, details=tuple(found))


def message_headers(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default_policy).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg
