"""Dead calls to action: "Read the interview here", "Click here to read more.".

On the web page these were links; the scrape kept only their words. In an email
they point nowhere, so ingest turns a call to action into the story's link when it
has the URL (Markdown `[Read more](https://...)`) and removes it otherwise; the
pre-send checks flag any an editor types back in (`dead_ctas`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A sentence: up to an end mark (and closing quotes) before a space, or the end of
# the text ("6.18" and "Alibaba.com" are not ends).
_SENTENCES = re.compile(r".+?(?:[.!?…]+[\"'”’)]*(?=\s|$)|$)", re.DOTALL)
_CLICK_HERE = re.compile(r"\bclick (here|below|the link)\b", re.IGNORECASE)
_VERB = re.compile(
    r"^(?:\W*)(?:you can |please |and )?(read|learn|find out|watch|listen|tune in|see|discover|"
    r"explore|check out|download|register|visit|get|head|go)\b",
    re.IGNORECASE,
)
_POINTER = re.compile(
    r"\b(here|below|at the link|on our (?:web)?site|in full|(?:read|learn|find out) more)$",
    re.IGNORECASE,
)
MAX_CTA_WORDS = 16


def is_dead_cta(sentence: str) -> bool:
    """A short sentence that only sends the reader to a link ("Read more here.")."""
    text = re.sub(r"[\s.!:…]+$", "", sentence.strip())
    if not text or len(text.split()) > MAX_CTA_WORDS:
        return False
    if _CLICK_HERE.search(text):
        return True
    # "Tune in on Spotify or Apple Podcasts, and read the interview here"
    last_clause = re.split(r"[,;–—]\s*", text)[-1]
    return bool(_POINTER.search(text)) and bool(_VERB.match(last_clause) or _VERB.match(text))


def sentences(paragraph: str) -> list[str]:
    return [s for s in (m.group(0) for m in _SENTENCES.finditer(paragraph)) if s.strip()]


_URL = re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")


def _without_urls(text: str) -> str:
    return " ".join(_URL.sub("", text).split())


def _is_cta(sentence: str) -> bool:
    """A call to action, with or without the link's address written out."""
    return is_dead_cta(_without_urls(sentence))


def strip_dead_ctas(paragraph: str) -> str:
    """The paragraph without its call-to-action sentences ("" if that was all of it)."""
    kept = [s for s in sentences(paragraph) if not _is_cta(s)]
    return "".join(kept).strip()


def dead_ctas(paragraphs: Iterable[str]) -> list[str]:
    """The call-to-action sentences left in some text, as written."""
    return [s.strip() for p in paragraphs for s in sentences(p) if _is_cta(s)]


def clean_item(paragraphs: list[str], link_text: str, link_url: str
               ) -> tuple[list[str], str, str]:
    """(paragraphs, link_text, link_url) with dead calls to action gone.

    A call to action that writes its address out ("Read the interview here:
    https://...") becomes the story's link when it has none; the others are removed,
    and a call to action is kept only as the label of a real link.
    """
    if not link_url:
        candidates = [link_text, *(s for p in paragraphs for s in sentences(p))]
        for candidate in candidates:
            found = _URL.search(candidate or "")
            if found and _is_cta(candidate):
                label = _without_urls(candidate).rstrip(" .:–—-")
                link_text, link_url = label, found.group(0)
                break
    cleaned = [c for c in (strip_dead_ctas(p) for p in paragraphs) if c]
    return cleaned, (link_text if link_url else ""), link_url
