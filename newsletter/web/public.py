"""Subscriber pages: sign-up (and its embeddable twin), confirm, preference centre,
unsubscribe (with RFC 8058 one-click).

Handlers are async only to read the form; database work runs in the thread pool.
A GET never changes anything: every change is a POST carrying a CSRF token, except
the one-click unsubscribe POST that mail providers send without cookies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from newsletter import db, signup, tokens
from newsletter import subscribers as subs
from newsletter.engagement.interests import tracking_enabled
from newsletter.engagement.preferences import engagement_view, follow_topic, set_click_tracking
from newsletter.models import Delivery, Subscriber, SubscriberStatus
from newsletter.settings import settings
from newsletter.signup import ERASED_SUFFIX, TRACKING_KEYS, SignupInvalid, SignupOutcome
from newsletter.web import forms
from newsletter.web.security import client_ip, csrf_valid, honeypot_filled
from newsletter.web.templating import render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

CONFIRM_MAX_AGE = int(timedelta(days=signup.CONFIRM_VALID_DAYS).total_seconds())
CONFIRM_SOURCE = "confirm-link"  # the event source of a double opt-in confirmation
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


@contextmanager
def db_session() -> Iterator[Session]:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        yield session


# --- handing sign-ups to the worker, sending the confirmation email ----------------------

SIGNUP_TASK = "workers.signup_tasks.process_signup"
CONFIRMATION_TASK = "workers.signup_tasks.send_confirmation_email"


def publish(task_name: str, *args: Any) -> None:
    """Publish a Celery task by name on the broker (fails fast if it is down)."""
    from newsletter import queue

    queue.publish(task_name, *args)


def enqueue_confirmation(subscriber_id: int) -> None:
    """Queue the confirmation email on the Celery broker."""
    publish(CONFIRMATION_TASK, subscriber_id)


def submit_signup(request: Request, wanted: signup.SignupRequest) -> None:
    """Hand a validated sign-up to the worker, which decides what it means.

    The request's work is the same for every address: no lookup, no write, one
    publish. Whether the address was new, pending, confirmed, suppressed or over its
    daily cap can't show in the answer or its timing. Apps built with an in-process
    `send_confirmation` (tests), and any app while the broker is down, decide here.
    """
    if not request.app.state.signups_inline:
        try:
            publish(SIGNUP_TASK, wanted.to_json())
            return
        except Exception:
            log.exception("could not queue a sign-up; recording it here instead")
    decide_signup_here(request, wanted)


def decide_signup_here(request: Request, wanted: signup.SignupRequest) -> None:
    """What workers.signup_tasks.process_signup does, in this process."""
    allow = signup.daily_cap(request.app.state.rate_limiter)
    with db_session() as session:
        try:
            outcome = signup.process_signup(session=session, request=wanted, allow=allow)
            session.commit()
        except IntegrityError:
            # The same new address submitted twice at once: the other request won.
            session.rollback()
            return
    dispatch_confirmation(request, outcome)


def dispatch_confirmation(request: Request, outcome: SignupOutcome) -> None:
    """After the commit: queue the email, or release the cooldown claim if we can't."""
    if outcome.subscriber_id is None or outcome.claimed_at is None:
        return
    send: Callable[[int], None] = request.app.state.send_confirmation
    try:
        send(outcome.subscriber_id)
    except Exception:
        # The sign-up is kept; releasing the claim lets the person simply try again.
        log.exception("could not queue the confirmation email for subscriber %s",
                      outcome.subscriber_id)
        with db_session() as session:
            signup.release_confirmation(session=session, outcome=outcome)
            session.commit()


def signup_limit() -> str:
    return f"{settings.signup_rate_per_minute}/minute"


