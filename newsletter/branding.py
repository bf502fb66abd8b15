"""Branding: the newsletter's name, logo, accent colour, sender, reply-to and footer address.

Owners set these in the console (/editor/settings). Each value is a `SiteSetting` row;
a value with no row falls back to its environment variable (MAIL_FROM_NAME, ...), so
a fresh install looks exactly as its environment says until someone saves the form.

`current()` is read on the send path (once per batch and per confirmation email), so
it keeps the database rows for a few seconds per process; saving forgets them at once
in the saving process, and other processes see the change within CACHE_SECONDS.

Logos are PNG, JPEG or GIF (never SVG: it can carry script), 200 KB at most, named by
their content hash (so they can be cached forever), stored in the database
(`BrandingAsset`) and cached under DATA_DIR/branding/, and served by the web app at
/branding/<file> (newsletter/web/branding.py). Old logos are kept: emails already in
inboxes still point at them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from newsletter import db
from newsletter.errors import UserError
from newsletter.models import BrandingAsset, SiteSetting, utcnow
from newsletter.settings import Settings, settings
from newsletter.subscribers import SubscriberError, normalise_email

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
LOGO_MAX_BYTES = 200 * 1024
LOGO_MAX_WIDTH = 240  # px shown in emails: wide enough for a word mark
LOGO_MAX_HEIGHT = 64  # px: a logo, not a banner
DEFAULT_LOGO_WIDTH = 160  # px, for a LOGO_URL whose size we don't know
DEFAULT_ACCENT = "#1a56db"
MIN_CONTRAST = 4.5  # WCAG AA for normal text
MAX_NAME = 100
MAX_POSTAL = 300
LOGO_KEY = "logo"  # value: a file under DATA_DIR/branding/, or "" for "no logo"
LOGO_WIDTH_KEY = "logo_width"
LOGO_PATH = "/branding/"
LOGO_FILE = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif)$")
LOGO_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# Domains reserved for examples and tests (RFC 2606, RFC 6761): mail to them goes nowhere.
EXAMPLE_DOMAINS = ("example", "example.com", "example.org", "example.net", "test",
                   "invalid", "localhost")
EXAMPLE_POSTAL_ADDRESS = str(Settings.model_fields["postal_address"].default)
TEXT_FIELDS = ("newsletter_name", "accent_color", "mail_from_name", "mail_from_address",
               "reply_to", "postal_address")
LABELS = {
    "newsletter_name": "Newsletter name",
    "logo": "Logo",
    "accent_color": "Accent colour",
    "mail_from_name": "Sender name",
    "mail_from_address": "Sender address",
    "reply_to": "Reply-to address",
    "postal_address": "Postal address",
}


class BrandingError(UserError):
    """One or more settings were refused; `errors` maps each form field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        first = next(iter(self.errors))
        super().__init__("; ".join(f"{LABELS.get(k, k)}: {v}" for k, v in self.errors.items()),
                         field=first)


@dataclass(frozen=True)
class Branding:
    """What every email (and page) shows of the newsletter's identity."""

    newsletter_name: str
    logo_url: str  # absolute URL, or "" for no logo
    accent_color: str  # #rrggbb
    mail_from_name: str
    mail_from_address: str
    reply_to: str  # "" for no Reply-To header
    postal_address: str
    logo_width: int = DEFAULT_LOGO_WIDTH  # px the email shows the logo at

    def email_context(self) -> dict[str, object]:
        """The values email templates use (templates/emails/_layout.mjml)."""
        return {"list_name": self.newsletter_name, "logo_url": self.logo_url,
                "logo_width": self.logo_width, "accent_color": self.accent_color,
                "postal_address": self.postal_address}


# --- reading -----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _accent(value: str) -> str:
    if COLOUR.match(value):
        return value.lower()
    # It ends up in CSS: never pass through something that isn't a colour.
    log.warning("ACCENT_COLOR %r is not #rrggbb; using %s", value, DEFAULT_ACCENT)
    return DEFAULT_ACCENT


