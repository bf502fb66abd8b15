"""The JSON API (its OpenAPI schema is served at /openapi.json) and the health check."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlmodel import Session

from newsletter import db, signup
from newsletter.inbound import suppressions
from newsletter.models import TopicPublic
from newsletter.settings import settings
from newsletter.signup import SignupInvalid
from newsletter.web import forms
from newsletter.web.public import db_session, signup_limit, submit_signup
from newsletter.web.security import client_ip

log = logging.getLogger(__name__)
router = APIRouter()

ACCEPTED_MESSAGE = (
    "If this address can be subscribed, a confirmation email is on its way. "
    "The subscription starts once the link in it is followed."
)


class SubscribeIn(BaseModel):
    """A sign-up. Only `email` is required; topics are slugs from GET /api/topics."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"email": "ana@example.org", "name": "Ana",
                                         "topics": ["science"], "timezone": "Europe/Paris"}]},
    )

    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=200)
    topics: list[str] = Field(default_factory=list, max_length=100)
    timezone: str = Field(default="UTC", max_length=64)
    only_my_topics: bool = False
    referrer: str = Field(default="", max_length=2000)
    utm_source: str = Field(default="", max_length=300)
    utm_medium: str = Field(default="", max_length=300)
    utm_campaign: str = Field(default="", max_length=300)
    utm_term: str = Field(default="", max_length=300)
    utm_content: str = Field(default="", max_length=300)


class Accepted(BaseModel):
    """The same answer for new and already known addresses."""

    status: str = "accepted"
    message: str = ACCEPTED_MESSAGE


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    database: str


@router.post(
    "/api/subscribers",
    status_code=202,
    response_model=Accepted,
    tags=["subscribers"],
    summary="Sign up (double opt-in)",
    responses={422: {"description": "Invalid email, name, topics or time zone"},
               429: {"model": Problem, "description": "Too many sign-ups from this IP"}},
)
def create_subscriber(body: SubscribeIn, request: Request) -> JSONResponse | Accepted:
    """Start a subscription: a confirmation email is sent and nothing is delivered until
    its link is followed. Answers 202 with the same body whether the address is new or
    already known, so the API cannot be used to find out who is subscribed."""
    limiter = request.app.state.rate_limiter
    if not limiter.hit(signup_limit(), "signup", client_ip(request)):
        return JSONResponse({"detail": "Too many sign-ups; try again in a minute."},
                            status_code=429, headers={"Retry-After": "60"})
    with db_session() as session:
        try:
            clean = signup.validate_signup(
                session=session, email=body.email, name=body.name, topics=body.topics,
                timezone=body.timezone, only_my_topics=body.only_my_topics)
        except SignupInvalid as exc:
            return JSONResponse(status_code=422, content={"detail": [
                {"loc": ["body", key], "msg": msg, "type": "value_error"}
                for key, msg in exc.errors.items()]})
    # The worker decides what the sign-up means: the same work here for every address.
    submit_signup(request, signup.SignupRequest(
        signup=clean, source="api", source_data=signup.tracking_data(body.model_dump())))
    return Accepted()


@router.get("/api/topics", response_model=list[TopicPublic], tags=["topics"],
            summary="The topics subscribers can follow")
def list_topics() -> list[TopicPublic]:
    with db_session() as session:
        return [TopicPublic.model_validate(t, from_attributes=True)
                for t in forms.all_topics(session)]


@router.get("/healthz", response_model=Health, tags=["health"],
            responses={503: {"model": Health}})
# Uptime monitors probe with HEAD; one operation in the schema is enough.
@router.head("/healthz", include_in_schema=False, response_model=None)
def healthz() -> JSONResponse | Health:
    """200 when the database answers, 503 otherwise."""
    try:
        with Session(db.get_engine()) as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception as exc:
        log.warning("health check: database unavailable: %s", exc)
        return JSONResponse({"status": "unavailable", "database": "unreachable"},
                            status_code=503)
    return Health(status="ok", database="ok")


# --- the suppression list (issue 8) --------------------------------------------------------


