"""POST /webhooks/bounces/<provider>: bounces and complaints reported by the relay
(generic JSON, Amazon SES through SNS, Postmark, Mailgun). See newsletter/inbound/providers.py
for what each provider sends and how it is authenticated.

Every request is checked whole (authentication, then the payload) before anything is
written, and written in one transaction with a receipt of the provider's event id, so a
refused request changes nothing and a retried one changes nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from newsletter.inbound import policy, providers
from newsletter.inbound.providers import (
    BadPayload,
    Feedback,
    Unauthorized,
    Unavailable,
    UnknownProvider,
    WebhookError,
)
from newsletter.inbound.sns import SnsClient, SnsError
from newsletter.web.public import db_session

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def sns_client(state: Any) -> SnsClient:
    """One per app, so fetched certificates are cached; tests put their own in place."""
    client = getattr(state, "sns_client", None)
    if client is None:
        client = SnsClient()
        state.sns_client = client
    return client


def _answer(exc: WebhookError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=exc.headers)


@router.post("/bounces/{provider}", summary="Bounces and complaints from the mail relay",
             responses={401: {"description": "Bad signature or credentials; nothing changed"},
                        503: {"description": "This provider's secret is not configured"}})
async def bounces(provider: str, request: Request) -> JSONResponse:
    """Records what the relay reports: hard and soft bounces, complaints, unsubscribes."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        # Database work and (for SES) fetching certificates: off the event loop.
        result = await run_in_threadpool(
            handle, provider, headers, body, sns_client(request.app.state))
    except WebhookError as exc:
        if exc.status_code >= 500:
            log.error("webhook %r refused: %s", provider[:20], exc)
        else:
            log.warning("webhook %r refused (%s): %s", provider[:20], exc.status_code, exc)
        return _answer(exc)
    return JSONResponse(result)


def handle(provider: str, headers: Mapping[str, str], body: bytes,
           sns: SnsClient) -> dict[str, Any]:
    auth = headers.get("authorization", "")
    if provider == "generic":
        providers.check_bearer(auth)
        feedback = providers.parse_generic(providers.parse_json(body))
        return _record("generic", feedback)
    if provider == "postmark":
        providers.check_basic(auth)
        feedback = providers.parse_postmark(providers.parse_json(body))
        return _record("postmark", feedback)
    if provider == "mailgun":
        payload = providers.parse_json(body)
        if not isinstance(payload, Mapping):
            raise BadPayload("The body must be a JSON object.")
        token = providers.check_mailgun(payload)
        feedback = providers.parse_mailgun(payload, token=token)
        return _record("mailgun", feedback, replay_guard=f"mailgun-token:{token}")
    if provider == "ses":
        return _ses(headers, body, sns)
    raise UnknownProvider(f"No webhook for {provider[:40]!r}: use one of "
                          f"{', '.join(providers.PROVIDERS)}.")


def _ses(headers: Mapping[str, str], body: bytes, sns: SnsClient) -> dict[str, Any]:
    providers.check_ses_configured()
    envelope = providers.parse_json(body)
    if not isinstance(envelope, Mapping):
        raise BadPayload("The body must be an SNS message (a JSON object).")
    try:
        sns.verify(envelope)
    except SnsError as exc:
        raise Unauthorized(f"Not a genuine SNS message: {exc}.") from None
    except ConnectionError as exc:
        raise Unavailable(str(exc)) from None
    topic = str(envelope.get("TopicArn", ""))
    if not providers.topic_allowed(topic):
        raise Unauthorized(f"SNS topic {topic[:200]} is not in SES_TOPIC_ARNS.")
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        try:
            sns.confirm(envelope)
        except SnsError as exc:
            raise BadPayload(str(exc)) from None
        except ConnectionError as exc:
            raise Unavailable(str(exc)) from None  # 503: SNS sends the confirmation again
        return {"confirmed": topic}
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS reports this endpoint unsubscribed from %s", topic)
        return {"recorded": 0}
    try:
        notification = json.loads(str(envelope.get("Message", "")))
    except ValueError:
        raise BadPayload("The SNS Message is not an SES notification (not JSON).") from None
    feedback = providers.parse_ses(notification)
    message_id = str(envelope.get("MessageId", ""))
    return _record("ses", providers.keyed(feedback, f"ses:{message_id}" if message_id else ""))


def _record(provider: str, feedback: list[Feedback], *,
            replay_guard: str = "") -> dict[str, Any]:
    """Record the feedback in one transaction. `replay_guard`: a signed token that may be
    used once (Mailgun's); seen before, the whole request is refused as a replay."""
    with db_session() as session:
        if replay_guard and policy.record_ignored(
                session=session, message_key=replay_guard, source=provider,
                reason="webhook signature token, kept to refuse replays").duplicate:
            session.rollback()
            raise Unauthorized("This signed request was seen before (a replay).")
        outcomes = providers.record(session=session, feedback=feedback, source=provider)
        session.commit()
    duplicates = sum(1 for o in outcomes if o.duplicate)
    recorded = len(outcomes) - duplicates
    log.info("webhook %s: %d event(s) recorded, %d seen before", provider, recorded, duplicates)
    return {"received": len(feedback), "recorded": recorded, "duplicates": duplicates}
