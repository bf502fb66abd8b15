"""`newsletter inbound --imap URL`: read bounces from a mailbox when the MX is elsewhere.

Unlike mailbox modes that delete what they read (listmonk's POP mode loses unrelated
mail), this poller only ever changes messages it has recorded: it reads with BODY.PEEK
(nothing is marked seen), skips everything not addressed to a VERP address or the
unsubscribe address, and MOVEs the recorded ones to IMAP_PROCESSED_FOLDER. It never
deletes, and never expunges anything but the UIDs it moved.
"""

from __future__ import annotations

import email
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import getaddresses
from urllib.parse import unquote, urlsplit

from newsletter.inbound import parse
from newsletter.inbound.process import process_message
from newsletter.settings import settings

log = logging.getLogger("newsletter.inbound")

# Where mail servers put the envelope recipient, most reliable first.
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To",
                      "Cc")
FETCH_CHUNK = 100


class ImapUrlError(ValueError):
    """An --imap URL we cannot use."""


@dataclass(frozen=True)
class ImapTarget:
    ssl: bool
    host: str
    port: int
    user: str
    folder: str


def parse_imap_url(url: str) -> ImapTarget:
    """imaps://user@host[:port]/FOLDER (or imap:// for a local server without TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise ImapUrlError(f"{url!r}: use imaps://user@host/INBOX (or imap:// without TLS)")
    if not parts.hostname or not parts.username:
        raise ImapUrlError(f"{url!r}: the URL needs a user and a host, e.g. "
                           "imaps://bounces@mail.example.com/INBOX")
    if parts.password:
        raise ImapUrlError("put the password in IMAP_PASSWORD, not in the URL "
                           "(URLs end up in process lists and logs)")
    ssl = parts.scheme == "imaps"
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapTarget(ssl=ssl, host=parts.hostname, port=parts.port or (993 if ssl else 143),
                      user=unquote(parts.username), folder=folder)


@dataclass
class PollReport:
    """One pass over the mailbox."""

    seen: int = 0  # messages in the folder
    ours: int = 0  # addressed to us, processed
    moved: int = 0
    skipped: int = 0  # not ours: left exactly as they were
    kinds: dict[str, int] = field(default_factory=dict)


def recipient_of(header_bytes: bytes) -> str | None:
    """The VERP or unsubscribe address a stored message was delivered to, if any."""
    msg = email.message_from_bytes(header_bytes)
    for name in _RECIPIENT_HEADERS:
        for _display, address in getaddresses([str(v) for v in msg.get_all(name) or []]):
            if parse.verp_of(address) is not None or parse.is_unsubscribe_address(address):
                return address
    return None


class ImapPoller:
    """A logged-in connection; `poll` processes the folder once."""

    def __init__(self, target: ImapTarget, *, password: str, processed_folder: str,
                 timeout: float = 30.0) -> None:
        self.target = target
        self.password = password
        self.processed_folder = processed_folder
        self.timeout = timeout
        self.client: object | None = None
        self._not_ours: set[tuple[int, int]] = set()  # (uidvalidity, uid) already checked

    def connect(self) -> None:
        from imapclient import IMAPClient

        client = IMAPClient(self.target.host, port=self.target.port, ssl=self.target.ssl,
                            timeout=self.timeout)
        client.login(self.target.user, self.password)
        if not client.folder_exists(self.processed_folder):
            client.create_folder(self.processed_folder)
            log.info("created the IMAP folder %s", self.processed_folder)
        self.client = client

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.logout()  # type: ignore[attr-defined]
            except Exception:  # already gone: nothing to tidy
                log.debug("IMAP logout failed", exc_info=True)

    def poll(self) -> PollReport:
        if self.client is None:
            self.connect()
        client = self.client
        assert client is not None
        report = PollReport()
        selected = client.select_folder(self.target.folder)  # type: ignore[attr-defined]
        validity = int(selected.get(b"UIDVALIDITY", 0))
        uids = client.search(["ALL"])  # type: ignore[attr-defined]
        report.seen = len(uids)
        todo = [u for u in uids if (validity, u) not in self._not_ours]
        report.skipped = len(uids) - len(todo)
        for start in range(0, len(todo), FETCH_CHUNK):
            chunk = todo[start:start + FETCH_CHUNK]
            # PEEK: reading must not set \\Seen on anybody's mail.
            heads = client.fetch(chunk, ["BODY.PEEK[HEADER]"])  # type: ignore[attr-defined]
            ours = {}
            for uid, data in heads.items():
                recipient = recipient_of(data.get(b"BODY[HEADER]", b""))
                if recipient is None:
                    self._not_ours.add((validity, uid))
                    report.skipped += 1
                else:
                    ours[uid] = recipient
            if not ours:
                continue
            bodies = client.fetch(list(ours), ["BODY.PEEK[]"])  # type: ignore[attr-defined]
            done = []
            for uid, recipient in ours.items():
                raw = bodies.get(uid, {}).get(b"BODY[]")
                if raw is None:
                    continue
                result = process_message(bytes(raw), recipient=recipient, source="imap")
                report.ours += 1
                report.kinds[result.kind] = report.kinds.get(result.kind, 0) + 1
                done.append(uid)  # recorded and committed: safe to move
            if done:
                self._move(done)
                report.moved += len(done)
        return report

    def _move(self, uids: list[int]) -> None:
        client = self.client
        assert client is not None
        caps = client.capabilities()  # type: ignore[attr-defined]
        if b"MOVE" in caps:
            client.move(uids, self.processed_folder)  # type: ignore[attr-defined]
            return
        client.copy(uids, self.processed_folder)  # type: ignore[attr-defined]
        client.add_flags(uids, [b"\\Deleted"], silent=True)  # type: ignore[attr-defined]
        if b"UIDPLUS" in caps:
            # UID EXPUNGE removes only these; a plain EXPUNGE would also remove any
            # message a person flagged \Deleted, which is not ours to decide.
            client.uid_expunge(uids)  # type: ignore[attr-defined]


def run_poller(url: str, *, interval: float, once: bool = False,
               report: Callable[[PollReport], None] | None = None) -> None:
    """Poll every `interval` seconds until interrupted; reconnect after errors."""
    target = parse_imap_url(url)
    poller = ImapPoller(target, password=settings.imap_password,
                        processed_folder=settings.imap_processed_folder)
    try:
        while True:
            try:
                result = poller.poll()
                log.info("IMAP %s/%s: %d messages, %d ours processed and moved to %s, "
                         "%d left alone", target.host, target.folder, result.seen,
                         result.moved, settings.imap_processed_folder, result.skipped)
                if report is not None:
                    report(result)
            except Exception:
                if once:
                    raise
                log.exception("IMAP poll of %s failed; retrying in %s s", target.host, interval)
                poller.close()
            if once:
                return
            time.sleep(interval)
    finally:
        poller.close()
