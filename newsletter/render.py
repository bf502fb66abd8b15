"""Rendering emails: Jinja templates compiled through MJML, plus a plain-text twin.

Every email is a folder `templates/emails/NAME/` with `subject.txt`, `body.mjml` and
`body.txt`, rendered by `render_email`. The weekly digest is rendered once per
composition with markers where personal parts go (name, address, signed links);
`RenderedDigest.personalise` fills them in with plain string joins, which is what
makes sending thousands of personalised messages a second affordable.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml2html

from newsletter import branding, tokens  # branding: issue 10
from newsletter.composer import Composition, IssueContent
from newsletter.digest import DigestExtras, digest_context, load_extras
from newsletter.settings import settings

PERSONAL_KEYS = ("name", "greeting_name", "name_lead", "email", "manage_url", "unsubscribe_url")
# Per-recipient story links, click_<issue>_<item>: /r/<signed token> (the template adds
# "/link" for the story's own URL).
STORY_LINK_KEY = re.compile(r"click_(\d+)_(\d+)")
# C0 and C1 controls (NEL, U+0085, among them) and Unicode's line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class TemplateError(Exception):
    """An email template is missing or does not render; the message names the file."""


@dataclass(frozen=True)
class Recipient:
    """Who one message goes to: the only personal data a rendered digest needs."""

    subscriber_id: int
    email: str
    name: str = ""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


# --- Jinja ----------------------------------------------------------------------


def wrap_text(value: object, width: int = 72, indent: str = "") -> str:
    """Wrap each paragraph to `width` columns; long words (URLs) are never broken."""
    return _wrap(str(value), width, indent)


# An issue's paragraphs recur in hundreds of compositions per send; textwrap is
# slow enough that re-wrapping them dominated the send profile.
@lru_cache(maxsize=4096)
def _wrap(value: str, width: int, indent: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", value) if p.strip()]
    return "\n\n".join(
        textwrap.fill(
            " ".join(p.split()),
            width=width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for p in paragraphs
    )


@lru_cache(maxsize=8)
def _environment(templates_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(templates_dir) / "emails")),
        # HTML-ish templates escape; subject and text bodies are plain text.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml", "html"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        # Templates are part of a deployment: checking each file's mtime on every render
        # showed in the send profile (a render per composition, hundreds per send).
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["wrap"] = wrap_text
    return env


def environment() -> jinja2.Environment:
    return _environment(str(settings.templates_dir))


def _render_file(path: str, context: Mapping[str, Any]) -> str:
    try:
        return environment().get_template(path).render(context)
    except jinja2.TemplateNotFound as exc:
        folder = Path(settings.templates_dir) / "emails"
        raise TemplateError(f"email template not found: {folder / str(exc.name)}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or path}, line {exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{path}: {exc.message}") from exc


def compile_mjml(source: str, *, name: str = "<string>") -> str:
    try:
        # No web fonts (they cost a request and bytes) and no HTML comments beyond
        # the Outlook conditionals MJML needs: every byte counts towards Gmail's clip.
        return str(mjml2html(source, disable_comments=True, fonts={}))
    except ValueError as exc:
        raise TemplateError(f"{name}: MJML does not compile: {exc}") from exc


def one_line(value: str) -> str:
    """A subject or header value: control characters and runs of whitespace become one space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def render_email(name: str, context: Mapping[str, Any]) -> RenderedEmail:
    """Render `templates/emails/NAME/{subject.txt,body.mjml,body.txt}` with `context`."""
    context = {**branding.current().email_context(), **context}  # issue 10: caller's values win
    subject = one_line(_render_file(f"{name}/subject.txt", context))
    mjml_source = _render_file(f"{name}/body.mjml", context)
    html = compile_mjml(mjml_source, name=f"{name}/body.mjml")
    text = _tidy_text(_render_file(f"{name}/body.txt", context))
    return RenderedEmail(subject=subject, html=html, text=text)


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# --- Placeholders -----------------------------------------------------------------


class SplitTemplate:
    """A rendered string cut at placeholder markers: literal, key, literal, key, ..., literal."""

    __slots__ = ("literals", "keys", "_parts", "_slots")

    def __init__(self, rendered: str, marker: re.Pattern[str]) -> None:
        pieces = marker.split(rendered)
        self.literals: tuple[str, ...] = tuple(pieces[0::2])
        self.keys: tuple[str, ...] = tuple(pieces[1::2])
        unknown = {k for k in self.keys if k not in PERSONAL_KEYS
                   and not STORY_LINK_KEY.fullmatch(k)}
        if unknown:
            raise TemplateError(f"unknown personal placeholders: {sorted(unknown)}")
        self._parts = list(pieces)
        self._slots = tuple((2 * i + 1, key) for i, key in enumerate(self.keys))

    def fill(self, values: Mapping[str, str]) -> str:
        parts = self._parts.copy()
        for index, key in self._slots:
            parts[index] = values[key]
        return "".join(parts)

    def __len__(self) -> int:
        return sum(len(s) for s in self.literals)


