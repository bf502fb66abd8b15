"""The FastAPI app. The Procfile's `web` serves `procfile_app` (uvicorn --factory), which
checks the configuration first; `newsletter web` serves `app`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter.preflight.secret import ensure_secret_key, key_problems
from newsletter.ratelimit import Limiter
from newsletter.settings import settings
from newsletter.web import api, archive, branding, clicks, public, webhooks
from newsletter.web.editor import router as editor_router
from newsletter.web.security import (
    InsecureSecretError,
    SecurityMiddleware,
    check_secret,
)
from newsletter.web.templating import make_templates, render

STATIC_DIR = Path(__file__).resolve().parent / "static"

_TITLES = {
    400: "Bad request",
    404: "Page not found",
    405: "Method not allowed",
    413: "Too much data",
    415: "Unsupported content type",
    422: "Invalid input",
    429: "Too many requests",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/healthz"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if _wants_json(request) or exc.status_code >= 500:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=headers)
    title = _TITLES.get(exc.status_code, "Something went wrong")
    return render(request, "error.html", {"title": title, "message": str(exc.detail)},
                  status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Errors echo the input back; keep them short and JSON-safe.
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()[:20]]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(*, send_confirmation: Callable[[int], None] | None = None) -> FastAPI:
    """Build the app; refuses the built-in secret outside development.

    `send_confirmation(subscriber_id)` queues the confirmation email; by default it
    publishes the Celery task. Tests pass the task function to send synchronously.
    """
    ensure_secret_key()  # never an empty key: outside production, the local key file
    if problems := key_problems():  # guessable keys are refused in every environment
        raise InsecureSecretError("; ".join(problems))
    check_secret()
    app = FastAPI(
        title=f"{settings.mail_from_name} newsletter",
        summary="Sign up for the weekly digest; browse the topics you can follow.",
        version="1",
        # FastAPI's /docs and /redoc pages load Swagger UI from a CDN, which a
        # self-hosted service must not depend on; the schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.templates = make_templates()
    app.state.rate_limiter = Limiter(redis_url=settings.redis_url)
    app.state.send_confirmation = send_confirmation or public.enqueue_confirmation
    # Tests pass send_confirmation: sign-ups are then decided in-process, not by a worker.
    app.state.signups_inline = send_confirmation is not None
    app.add_middleware(SecurityMiddleware)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api.router)
    app.include_router(public.router)
    app.include_router(webhooks.router)  # issue 8: relay bounce/complaint webhooks
    app.include_router(archive.router)  # the public web archive (issue 9)
    app.include_router(clicks.router)  # /r/<token>: story links in digests (issue 9)
    app.include_router(branding.router)  # issue 10: /branding/<logo>
    app.include_router(editor_router)
    return app


def procfile_app() -> FastAPI:
    """The Procfile's `web` (`uvicorn --factory newsletter.web.app:procfile_app`).

    SECRET_KEY must be set whatever ENVIRONMENT says, and in production the
    configuration report must be empty; otherwise one clear error and exit 78.
    """
    from newsletter.preflight.startup import procfile_start

    procfile_start("web")
    return create_app()


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # `app` is built on first use rather than at import, so importing create_app
    # (tests, the CLI) never trips the secret check with the process's settings.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
