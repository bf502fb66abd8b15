"""The editors' console under /editor: log in, edit and preview issues, run the checks,
test-send, approve and send, and watch the dashboard."""

from newsletter.web.editor import (  # noqa: F401
    auth,
    dashboard,
    issues,
    preview,
    results,  # issue 9: per-story results
    schedule_page,  # issue 10: send at a time, per reader's zone, confirm before sending
    sending,
    settings_page,  # issue 10: branding
    subscribers,
    suppressions,  # issue 8
    team,
)
from newsletter.web.editor.routing import ALL_METHODS, router, unknown_path

# Last, so it only answers what no real route matched (a wrong method included).
router.add_api_route("/{rest:path}", unknown_path, methods=ALL_METHODS)

__all__ = ["router"]
