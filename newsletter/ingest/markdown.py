"""The structured format editors write: Markdown with YAML front matter.

Example (see seeds/README-format.md and seeds/example-issue.md)::

    ---
    title: "Weekly Roundup: Cainiao Opens Smart Hubs; Tmall Welcomes New Brands"
    date: 2024-05-06            # optional; `--date` overrides, else today
    intro: |                    # optional; else the paragraphs before the first item
      This week: warehouses, luxury and livestreams.
    tags: [Logistics, Luxury]   # optional, like a page's tag line
    ---

    ## Cainiao Opens Two Smart Hubs
    Topics: logistics, south-southeast-asia
    Pinned: yes

    First paragraph of the story. Lines that follow each other
    form one paragraph; a blank line starts the next.

    Second paragraph.

    [Read more](https://example.com/cainiao)

Rules:

* `## Headline` starts an item; everything until the next `## ` belongs to it.
* Within an item, a paragraph that is only `Topics: a, b` (slugs from the taxonomy),
  `Pinned: yes|no` or `Kind: news|feature` sets that property instead of being text.
  Explicit topics replace automatic tagging for that item.
* A paragraph that is only a link, `[Read more](https://...)`, becomes the item's
  link (text and URL); links must be http(s). One that is only an image,
  `![alt text](https://...)`, is the picture shown above the story in the email;
  `Excerpt: ...` is what the email shows instead of the first ~60 words.
* Text before the first `##` is the intro (unless front matter gives `intro`).
  Without front matter a leading `# Title` line is the title.
* Inline Markdown inside paragraphs (emphasis, inline links) is kept as written.
"""

from __future__ import annotations

import re
from datetime import date

import yaml

from newsletter.ingest.types import IngestError, ParsedIssue, ParsedItem

FRONT_KEYS = {"title", "date", "intro", "tags"}
LINK_LINE = re.compile(r"^\[(?P<text>[^\]]+)\]\((?P<url>\S+)\)$")
IMAGE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<url>\S+)\)$")
META_LINE = re.compile(r"^(?P<key>topics|pinned|kind|excerpt)\s*:\s*(?P<value>.*)$",
                       re.IGNORECASE)
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
YES = {"yes", "true", "y", "1", "on"}
NO = {"no", "false", "n", "0", "off", ""}


def looks_like_markdown(text: str) -> bool:
    head = text.lstrip("\ufeff")
    return (
        head.startswith("---\n")
        or head.startswith("---\r\n")
        or bool(re.search(r"^## \S", head, re.MULTILINE))
    )


def _front_matter(lines: list[str], source: str) -> tuple[dict[str, object], int]:
    """The front matter mapping and the index of the first body line."""
    if not lines or lines[0].strip() != "---":
        return {}, 0
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() in ("---", "..."))
    except StopIteration:
        raise IngestError(
            source, 1, "front matter starts with '---' but has no closing '---'"
        ) from None
    block = "\n".join(lines[1:end])
    try:
        data = yaml.safe_load(block) if block.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 2
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise IngestError(source, line, f"invalid front matter: {problem}") from exc
    if not isinstance(data, dict):
        raise IngestError(
            source, 2, "front matter must be 'key: value' lines (title, date, intro, tags)"
        )
    unknown = sorted(str(k) for k in data if k not in FRONT_KEYS)
    if unknown:
        raise IngestError(
            source,
            _key_line(lines, unknown[0], end),
            f"unknown front matter key {unknown[0]!r} (allowed: {', '.join(sorted(FRONT_KEYS))})",
        )
    return data, end + 1


def _key_line(lines: list[str], key: str, end: int) -> int:
    for i in range(1, end):
        if re.match(rf"^{re.escape(key)}\s*:", lines[i]):
            return i + 1
    return 1