def rate_limited(request: Request) -> Response | None:
    limiter = request.app.state.rate_limiter
    if limiter.hit(signup_limit(), "signup", client_ip(request)):
        return None
    return render(request, "error.html",
                  {"title": "Too many requests",
                   "message": f"Too many requests from your network in the last minute "
                              f"(at most {settings.signup_rate_per_minute}). "
                              "Please wait a minute and try again."},
                  status_code=429, headers={"Retry-After": "60"})


# --- sign-up ----------------------------------------------------------------------------


def _tracking_from_request(request: Request) -> dict[str, str]:
    values: dict[str, Any] = {k: request.query_params.get(k, "") for k in TRACKING_KEYS}
    values["referrer"] = request.query_params.get("referrer") or request.headers.get("referer", "")
    return signup.tracking_data(values)


def _signup_page(request: Request, template: str, form: forms.SignupForm,
                 errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    with db_session() as session:
        topics = forms.all_topics(session)
    return render(request, template, {
        "form": form, "topics": topics, "timezones": forms.timezones(),
        "errors": errors or {}, "action": request.url.path,
    }, status_code=status_code)


# Uptime monitors probe with HEAD: the sign-up pages answer it, as their GET changes
# nothing (it renders the form; the CSRF cookie is all it sets).
READ_METHODS = ["GET", "HEAD"]


@router.api_route("/", methods=READ_METHODS)
def home() -> Response:
    return RedirectResponse("/subscribe", status_code=303)


@router.api_route("/subscribe", methods=READ_METHODS)
def subscribe_page(request: Request) -> Response:
    # ?topics=logistics: "Follow this topic" on an archive story ticks it for them.
    return _signup_page(request, "subscribe.html",
                        forms.SignupForm(tracking=_tracking_from_request(request),
                                         topics=request.query_params.getlist("topics")[:20]))


@router.post("/subscribe")
async def subscribe_submit(request: Request) -> Response:
    return await _handle_signup(request, template="subscribe.html", source="form")


@router.api_route("/subscribe/embed", methods=READ_METHODS)
def embed_page(request: Request) -> Response:
    base = settings.base_url.rstrip("/")
    snippet = (
        f'<iframe src="{base}/subscribe/embed/form" title="Subscribe to '
        f'{settings.mail_from_name}" style="width:100%;max-width:480px;height:720px;'
        'border:0" loading="lazy"></iframe>'
    )
    return render(request, "embed.html", {"snippet": snippet,
                                          "form_url": f"{base}/subscribe/embed/form"})


@router.api_route("/subscribe/embed/form", methods=READ_METHODS)
def embed_form(request: Request) -> Response:
    return _signup_page(request, "embed_form.html",
                        forms.SignupForm(tracking=_tracking_from_request(request)))


@router.post("/subscribe/embed/form")
async def embed_form_submit(request: Request) -> Response:
    return await _handle_signup(request, template="embed_form.html", source="embed")


async def _handle_signup(request: Request, *, template: str, source: str) -> Response:
    # The limiter may wait on Redis: keep that off the event loop.
    limited = await run_in_threadpool(rate_limited, request)
    if limited is not None:
        return limited
    raw = await forms.read_form(request)
    form = forms.signup_form(raw)
    if not csrf_valid(request, raw):
        return await run_in_threadpool(
            _signup_page, request, template, form,
            {"form": "This form expired or was sent from another site. "
                     "Please check your details and submit it again."}, 400)
    if honeypot_filled(raw):
        # Looks like success to the bot, down to the address; nothing is stored or sent.
        try:
            shown = subs.normalise_email(form.email)
        except subs.SubscriberError:
            shown = ""
        return _done(request, template, shown)
    return await run_in_threadpool(_signup_sync, request, template, source, form)


def _done(request: Request, template: str, email: str, **extra: Any) -> Response:
    """"Check your inbox": the same words whatever happened to the address."""
    done = "embed_done.html" if template.startswith("embed") else "subscribe_done.html"
    return render(request, done, {
        "email": email, "valid_days": signup.CONFIRM_VALID_DAYS,
        "cooldown_minutes": settings.signup_cooldown_minutes,
        "per_day": settings.confirmations_per_day, **extra})


def _signup_sync(request: Request, template: str, source: str,
                 form: forms.SignupForm) -> Response:
    with db_session() as session:
        errors: dict[str, str] = {}
        try:
            clean = signup.validate_signup(
                session=session, email=form.email, name=form.name, topics=form.topics,
                timezone=form.timezone, only_my_topics=form.only_my_topics)
        except SignupInvalid as exc:
            errors = exc.errors
        if not form.consent:
            errors["consent"] = "Please tick the box to agree to receive the newsletter."
        if errors:
            return _signup_page(request, template, form, errors, 422)
    submit_signup(request, signup.SignupRequest(
        signup=clean, source=source, source_data=signup.tracking_data(form.tracking)))
    return _done(request, template, clean.email)


# --- confirm -----------------------------------------------------------------------------


def _link_invalid(request: Request) -> Response:
    return render(request, "error.html", {
        "title": "This link isn't valid",
        "message": "The link may have expired or been copied incompletely. "
                   "You can sign up again to get a fresh one.",
        "show_subscribe": True,
    }, status_code=404)


def _read(purpose: str, token: str, max_age: int | None = None) -> int | None:
    if len(token) > 512:
        return None
    try:
        return tokens.read_token(purpose, token, max_age=max_age)
    except tokens.BadToken:
        return None


def _live_subscriber(session: Session, subscriber_id: int | None) -> Subscriber | None:
    if subscriber_id is None:
        return None
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.email.endswith(ERASED_SUFFIX):
        return None
    return sub


@router.get("/confirm/{token}")
def confirm_page(request: Request, token: str) -> Response:
    # A mail scanner following the link lands here; only the button's POST confirms.
    with db_session() as session:
        req = signup.read_confirm_token(token, max_age=CONFIRM_MAX_AGE)
        sub = _live_subscriber(session, req.subscriber_id if req else None)
        if sub is None:
            return _link_invalid(request)
        if sub.status == SubscriberStatus.confirmed:
            return _confirmed_page(request, sub)
    return render(request, "confirm.html", {"email": sub.email, "token": token})


def _confirmed_page(request: Request, sub: Subscriber) -> Response:
    assert sub.id is not None
    return render(request, "confirmed.html", {
        "email": sub.email, "manage_url": tokens.manage_url(sub.id),
    })


@router.post("/confirm/{token}")
async def confirm_submit(request: Request, token: str) -> Response:
    raw = await forms.read_form(request)
    if not csrf_valid(request, raw):
        return _form_expired(request, f"/confirm/{token}")
    return await run_in_threadpool(_confirm_sync, request, token)


def _confirm_sync(request: Request, token: str) -> Response:
    with db_session() as session:
        req = signup.read_confirm_token(token, max_age=CONFIRM_MAX_AGE)
        sub = _live_subscriber(session, req.subscriber_id if req else None)
        if req is None or sub is None or sub.id is None:
            return _link_invalid(request)
        # Confirms, then applies the preferences the link carries (a known address's
        # new choices take effect only once its owner confirms).
        signup.confirm_signup(session=session, request=req, source=CONFIRM_SOURCE)
        session.commit()
        sub = session.get(Subscriber, sub.id)
        assert sub is not None
        if sub.status != SubscriberStatus.confirmed:
            return _link_invalid(request)
        return _confirmed_page(request, sub)


def _form_expired(request: Request, back: str) -> Response:
    return render(request, "error.html", {
        "title": "Please try again",
        "message": "This form expired or was sent from another site, so nothing was changed.",
        "back": back,
    }, status_code=400)


# --- preference centre -----------------------------------------------------------------


def _manage_page(request: Request, session: Session, sub: Subscriber, token: str, *,
                 form: forms.PreferencesForm | None = None, errors: dict[str, str] | None = None,
                 saved: bool = False, status_code: int = 200, notice: str = "",
                 track_clicks: bool | None = None) -> Response:
    assert sub.id is not None
    if form is None:
        form = forms.PreferencesForm(
            name=sub.name, timezone=sub.timezone, only_my_topics=sub.only_my_topics,
            paused=sub.paused,
            topics=subs.followed_topics(session=session, subscriber_id=sub.id))
    follow = request.query_params.get("follow") if request.method == "GET" else None
    return render(request, "manage.html", {
        "sub": sub, "form": form, "token": token, "topics": forms.all_topics(session),
        "timezones": forms.timezones(), "errors": errors or {}, "saved": saved,
        # issue 9: click tracking switch, "Follow Logistics?" suggestions
        "notice": notice,
        "track_clicks": sub.track_clicks if track_clicks is None else track_clicks,
        "engagement": engagement_view(session=session, sub=sub, follow=follow),
    }, status_code=status_code)


@router.get("/manage/{token}")
def manage_page(request: Request, token: str) -> Response:
    with db_session() as session:
        sub = _live_subscriber(session, _read(tokens.MANAGE, token))
        if sub is None:
            # Expired (manage links do), copied badly or forged: offer a fresh one.
            return _manage_link_form(request, expired=True, status_code=404)
        return _manage_page(request, session, sub, token)


# --- "email me a fresh link" --------------------------------------------------------------
#
# The answer is the same whether or not the address has a subscription, and the
# request does the same work either way: it publishes a task and the worker looks
# the address up (and applies the daily cap per address).

MANAGE_LINK_TASK = "workers.signup_tasks.send_manage_link_email"


def _manage_link_form(request: Request, *, email: str = "", expired: bool = False,
                      errors: dict[str, str] | None = None,
                      status_code: int = 200) -> Response:
    return render(request, "manage_link.html", {
        "email": email, "expired": expired, "errors": errors or {}},
        status_code=status_code)


@router.api_route("/manage", methods=READ_METHODS)
def manage_link_page(request: Request) -> Response:
    return _manage_link_form(request)


@router.post("/manage")
async def manage_link_submit(request: Request) -> Response:
    limited = await run_in_threadpool(rate_limited, request)
    if limited is not None:
        return limited
    raw = await forms.read_form(request)
    typed = forms.text(raw, "email")
    if not csrf_valid(request, raw):
        return _manage_link_form(request, email=typed, status_code=400, errors={
            "form": "This form expired or was sent from another site. Please submit it again."})
    try:
        email = subs.normalise_email(typed)
    except subs.SubscriberError as exc:
        return _manage_link_form(request, email=typed, errors={"email": str(exc)},
                                 status_code=422)
    await run_in_threadpool(request_manage_link, request, email)
    return render(request, "manage_link_sent.html",
                  {"email": email, "per_day": settings.manage_links_per_day})


def request_manage_link(request: Request, email: str) -> None:
    """Publish the task; apps deciding sign-ups in-process (tests) send it here."""
    if request.app.state.signups_inline:
        from workers.signup_tasks import manage_link_cap, send_manage_link

        try:
            send_manage_link(email, allow=manage_link_cap(request.app.state.rate_limiter))
        except Exception:
            log.exception("could not send a fresh manage link")
        return
    try:
        publish(MANAGE_LINK_TASK, email)
    except Exception:
        # Same answer regardless: the person can ask again once the broker is back.
        log.exception("could not queue a fresh manage link")


# Every preference-centre action: check CSRF, then run `action` in a worker thread
# with the subscriber the token names (or the "link invalid" page).
ManageAction = Callable[[Request, Session, Subscriber, str, FormData], Response]


async def _manage_post(request: Request, token: str, action: ManageAction) -> Response:
    raw = await forms.read_form(request)
    if not csrf_valid(request, raw):
        return _form_expired(request, f"/manage/{token}")
    return await run_in_threadpool(_run_manage_action, request, token, raw, action)


def _run_manage_action(request: Request, token: str, raw: FormData,
                       action: ManageAction) -> Response:
    with db_session() as session:
        sub = _live_subscriber(session, _read(tokens.MANAGE, token))
        if sub is None or sub.id is None:
            return _link_invalid(request)
        return action(request, session, sub, token, raw)


@router.post("/manage/{token}")
async def manage_submit(request: Request, token: str) -> Response:
    return await _manage_post(request, token, _save_preferences)


def _save_preferences(request: Request, session: Session, sub: Subscriber, token: str,
                      raw: FormData) -> Response:
    assert sub.id is not None
    form = forms.preferences_form(raw)
    errors: dict[str, str] = {}
    for key, check in (
        ("name", lambda: subs.validate_name(form.name)),
        ("timezone", lambda: subs.validate_timezone(form.timezone)),
        ("topics", lambda: subs.validate_topics(session=session, slugs=form.topics)),
    ):
        try:
            check()
        except subs.SubscriberError as exc:
            errors[exc.field or key] = str(exc)
    # The switch is shown only while the service records clicks; otherwise keep the
    # reader's choice for when it does again.
    track_clicks = (not forms.checked(raw, "no_click_tracking") if tracking_enabled()
                    else sub.track_clicks)
    if errors:
        return _manage_page(request, session, sub, token, form=form, errors=errors,
                            status_code=422, track_clicks=track_clicks)
    subs.update_preferences(
        session=session, subscriber_id=sub.id, source="manage", name=form.name,
        timezone=form.timezone, only_my_topics=form.only_my_topics, paused=form.paused,
        topics=form.topics)
    set_click_tracking(session=session, subscriber_id=sub.id, enabled=track_clicks,
                       source="manage")
    session.commit()
    fresh = session.get(Subscriber, sub.id)
    assert fresh is not None
    return _manage_page(request, session, fresh, token, saved=True)


@router.post("/manage/{token}/follow")
async def manage_follow(request: Request, token: str) -> Response:
    return await _manage_post(request, token, _follow)


def _follow(request: Request, session: Session, sub: Subscriber, token: str,
            raw: FormData) -> Response:
    """One-click "Follow Logistics?" from a suggestion or a story page."""
    assert sub.id is not None
    try:
        topic = follow_topic(session=session, subscriber_id=sub.id,
                             slug=forms.text(raw, "topic"), source="manage-suggestion")
    except subs.SubscriberError as exc:
        return _manage_page(request, session, sub, token, errors={"topics": str(exc)},
                            status_code=422)
    session.commit()
    return _manage_page(request, session, sub, token,
                        notice=f"You now follow {topic.name}. Its stories come first from "
                               "your next email.")


@router.post("/manage/{token}/unsubscribe")
async def manage_unsubscribe(request: Request, token: str) -> Response:
    return await _manage_post(request, token, _unsubscribe_from_manage)


def _unsubscribe_from_manage(request: Request, session: Session, sub: Subscriber, token: str,
                             raw: FormData) -> Response:
    assert sub.id is not None
    subs.unsubscribe(session=session, subscriber_id=sub.id, source="manage")
    session.commit()
    return render(request, "unsubscribed.html", {
        "resubscribe_action": f"/unsubscribe/{tokens.make_token(tokens.UNSUBSCRIBE, sub.id)}"
                              "/resubscribe"})


@router.post("/manage/{token}/export")
async def manage_export(request: Request, token: str) -> Response:
    return await _manage_post(request, token, _export)


def _export(request: Request, session: Session, sub: Subscriber, token: str,
            raw: FormData) -> Response:
    assert sub.id is not None
    data = signup.export_subscriber(session=session, subscriber_id=sub.id)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-roundup-data.json"'},
    )


