"""Settings (owners only): newsletter name, logo, accent colour, sender, reply-to and
postal address, with a live preview of an email as the values are typed.

The preview is a sandboxed iframe. The "Preview" button posts the form into it
(formaction/formtarget), so it works without JavaScript; settings.js does the same on
input, debounced. The frame's responses get the email-preview CSP (no script runs).
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.datastructures import FormData, UploadFile

from newsletter import branding
from newsletter.branding import Branding, BrandingError, Logo
from newsletter.composer import compose, load_issue
from newsletter.digest import digest_context, load_extras
from newsletter.models import Issue
from newsletter.render import PERSONAL_KEYS, TemplateError, render_email
from newsletter.settings import settings
from newsletter.signup import CONFIRM_VALID_DAYS
from newsletter.web.editor import routing
from newsletter.web.editor.routing import (
    current_editor,
    db_session,
    error_page,
    form_of,
    page,
    redirect,
    router,
)

SAMPLES = {"welcome": "Welcome email", "confirm": "Confirmation email",
           "digest": "Latest issue's digest"}
SAMPLE_PERSON = {"name": "Ana Example", "greeting_name": "Ana", "email": "ana@example.org"}


def _owners_only(request: Request) -> Response | None:
    """403 unless the editor is an owner: routing.owners_only where the team's roles
    exist (issue 10, another branch); until then every editor counts as an owner."""
    shared = getattr(routing, "owners_only", None)
    if shared is not None:
        return cast(Response | None, shared(request))
    if getattr(current_editor(request), "role", "owner") == "owner":
        return None
    return error_page(request, "Owners only",
                      "Only the newsletter's owners can change its settings. Ask an owner "
                      "if something here needs changing.", 403)


# --- reading the form ---------------------------------------------------------------------


def _text_values(form: FormData) -> dict[str, str]:
    return {key: str(form.get(key) or "")[:2000] for key in branding.TEXT_FIELDS}


def _upload(form: FormData) -> tuple[Logo | None, dict[str, str]]:
    """The uploaded logo if one was chosen and it passes the checks."""
    upload = form.get("logo")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None, {}
    data = upload.file.read(branding.LOGO_MAX_BYTES + 1)
    upload.file.seek(0, 2)  # the whole size, for the message when it is too big
    try:
        return branding.check_logo(data, size=upload.file.tell()), {}
    except BrandingError as exc:
        return None, exc.errors


def _remove_logo(form: FormData) -> bool:
    return str(form.get("remove_logo") or "") not in ("", "0", "off")


# --- the page ---------------------------------------------------------------------------


def _form_context(session: Session, *, values: dict[str, str] | None = None,
                  errors: dict[str, str] | None = None, notice: str = "",
                  sample: str = "") -> dict[str, Any]:
    rows = branding.stored(session=session)
    brand = branding.current(session=session)
    if values is None:
        values = {key: rows[key].value if key in rows else "" for key in branding.TEXT_FIELDS}
    return {
        "nav": "settings", "values": values, "errors": errors or {}, "notice": notice,
        "defaults": branding.defaults(), "brand": brand, "labels": branding.LABELS,
        # An uploaded logo by its path: the page's CSP allows images from this site only.
        "logo_src": brand.logo_url.removeprefix(settings.base_url.rstrip("/")),
        "last": branding.last_change(session=session), "samples": samples(),
        "sample": sample if sample in samples() else next(iter(samples())),
        "max_logo_kb": branding.LOGO_MAX_BYTES // 1024,
        "production": settings.environment == "production",
    }


@router.get("/settings")
def settings_page(request: Request) -> Response:
    refused = _owners_only(request)
    if refused is not None:
        return refused
    notice = "Settings saved. Emails sent from now on use them." \
        if request.query_params.get("saved") else ""
    with db_session() as session:
        return page(request, "settings.html", _form_context(session, notice=notice))


@router.post("/settings")
def settings_save(request: Request) -> Response:
    refused = _owners_only(request)
    if refused is not None:
        return refused
    form = form_of(request)
    values = _text_values(form)
    logo, logo_errors = _upload(form)
    remove = _remove_logo(form)
    with db_session() as session:
        try:
            if logo_errors:
                # Report the logo with everything else that is wrong, in one go.
                _, _, errors = branding.draft(values, session=session)
                raise BrandingError({**logo_errors, **errors})
            branding.save(session=session, values=values,
                          editor_email=current_editor(request).email,
                          logo=logo, remove_logo=remove)
        except BrandingError as exc:
            session.rollback()
            return page(request, "settings.html",
                        _form_context(session, values=values, errors=exc.errors),
                        status_code=400)
        except OSError as exc:  # DATA_DIR not writable: the operator's to fix, say so
            session.rollback()
            return page(request, "settings.html", _form_context(
                session, values=values,
                errors={"logo": f"The logo could not be stored ({exc.strerror or exc}); "
                                "nothing was saved. Check that DATA_DIR/branding/ is "
                                "writable by the web app."}), status_code=503)
        except IntegrityError:
            session.rollback()
            return page(request, "settings.html", _form_context(
                session, values=values,
                errors={"form": "Someone else saved the settings at the same moment; "
                                "check the values below and save again."}), status_code=409)
    return redirect("/editor/settings?saved=1")


# --- the preview ------------------------------------------------------------------------


def samples() -> dict[str, str]:
    """The emails the preview can show: the welcome email once its template exists."""
    welcome = Path(settings.templates_dir) / "emails" / "welcome" / "body.mjml"
    return {k: v for k, v in SAMPLES.items() if k != "welcome" or welcome.is_file()}


def _sample_email(session: Session, brand: Branding, sample: str) -> tuple[str, str]:
    """(subject, HTML) of the chosen email rendered with `brand`."""
    context = brand.email_context()
    base = settings.base_url.rstrip("/")
    if sample == "welcome":
        rendered = render_email("welcome", {
            **context, "greeting_name": SAMPLE_PERSON["greeting_name"],
            "topics": ["Fintech", "Logistics"], "only_my_topics": False,
            "weekday": "Monday", "next_send": "on Monday around 09:00",
            "latest_url": f"{base}/issues", "latest_title": "This week's roundup",
            "manage_url": f"{base}/manage/preview",
            "unsubscribe_url": f"{base}/unsubscribe/preview",
            "base_url": base,
        })
        return rendered.subject, rendered.html
    if sample == "digest":
        latest = session.exec(select(Issue).order_by(col(Issue.issue_date).desc(),
                                                     col(Issue.id).desc()).limit(1)).first()
        if latest is not None and latest.id is not None:
            issue = load_issue(session=session, issue_id=latest.id)
            composition = compose(issue, followed=())
            if composition is not None:
                personal = {key: SAMPLE_PERSON.get(key, f"{base}/manage/preview")
                            for key in PERSONAL_KEYS}
                digest = digest_context(
                    issue, composition, personal, test=False, extras=load_extras(issue),
                    story_link=lambda _kind, _item: f"{base}/archive")
                # The values being typed win over the saved ones, masthead included.
                digest.update(context, masthead=context.get("list_name", digest["masthead"]))
                rendered = render_email("digest", digest)
                return rendered.subject, rendered.html
    rendered = render_email("confirm", {
        **context, "greeting_name": SAMPLE_PERSON["greeting_name"],
        "email": SAMPLE_PERSON["email"], "topics": ["Fintech", "Logistics"],
        "confirm_url": f"{base}/confirm/preview", "valid_days": CONFIRM_VALID_DAYS,
        "base_url": base,
    })
    return rendered.subject, rendered.html


_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)


def _with_inbox_header(email_html: str, brand: Branding, subject: str,
                       errors: dict[str, str]) -> str:
    """The email as an inbox shows it: From, Reply-To and Subject above the body."""
    sender = f"{brand.mail_from_name} <{brand.mail_from_address}>"
    rows = [("From", sender), ("Reply-To", brand.reply_to or "(replies go to the sender)"),
            ("Subject", subject)]
    lines = "".join(
        f'<span style="color:#6b7280">{name}</span><span>{html.escape(value)}</span>'
        for name, value in rows)
    problems = "".join(
        f'<div style="color:#8a1c1c">{html.escape(branding.LABELS.get(k, k))}: '
        f"{html.escape(v)} (showing the saved value)</div>" for k, v in errors.items())
    strip = ('<div id="inbox-header" style="font:14px/1.5 Helvetica,Arial,sans-serif;'
             'background:#fff;border-bottom:1px solid #ddd;padding:8px 12px;'
             f'overflow-wrap:anywhere"><div style="display:grid;grid-template-columns:auto 1fr;'
             f'gap:0 12px">{lines}</div>{problems}</div>')
    match = _BODY_OPEN.search(email_html)
    if match is None:
        return strip + email_html
    return email_html[:match.end()] + strip + email_html[match.end():]


def _preview_response(request: Request, form: FormData | None) -> Response:
    with db_session() as session:
        errors: dict[str, str] = {}
        if form is None:
            brand, sample = branding.current(session=session), ""
        else:
            logo, logo_errors = _upload(form)
            brand, _, errors = branding.draft(_text_values(form), session=session, logo=logo,
                                              remove_logo=_remove_logo(form))
            errors = {**logo_errors, **errors}
            if logo is not None and not _remove_logo(form):
                # Not saved yet: show the chosen file itself (the frame allows data: images).
                brand = replace(brand, logo_url=logo.data_url(), logo_width=logo.width)
            sample = str(form.get("sample") or "")
        try:
            choices = samples()
            subject, email_html = _sample_email(
                session, brand, sample if sample in choices else next(iter(choices)))
        except TemplateError as exc:  # someone's template edit broke it: say where
            return HTMLResponse(f"<!doctype html><p>The email can't be rendered: "
                                f"{html.escape(str(exc))}</p>", status_code=500,
                                headers={"cache-control": "no-store"})
    return HTMLResponse(_with_inbox_header(email_html, brand, subject, errors),
                        headers={"cache-control": "no-store"})


@router.get("/settings/preview")
def settings_preview(request: Request) -> Response:
    return _owners_only(request) or _preview_response(request, None)


@router.post("/settings/preview")
def settings_preview_draft(request: Request) -> Response:
    return _owners_only(request) or _preview_response(request, form_of(request))
