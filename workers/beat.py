"""Celery beat: the weekly send and the lease sweep, checked every minute.

Beat only nudges; the decisions (is a slot due, is a lease expired) are made against
the database, so beat firing twice, or two beats, still sends one issue once.
"""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "send-due-issues": {"task": "workers.tasks.send_due_issues", "schedule": 60.0},
    "sweep-expired-leases": {"task": "workers.tasks.sweep", "schedule": 60.0},
}