@router.post("/manage/{token}/delete")
async def manage_delete(request: Request, token: str) -> Response:
    return await _manage_post(request, token, _delete)


def _delete(request: Request, session: Session, sub: Subscriber, token: str,
            raw: FormData) -> Response:
    assert sub.id is not None
    if not forms.checked(raw, "sure"):
        return _manage_page(request, session, sub, token, status_code=422, errors={
            "sure": "Tick the box to confirm you want everything deleted."})
    signup.erase_subscriber(session=session, subscriber_id=sub.id, source="manage")
    session.commit()
    return render(request, "deleted.html")


# --- unsubscribe ----------------------------------------------------------------------
#
# The page, its button and the one-click POST answer the same whatever the token:
# a tampered or unknown token changes nothing and reveals nothing.


@router.get("/unsubscribe/{token}")
def unsubscribe_page(request: Request, token: str) -> Response:
    if _read(tokens.UNSUBSCRIBE, token) is None:
        return _link_invalid(request)
    issue_text = request.query_params.get("i", "")
    return render(request, "unsubscribe.html", {
        "token": token, "issue_id": int(issue_text) if issue_text.isdigit()
        and len(issue_text) < 10 else None})


@router.post("/unsubscribe/{token}")
async def unsubscribe_submit(request: Request, token: str) -> Response:
    raw = await forms.read_form(request)
    one_click = raw.get("List-Unsubscribe") == "One-Click" or (
        # RFC 8058 names the body, not the content type: some senders omit the header.
        "content-type" not in request.headers
        and (await request.body()).strip() == ONE_CLICK_BODY)
    if not one_click and not csrf_valid(request, raw):
        return _form_expired(request, f"/unsubscribe/{token}")
    source = "one-click" if one_click else "unsubscribe-page"
    if _read(tokens.UNSUBSCRIBE, token) is None:
        # A damaged or forged link changes nothing, and must not say it did.
        if one_click:
            return Response("This unsubscribe link is not valid.\n", media_type="text/plain",
                            status_code=404)
        return _link_invalid(request)
    issue_text = request.query_params.get("i", "")
    issue_id = int(issue_text) if issue_text.isdigit() and len(issue_text) < 10 else None
    await run_in_threadpool(_unsubscribe_sync, token, source, issue_id)
    if one_click:
        return Response("You are unsubscribed.\n", media_type="text/plain")
    return render(request, "unsubscribed.html",
                  {"resubscribe_action": f"/unsubscribe/{token}/resubscribe"})