class _Values(dict[str, str]):
    """A recipient's personal values; story links are signed when first asked for.

    Which stories a body links to is only known to its template, and the message
    builder fills any body with one mapping, so the link tokens are made lazily
    (once per recipient: both parts share them through `links`).
    """

    __slots__ = ("subscriber_id", "links")

    def __init__(self, values: dict[str, str], subscriber_id: int,
                 links: dict[str, str]) -> None:
        super().__init__(links)  # links the other part already made
        self.update(values)
        self.subscriber_id = subscriber_id
        self.links = links

    def __missing__(self, key: str) -> str:
        url = self.links.get(key)
        if url is None:
            match = STORY_LINK_KEY.fullmatch(key)
            if match is None:
                raise KeyError(key)
            # Token characters are URL-safe: the same string serves HTML and text.
            url = self.links[key] = tokens.url_for_token("r", tokens.make_click_token(
                self.subscriber_id, int(match.group(1)), int(match.group(2))))
        self[key] = url  # the next slot with this link is a plain dict hit
        return url


@dataclass(frozen=True)
class PersonalValues:
    """One recipient's personal parts, computed once and shared by body and headers."""

    name: str
    greeting_name: str
    email: str
    manage_url: str
    unsubscribe_url: str
    unsubscribe_token: str
    subscriber_id: int = 0
    links: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def _plain(self) -> dict[str, str]:
        return {
            "name": self.name,
            "greeting_name": self.greeting_name,
            "name_lead": f"{self.name.split(' ', 1)[0]}, " if self.name else "",
            "email": self.email,
            "manage_url": self.manage_url,
            "unsubscribe_url": self.unsubscribe_url,
        }

    def for_text(self) -> dict[str, str]:
        return _Values(self._plain(), self.subscriber_id, self.links)

    def for_html(self) -> dict[str, str]:
        escaped = {key: html_lib.escape(value, quote=True) for key, value in self._plain().items()}
        return _Values(escaped, self.subscriber_id, self.links)


def personal_values(recipient: Recipient, issue_id: int | None = None) -> PersonalValues:
    name = one_line(recipient.name)
    token = tokens.make_token(tokens.UNSUBSCRIBE, recipient.subscriber_id)
    # ?i=<issue> tells which issue's email the reader left from (for the issue's results);
    # the page believes it only if that issue was sent to that reader.
    unsubscribe_url = tokens.url_for_token("unsubscribe", token)
    if issue_id:
        unsubscribe_url += f"?i={int(issue_id)}"
    return PersonalValues(
        name=name,
        greeting_name=name.split(" ", 1)[0] if name else "there",
        email=one_line(recipient.email),
        manage_url=tokens.manage_url(recipient.subscriber_id),
        unsubscribe_url=unsubscribe_url,
        unsubscribe_token=token,
        subscriber_id=recipient.subscriber_id,
    )


@dataclass(frozen=True)
class RenderedDigest:
    """One composition rendered once; personalise() is cheap string joining."""

    issue_id: int
    composition_key: str
    subject: str
    html_template: SplitTemplate
    text_template: SplitTemplate
    test: bool = False

    def values(self, recipient: Recipient) -> PersonalValues:
        return personal_values(recipient, None if self.test else self.issue_id)

    def personalise(
        self, recipient: Recipient, values: PersonalValues | None = None
    ) -> tuple[str, str]:
        """(html, text) for one recipient; personal values are HTML-escaped in the HTML."""
        values = values or self.values(recipient)
        return self.html_template.fill(values.for_html()), self.text_template.fill(
            values.for_text()
        )


# --- The digest ---------------------------------------------------------------------


def render_digest(
    issue: IssueContent, composition: Composition, *, test: bool = False,
    extras: DigestExtras | None = None,
) -> RenderedDigest:
    """Render the digest for one composition once, leaving markers for personal parts.

    `extras` (subject, excerpts, images) are read from the database when not given.
    """
    # A fresh random marker per render: issue content cannot forge a placeholder.
    nonce = secrets.token_hex(6)
    marker = re.compile(rf"@@{nonce}:([a-z_0-9]+)@@")
    personal = {key: f"@@{nonce}:{key}@@" for key in PERSONAL_KEYS}

    def story_link(kind: str, item_id: int) -> str:
        return f"@@{nonce}:{kind}_{issue.id}_{item_id}@@"

    context = digest_context(issue, composition, personal, test=test,
                             extras=extras if extras is not None else load_extras(issue),
                             story_link=story_link)
    rendered = render_email("digest", context)
    if marker.search(rendered.subject):
        raise TemplateError("digest/subject.txt: the subject is shared, it cannot be personal")
    return RenderedDigest(
        issue_id=issue.id,
        composition_key=composition.key,
        subject=rendered.subject,
        html_template=SplitTemplate(rendered.html, marker),
        text_template=SplitTemplate(rendered.text, marker),
        test=test,
    )