def defaults() -> Branding:
    """The environment's values: what a field left empty in the console falls back to."""
    return Branding(
        newsletter_name=settings.newsletter_name or settings.mail_from_name,
        # Only an https image: anything else (javascript:, http:) is never put in an email.
        logo_url=settings.logo_url if settings.logo_url.startswith("https://") else "",
        accent_color=_accent(settings.accent_color),
        mail_from_name=settings.mail_from_name,
        mail_from_address=settings.mail_from_address,
        reply_to=settings.reply_to,
        postal_address=settings.postal_address,
    )


def logo_url_for(filename: str) -> str:
    return settings.base_url.rstrip("/") + LOGO_PATH + filename


def logo_dir() -> Path:
    return Path(settings.data_dir) / "branding"


def merge(rows: Mapping[str, str]) -> Branding:
    """Database values over the environment's defaults."""
    brand = defaults()
    values: dict[str, object] = {k: rows[k] for k in TEXT_FIELDS if rows.get(k)}
    if LOGO_KEY in rows:
        logo = rows[LOGO_KEY]
        values["logo_url"] = logo_url_for(logo) if logo else ""
        width = rows.get(LOGO_WIDTH_KEY, "")
        values["logo_width"] = int(width) if width.isdigit() else DEFAULT_LOGO_WIDTH
    return replace(brand, **values)  # type: ignore[arg-type]


def stored(*, session: Session) -> dict[str, SiteSetting]:
    return {row.key: row for row in session.exec(select(SiteSetting)).all()}


_cache: tuple[Engine, float, dict[str, str]] | None = None


def _rows_from(engine: Engine) -> dict[str, str]:
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and cached[0] is engine and cached[1] > now:
        return cached[2]
    database = engine.url.database or ""
    if engine.url.get_backend_name() == "sqlite" and database and not Path(database).exists():
        return {}  # no database yet (a unit test, `newsletter --help`): nothing stored
    try:
        with Session(engine) as session:
            rows = {key: value for key, value in session.exec(
                select(SiteSetting.key, SiteSetting.value)).all()}
    except SQLAlchemyError as exc:
        # Not migrated yet, or the database is briefly away: keep what we knew.
        log.warning("branding settings unreadable, using %s: %s",
                    "the last values read" if cached else "the environment's", exc)
        rows = cached[2] if cached is not None and cached[0] is engine else {}
    # Keyed on the engine object: a new database (tests, forked workers) reads afresh.
    _cache = (engine, now + CACHE_SECONDS, rows)
    return rows


def current(*, session: Session | None = None) -> Branding:
    """The branding in force: read through `session` if given, else cached per process."""
    if session is not None:
        return merge({key: row.value for key, row in stored(session=session).items()})
    return merge(_rows_from(db.get_engine()))


def forget() -> None:
    """Drop this process's cached values (after a save)."""
    global _cache
    _cache = None


# --- checking --------------------------------------------------------------------------


@dataclass(frozen=True)
class Logo:
    """An uploaded logo that passed the checks."""

    data: bytes
    ext: str  # png | jpg | gif
    width: int  # px to show it at in emails

    @property
    def filename(self) -> str:
        return f"{hashlib.sha256(self.data).hexdigest()[:32]}.{self.ext}"

    def data_url(self) -> str:
        return f"data:{LOGO_TYPES[self.ext]};base64,{base64.b64encode(self.data).decode()}"


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF87a", "gif"),
          (b"GIF89a", "gif"))


def check_logo(data: bytes, *, size: int | None = None) -> Logo:
    """A PNG, JPEG or GIF of at most 200 KB, or BrandingError saying what is wrong.

    `size` is the upload's whole size when only its start was read into `data`.
    """
    def refuse(message: str) -> BrandingError:
        return BrandingError({"logo": message})

    if not data:
        raise refuse("The file is empty. Choose a PNG, JPEG or GIF image.")
    size = max(size or 0, len(data))
    if size > LOGO_MAX_BYTES:
        raise refuse(f"The file is {size / 1024:.0f} KB; a logo can be at most "
                     f"{LOGO_MAX_BYTES // 1024} KB. Export it smaller (a logo needs about "
                     f"{2 * LOGO_MAX_WIDTH} px across at most).")
    ext = next((kind for magic, kind in _MAGIC if data.startswith(magic)), "")
    if not ext:
        head = data[:1024].lstrip().lower()
        if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head:
            raise refuse("SVG logos are not accepted: an SVG can carry scripts. "
                         "Upload the logo as a PNG, JPEG or GIF.")
        raise refuse("This file is not a PNG, JPEG or GIF image; only those are accepted.")
    dimensions = _image_size(data, ext)
    if dimensions is None:
        raise refuse(f"This file starts like a {ext.upper()} image but can't be read; "
                     "export it again and upload that.")
    width, height = dimensions
    scale = min(1.0, LOGO_MAX_WIDTH / width, LOGO_MAX_HEIGHT / height)
    return Logo(data=data, ext=ext, width=max(1, round(width * scale)))