def _unsubscribe_sync(token: str, source: str, issue_id: int | None = None) -> None:
    with db_session() as session:
        sub = _live_subscriber(session, _read(tokens.UNSUBSCRIBE, token))
        if sub is None or sub.id is None:
            return
        # The issue the link came from counts only if it was really sent to this reader.
        sent = issue_id is not None and session.exec(
            select(Delivery.id).where(Delivery.issue_id == issue_id,
                                      Delivery.subscriber_id == sub.id)).first() is not None
        subs.unsubscribe(session=session, subscriber_id=sub.id, source=source,
                         issue_id=issue_id if sent else None)
        session.commit()


@router.post("/unsubscribe/{token}/resubscribe")
async def resubscribe_submit(request: Request, token: str) -> Response:
    raw = await forms.read_form(request)
    if not csrf_valid(request, raw):
        return _form_expired(request, f"/unsubscribe/{token}")
    limited = await run_in_threadpool(rate_limited, request)
    if limited is not None:
        return limited
    await run_in_threadpool(_resubscribe_sync, request, token)
    return _done(request, "subscribe.html", "")


def _resubscribe_sync(request: Request, token: str) -> None:
    with db_session() as session:
        sub = _live_subscriber(session, _read(tokens.UNSUBSCRIBE, token))
        if sub is None or sub.id is None:
            return
        outcome = signup.resubscribe(
            session=session, subscriber_id=sub.id, source="unsubscribe-page",
            allow=signup.daily_cap(request.app.state.rate_limiter))
        session.commit()
    dispatch_confirmation(request, outcome)

