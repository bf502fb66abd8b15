"""Reading submitted forms into plain values the pages can re-fill."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import available_timezones

from fastapi import Request
from sqlmodel import Session, col, select
from starlette.datastructures import FormData

from newsletter.models import Topic
from newsletter.signup import TRACKING_KEYS

MAX_FIELDS = 100
FIELD_MAX = 1000  # longer values are cut before validation so error pages stay small


@dataclass
class SignupForm:
    """What the sign-up form holds, valid or not."""

    email: str = ""
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    only_my_topics: bool = False
    consent: bool = False
    tracking: dict[str, str] = field(default_factory=dict)


@dataclass
class PreferencesForm:
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    only_my_topics: bool = False
    paused: bool = False


async def read_form(request: Request) -> FormData:
    """The urlencoded/multipart body, refusing file uploads (they have no use here)."""
    return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=64 * 1024)


def text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value[:FIELD_MAX] if isinstance(value, str) else ""


def texts(form: FormData, key: str) -> list[str]:
    return [v[:FIELD_MAX] for v in form.getlist(key) if isinstance(v, str)][:MAX_FIELDS]


def checked(form: FormData, key: str) -> bool:
    return text(form, key) not in ("", "0", "false", "off")


def signup_form(form: FormData) -> SignupForm:
    return SignupForm(
        email=text(form, "email"),
        name=text(form, "name"),
        topics=texts(form, "topics"),
        timezone=text(form, "timezone") or "UTC",
        only_my_topics=checked(form, "only_my_topics"),
        consent=checked(form, "consent"),
        tracking={k: text(form, k) for k in TRACKING_KEYS if text(form, k)},
    )


def preferences_form(form: FormData) -> PreferencesForm:
    return PreferencesForm(
        name=text(form, "name"),
        topics=texts(form, "topics"),
        timezone=text(form, "timezone") or "UTC",
        only_my_topics=checked(form, "only_my_topics"),
        paused=checked(form, "paused"),
    )


def all_topics(session: Session) -> list[Topic]:
    return list(session.exec(select(Topic).order_by(col(Topic.id))).all())


@lru_cache(maxsize=1)
def timezones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/")) + [
        "UTC"
    ]
