"""The editors' console under /editor: log in, edit and preview issues, run the checks,
test-send, approve and send, and watch the dashboard."""

from newsletter.web.editor import auth, dashboard, issues, preview, sending  # noqa: F401
from newsletter.web.editor.routing import router

__all__ = ["router"]
