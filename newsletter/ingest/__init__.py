"""Roundup ingest: plain-text scrapes and digests, or Markdown with front matter,
into draft issues with items tagged by topic. See `text`, `markdown`, `service`."""

from newsletter.ingest.service import (
    IngestResult,
    content_hash,
    decode,
    ingest_file,
    ingest_text,
    parse_document,
)
from newsletter.ingest.types import IngestError, ParsedIssue, ParsedItem

__all__ = [
    "IngestError",
    "IngestResult",
    "ParsedIssue",
    "ParsedItem",
    "content_hash",
    "decode",
    "ingest_file",
    "ingest_text",
    "parse_document",
]
