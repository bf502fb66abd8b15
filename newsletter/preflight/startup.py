"""What a process checks before it starts: the key always, the whole report in production.

Exit code 78 (EX_CONFIG, sysexits.h) tells a supervisor the configuration is wrong:
restarting will not help.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from newsletter.preflight.secret import (
    SecretKeyError,
    ensure_secret_key,
    key_problems,
    missing_sentence,
)
from newsletter.settings import settings

EX_CONFIG = 78
# Processes that refuse to start in production while `newsletter check` finds problems
# (`release` runs the report itself, after migrating).
GATED = frozenset({"web", "worker"})


def refuse(message: str) -> NoReturn:
    # Plain stderr, not logging: this may run before any logging is configured.
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def _refuse_weak_keys(process: str) -> None:
    problems = key_problems()
    if problems:
        refuse(f"{process}: " + "; ".join(problems))


def production_gate(process: str) -> None:
    """In production, refuse to start while the configuration has problems (the report)."""
    if settings.environment != "production" or process not in GATED:
        return
    from newsletter.preflight.checks import find_problems, report_text

    problems = find_problems()
    if problems:
        refuse_with_report(process, report_text(problems))


def refuse_with_report(process: str, report: str) -> NoReturn:
    refuse(f"{process} refuses to run in production until these are fixed "
           f"(`newsletter check` lists them again):\n{report}")


def _refuse_unsigned_mail(process: str) -> None:
    """A worker whose DKIM settings cannot sign (a key without a domain, the reverse,
    an unreadable key) would fail every message or send it unsigned: in every
    environment it does not start."""
    if process != "worker":
        return
    from newsletter.preflight.checks import dkim_signing_problems, report_text

    problems = dkim_signing_problems()
    if problems:
        refuse(f"{process}: mail could not be signed:\n{report_text(problems)}")


def procfile_start(process: str) -> None:
    """Every Procfile process: SECRET_KEY must be set, whatever ENVIRONMENT says.

    Processes on several machines must share one key, so none may invent its own.
    """
    if not settings.secret_key:
        refuse(missing_sentence(process))
    _refuse_weak_keys(process)
    _refuse_unsigned_mail(process)
    production_gate(process)


def local_start(process: str) -> None:
    """A CLI command on this machine: SECRET_KEY if set, else (outside production) the
    key in DATA_DIR, exported so the workers and servers it starts sign with it too."""
    _refuse_weak_keys(process)
    if not settings.secret_key and settings.environment == "production":
        refuse(missing_sentence(process))
    try:
        key = ensure_secret_key()
    except (SecretKeyError, OSError) as exc:
        refuse(f"{process}: {exc}")
    os.environ["SECRET_KEY"] = key
    production_gate(process)