def require_api_key(request: Request) -> None:
    """`Authorization: Bearer <one of API_KEYS>`; 503 while no key is set (never open)."""
    keys = [k.strip() for k in settings.api_keys.split(",") if len(k.strip()) >= 16]
    if not keys:
        raise HTTPException(503, "The suppression API is off: set API_KEYS (comma-separated "
                                 "keys of 16 characters or more) to use it.")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Every key is compared, whichever matches: the time taken says nothing.
    matches = [secrets.compare_digest(given.strip().encode(), k.encode()) for k in keys]
    if scheme.lower() != "bearer" or not any(matches):
        raise HTTPException(401, "A valid `Authorization: Bearer <API key>` is required.",
                            headers={"WWW-Authenticate": 'Bearer realm="api"'})


API_KEY = [Depends(require_api_key)]
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or wrong API key"},
    503: {"model": Problem, "description": "API_KEYS is not set"},
}


class SuppressionOut(BaseModel):
    """An address that is never mailed, why, and since when."""

    email: str
    reason: str
    created_at: datetime


class SuppressionPage(BaseModel):
    total: int
    offset: int
    limit: int
    suppressions: list[SuppressionOut]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "gone@example.org", "reason": "asked us by phone"}]})

    email: str = Field(max_length=320)
    reason: str = Field(default="", max_length=500)


class SuppressionAdded(BaseModel):
    email: str
    added: bool  # False: it was already suppressed (the first reason and date are kept)


class SuppressionRemoved(BaseModel):
    email: str
    restored: bool  # a bounced subscriber is confirmed again
    subscriber_status: str | None


@router.get("/api/suppressions", response_model=SuppressionPage, tags=["suppressions"],
            dependencies=API_KEY, responses=_AUTH_ERRORS,
            summary="The suppression list, newest first")
def suppressions_list(search: str = Query("", max_length=320), offset: int = Query(0, ge=0),
                      limit: int = Query(50, ge=1, le=200)) -> SuppressionPage:
    with db_session() as session:
        rows, total = suppressions.list_suppressions(session=session, search=search,
                                                     offset=offset, limit=limit)
    return SuppressionPage(total=total, offset=offset, limit=limit, suppressions=[
        SuppressionOut(email=r.email, reason=r.reason, created_at=r.created_at) for r in rows])


@router.post("/api/suppressions", response_model=SuppressionAdded, status_code=201,
             tags=["suppressions"], dependencies=API_KEY,
             responses={**_AUTH_ERRORS, 200: {"model": SuppressionAdded,
                                               "description": "Already suppressed"},
                        422: {"description": "Not an email address, or the reason is too long"}},
             summary="Suppress an address")
def suppressions_add(body: SuppressionIn) -> JSONResponse | SuppressionAdded:
    with db_session() as session:
        try:
            email = suppressions.clean_address(body.email)
            added = suppressions.add_suppression(session=session, email=email,
                                                 reason=body.reason, source="api")
        except suppressions.SuppressionError as exc:
            return JSONResponse(status_code=422, content={"detail": [
                {"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]})
        session.commit()
    result = SuppressionAdded(email=email, added=added)
    return result if added else JSONResponse(result.model_dump(), status_code=200)


@router.delete("/api/suppressions/{email}", response_model=SuppressionRemoved,
               tags=["suppressions"], dependencies=API_KEY,
               responses={**_AUTH_ERRORS, 404: {"model": Problem}},
               summary="Take an address off the suppression list")
def suppressions_remove(email: str = FastAPIPath(max_length=320)) -> SuppressionRemoved:
    with db_session() as session:
        try:
            removed = suppressions.remove_suppression(session=session, email=email,
                                                      source="api")
        except suppressions.SuppressionError as exc:
            raise HTTPException(404, f"{email[:320]} is not on the suppression list "
                                     f"({exc})") from None
        if removed is None:
            raise HTTPException(404, f"{email[:320]} is not on the suppression list.")
        session.commit()
    return SuppressionRemoved(email=removed.email, restored=removed.restored,
                              subscriber_status=removed.subscriber_status)