def _paragraphs(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Blank-line separated paragraphs, soft-wrapped lines joined with a space."""
    out: list[tuple[int, str]] = []
    start, current = 0, list[str]()
    for number, line in [*lines, (0, "")]:
        if line.strip():
            if not current:
                start = number
            current.append(line.strip())
        elif current:
            out.append((start, " ".join(current)))
            current = []
    return out


def _build_item(source: str, line: int, headline: str, body: list[tuple[int, str]]) -> ParsedItem:
    item = ParsedItem(headline=headline, paragraphs=[], line=line)
    # Property lines count on their own line, even right under the heading with no
    # blank line between them; they then act as paragraph breaks.
    entries: list[tuple[int, str, bool]] = [
        (n, t.strip(), True) for n, t in body if META_LINE.match(t.strip())
    ]
    text_lines = [(n, "" if META_LINE.match(t.strip()) else t) for n, t in body]
    entries += [(n, t, False) for n, t in _paragraphs(text_lines)]
    for number, text, is_meta in sorted(entries):
        meta = META_LINE.match(text) if is_meta else None
        link = LINK_LINE.match(text)
        image = IMAGE_LINE.match(text) if not is_meta else None
        if meta and meta.group("key").casefold() == "excerpt":
            item.excerpt = meta.group("value").strip()
        elif image:
            url = image.group("url")
            if not re.match(r"^https?://[^\s/]+", url):
                raise IngestError(source, number, f"image must be an http(s) URL, got {url!r}")
            item.image_url, item.image_alt = url, image.group("alt").strip()
        elif meta:
            key, value = meta.group("key").casefold(), meta.group("value").strip()
            if key == "topics":
                slugs = [s.strip() for s in value.split(",") if s.strip()]
                bad = [s for s in slugs if not SLUG.match(s)]
                if bad or not slugs:
                    raise IngestError(
                        source, number, f"topics must be comma-separated slugs, got {value!r}"
                    )
                item.topics, item.topics_line = slugs, number
            elif key == "pinned":
                if value.casefold() not in YES | NO:
                    raise IngestError(source, number, f"pinned must be yes or no, got {value!r}")
                item.pinned = value.casefold() in YES
            else:
                if value.casefold() not in ("news", "feature"):
                    raise IngestError(
                        source, number, f"kind must be news or feature, got {value!r}"
                    )
                item.kind = value.casefold()
        elif link:
            if item.link_url:
                raise IngestError(source, number, "item has more than one link line")
            url = link.group("url")
            if not re.match(r"^https?://[^\s/]+", url):
                raise IngestError(source, number, f"link must be an http(s) URL, got {url!r}")
            item.link_text, item.link_url = link.group("text").strip(), url
        else:
            item.paragraphs.append(text)
    if not item.paragraphs:
        raise IngestError(source, line, "item has a headline but no body")
    return item


def parse_markdown(text: str, *, source_name: str) -> ParsedIssue:
    """Parse the structured format. Raises IngestError naming the file and line."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not "".join(lines).strip():
        raise IngestError(source_name, 1, "file is empty")
    meta, first = _front_matter(lines, source_name)

    title = meta.get("title")
    if title is not None and not isinstance(title, str | int | float):
        raise IngestError(source_name, _key_line(lines, "title", first), "title must be text")
    title = " ".join(str(title).split()) if title is not None else ""

    issue_date = meta.get("date")
    if issue_date is not None:
        if isinstance(issue_date, str):
            try:
                issue_date = date.fromisoformat(issue_date.strip())
            except ValueError:
                issue_date = None
        if not isinstance(issue_date, date):
            raise IngestError(
                source_name, _key_line(lines, "date", first), "date must be YYYY-MM-DD"
            )

    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list):
        raise IngestError(source_name, _key_line(lines, "tags", first), "tags must be a list")

    intro_lines: list[tuple[int, str]] = []
    items: list[ParsedItem] = []
    heading: tuple[int, str] | None = None
    body: list[tuple[int, str]] = []
    for index in range(first, len(lines)):
        number, line = index + 1, lines[index]
        if line.startswith("## "):
            if heading:
                items.append(_build_item(source_name, heading[0], heading[1], body))
            headline = line[3:].strip().rstrip("#").strip()
            if not headline:
                raise IngestError(source_name, number, "'## ' must be followed by a headline")
            if len(headline) > 500:
                raise IngestError(source_name, number, "headline is longer than 500 characters")
            heading, body = (number, headline), []
        elif heading:
            body.append((number, line))
        elif line.startswith("# ") and not title:
            title = line[2:].strip()
        else:
            intro_lines.append((number, line))
    if heading:
        items.append(_build_item(source_name, heading[0], heading[1], body))

    if not items:
        raise IngestError(
            source_name, first + 1, "no items found: start each item with a '## Headline' line"
        )
    if not title:
        raise IngestError(source_name, 1, "no title: add 'title:' to the front matter")
    if len(title) > 500:
        raise IngestError(
            source_name, _key_line(lines, "title", first), "title is longer than 500 characters"
        )
    intro = meta.get("intro")
    intro_text = (
        "\n\n".join(" ".join(p.split()) for p in str(intro).split("\n\n") if p.strip())
        if intro
        else "\n\n".join(t for _, t in _paragraphs(intro_lines))
    )
    return ParsedIssue(
        title=title,
        intro=intro_text,
        items=items,
        tags=[str(t) for t in tags],
        issue_date=issue_date,
    )
