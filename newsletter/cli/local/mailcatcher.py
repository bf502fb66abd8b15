"""A local SMTP server that stores every message as an .eml file (for demos and dev).

Used whenever SMTP_HOST is empty, so `newsletter send` works with nothing but Python.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from newsletter.cli.local.services import free_port
from newsletter.settings import settings


class EmlDirectoryHandler:
    """aiosmtpd handler writing each accepted message to `<directory>/<time>-<uuid>.eml`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        # Write then rename, so a reader never sees half a message.
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(bytes(data))
        tmp.replace(self.directory / name)
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def mail_catcher(directory: Path, *, port: int | None = None) -> Iterator[tuple[str, int]]:
    """Run the catcher in a background thread; settings and env point at it meanwhile."""
    host, port = "127.0.0.1", port or free_port()
    controller = Controller(
        EmlDirectoryHandler(Path(directory)),
        hostname=host,
        port=port,
        enable_SMTPUTF8=True,
        data_size_limit=50 * 1024 * 1024,
        ready_timeout=10,
    )
    saved = (settings.smtp_host, settings.smtp_port, settings.smtp_starttls)
    saved_env = {k: os.environ.get(k) for k in ("SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS")}
    controller.start()
    settings.smtp_host, settings.smtp_port, settings.smtp_starttls = host, port, False
    os.environ.update(SMTP_HOST=host, SMTP_PORT=str(port), SMTP_STARTTLS="false")
    try:
        yield host, port
    finally:
        controller.stop()
        settings.smtp_host, settings.smtp_port, settings.smtp_starttls = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def smtp_service() -> Iterator[tuple[str, int]]:
    """SMTP_HOST if configured, else a mail catcher writing into DATA_DIR/mail."""
    if settings.smtp_host:
        yield settings.smtp_host, settings.smtp_port
        return
    with mail_catcher(settings.mail_dir) as address:
        yield address
