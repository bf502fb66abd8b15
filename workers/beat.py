"""Celery beat: the weekly send checked every minute, the delivery sweep every few seconds.

Beat only nudges; the decisions (is a slot due, is a lease expired, did Redis lose the
queued batches) are made against the database, so beat firing twice, or two beats,
still sends one issue once. The sweep runs often (SEND_SWEEP_SECONDS, 15 s by default)
because it is what resumes a send after Redis lost its queue: one indexed query when
nothing is wrong.
"""

from __future__ import annotations

from typing import Any

from newsletter.settings import settings


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The beat schedule for the current settings."""
    return {
        "send-due-issues": {"task": "workers.tasks.send_due_issues", "schedule": 60.0},
        "sweep-expired-leases": {"task": "workers.tasks.sweep",
                                 "schedule": float(settings.send_sweep_seconds),
                                 # A sweep not run by then is superseded by the next one.
                                 "options": {"expires": float(settings.send_sweep_seconds)}},
    }
