"""Jinja pages under templates/web/, rendered with the CSRF token and CSP nonce at hand.

Other routers (the editors' console) use `render` too and extend `base.html`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import Response

from newsletter import branding
from newsletter.settings import settings
from newsletter.web.security import CSRF_FIELD, csrf_token, set_csrf_cookie


def make_templates(templates_dir: Path | None = None) -> Jinja2Templates:
    directory = Path(templates_dir or settings.templates_dir) / "web"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "xml"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Render `templates/web/NAME`; sets the CSRF cookie when the page minted a token."""
    templates: Jinja2Templates = request.app.state.templates

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="{}" value="{}">').format(
            CSRF_FIELD, csrf_token(request)
        )

    brand = branding.current()  # issue 10: the name and address set in /editor/settings
    full: dict[str, Any] = {
        "site_name": brand.newsletter_name,
        "csp_nonce": getattr(request.state, "csp_nonce", ""),
        "csrf_field": csrf_field,
        "postal_address": brand.postal_address,
        "errors": {},
        **(context or {}),
    }
    response = templates.TemplateResponse(
        request, name, full, status_code=status_code, headers=dict(headers or {})
    )
    set_csrf_cookie(request, response)
    return response