def _image_size(data: bytes, ext: str) -> tuple[int, int] | None:
    """(width, height) if Pillow can read the image and it is the type its bytes say."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            # verify() checks the structure (PNG chunk CRCs) without decoding pixels,
            # so a small file that would decode to a huge image costs nothing here.
            image.verify()
            kind = {"PNG": "png", "JPEG": "jpg", "GIF": "gif"}.get(image.format or "")
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        return None
    if kind != ext or width < 1 or height < 1:
        return None
    return width, height


def _one_line(value: str, *, limit: int, label: str) -> tuple[str, str]:
    """(cleaned value, error): names appear in headers and emails, so no control chars."""
    value = " ".join(value.split())
    if len(value) > limit:
        return value, f"{len(value)} characters; {label} can be at most {limit}."
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029" for ch in value):
        return value, "Control characters are not allowed."
    return value, ""


def contrast_on_white(colour: str) -> float:
    """WCAG 2 contrast ratio of #rrggbb against white."""
    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i:i + 2]) for i in (1, 3, 5))
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def _is_example_domain(address: str) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in EXAMPLE_DOMAINS)


def check(values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(clean values to store, errors by field) for the submitted text fields.

    An empty field means "use the environment's value" and is stored as "" (deleted).
    """
    clean: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key in TEXT_FIELDS:
        raw = str(values.get(key) or "").strip()
        if key == "postal_address":
            # One line in every footer: the lines someone typed become ", ".
            raw = ", ".join(" ".join(line.split()) for line in raw.splitlines() if line.strip())
        value, error = raw, ""
        if not raw:
            pass
        elif key in ("newsletter_name", "mail_from_name"):
            value, error = _one_line(raw, limit=MAX_NAME, label="a name")
        elif key == "postal_address":
            value, error = _one_line(raw, limit=MAX_POSTAL, label="the address")
        elif key == "accent_color":
            if not COLOUR.match(raw):
                error = f"{raw[:20]!r} is not a colour like #1a56db (# and six hex digits)."
            elif (ratio := contrast_on_white(raw)) < MIN_CONTRAST:
                error = (f"{raw} is too light: buttons show white text on it and links "
                         f"show it on white, which needs a contrast of at least "
                         f"{MIN_CONTRAST}:1 (this is {ratio:.1f}:1). Choose a darker shade.")
            value = raw.lower()
        else:  # addresses
            try:
                value = normalise_email(raw)
            except SubscriberError as exc:
                error = str(exc)
        clean[key] = value
        if error:
            errors[key] = error
    return clean, errors


def check_effective(brand: Branding, *, production: bool) -> dict[str, str]:
    """What the emails would carry must be sendable; in production, not an example."""
    errors: dict[str, str] = {}
    if not brand.postal_address.strip():
        errors["postal_address"] = ("Every email must show a postal address (anti-spam law "
                                    "in the US, EU and UK); enter one.")
    if not brand.mail_from_address:
        errors["mail_from_address"] = "Enter the address emails are sent from."
    if not production:
        return errors
    for key in ("mail_from_address", "reply_to"):
        address = getattr(brand, key)
        if address and _is_example_domain(address):
            errors.setdefault(key, f"{address} is an example address: mail to it goes nowhere. "
                                   "In production, enter a real address of your domain.")
    if brand.postal_address.strip() == EXAMPLE_POSTAL_ADDRESS:
        errors.setdefault("postal_address", "This is the built-in example address. In "
                                            "production, enter your organisation's real "
                                            "postal address.")
    if brand.logo_url and _is_example_domain(brand.logo_url.split("://", 1)[-1].split("/")[0]):
        errors["logo"] = "The logo's address is an example domain; upload the logo instead."
    return errors


def draft(values: Mapping[str, str], *, session: Session, logo: Logo | None = None,
          remove_logo: bool = False) -> tuple[Branding, dict[str, str], dict[str, str]]:
    """(the branding these values would give, rows to store, errors): for preview and save.

    Fields with errors keep their stored value in the returned branding, so a preview
    of a half-typed form still shows something sensible.
    """
    clean, errors = check(values)
    rows = {key: row.value for key, row in stored(session=session).items()}
    candidate = dict(rows)
    for key, value in clean.items():
        if key not in errors:
            candidate[key] = value
    if remove_logo:
        candidate[LOGO_KEY] = ""
        candidate.pop(LOGO_WIDTH_KEY, None)
    elif logo is not None:
        candidate[LOGO_KEY] = logo.filename
        candidate[LOGO_WIDTH_KEY] = str(logo.width)
    brand = merge(candidate)
    changes = {k: v for k, v in candidate.items() if rows.get(k) != v}
    changes.update({k: "" for k in rows if k not in candidate})
    return brand, changes, errors


# --- saving ------------------------------------------------------------------------------


def write_logo_file(filename: str, data: bytes) -> Path:
    """Write a logo under DATA_DIR/branding/ (atomically; same bytes, same name)."""
    folder = logo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if not path.exists():
        tmp = folder / f".{filename}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def store_logo(logo: Logo, *, session: Session) -> str:
    """Keep the logo in the database (the copy every machine can read) and on disk."""
    if session.get(BrandingAsset, logo.filename) is None:
        session.add(BrandingAsset(filename=logo.filename, data=logo.data))
        session.flush()
    write_logo_file(logo.filename, logo.data)
    return logo.filename


def logo_bytes(*, session: Session, filename: str) -> bytes | None:
    """A stored logo's bytes, for a machine whose DATA_DIR/branding/ lacks the file."""
    asset = session.get(BrandingAsset, filename)
    return bytes(asset.data) if asset is not None else None


def save(*, session: Session, values: Mapping[str, str], editor_email: str,
         logo: Logo | None = None, remove_logo: bool = False) -> Branding:
    """Check and store the console's values (commits); BrandingError lists every problem.

    `values` holds the text fields (empty: use the environment's value); `logo` is an
    upload that passed `check_logo`; `remove_logo` shows no logo at all.
    """
    brand, changes, errors = draft(values, session=session, logo=logo, remove_logo=remove_logo)
    for key, message in check_effective(
            brand, production=settings.environment == "production").items():
        errors.setdefault(key, message)
    if errors:
        raise BrandingError(errors)
    if logo is not None and not remove_logo:
        store_logo(logo, session=session)
    now = utcnow()
    for key, value in changes.items():
        if value == "" and key in TEXT_FIELDS + (LOGO_WIDTH_KEY,):
            session.execute(delete(SiteSetting).where(col(SiteSetting.key) == key))
            continue
        # Update first, insert if there was no row; a concurrent insert of the same key
        # fails the commit with IntegrityError, which the caller shows as "try again".
        result = session.execute(update(SiteSetting).where(col(SiteSetting.key) == key)
                                 .values(value=value, updated_at=now, updated_by=editor_email))
        if getattr(result, "rowcount", 0) == 0:
            session.add(SiteSetting(key=key, value=value, updated_at=now,
                                    updated_by=editor_email))
            session.flush()
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise
    forget()
    return current(session=session)


def last_change(*, session: Session) -> SiteSetting | None:
    """The most recently saved row (who saved the settings, and when)."""
    return session.exec(select(SiteSetting).order_by(col(SiteSetting.updated_at).desc())
                        .limit(1)).first()


__all__ = ["Branding", "BrandingError", "Logo", "check_logo", "current", "defaults", "draft",
           "forget", "last_change", "logo_bytes", "save", "store_logo", "write_logo_file"]
