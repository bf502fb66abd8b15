"""`newsletter inbound`: receive bounces, complaints and mailto unsubscribes."""

from __future__ import annotations

import logging

import typer

from newsletter.cli.common import console, ensure_database, fail


def inbound(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 behind an MX)."),
    port: int = typer.Option(None, min=0, max=65535,
                             help="SMTP port (default: INBOUND_PORT, 2525); 0 picks a free one."),
    imap: str = typer.Option("", help="Poll this mailbox instead of listening, e.g. "
                             "imaps://bounces@mail.example.com/INBOX (password: IMAP_PASSWORD)."),
    interval: float = typer.Option(60.0, min=1.0, help="Seconds between IMAP polls."),
    once: bool = typer.Option(False, "--once", help="With --imap: poll once and exit."),
) -> None:
    """Read what comes back: an SMTP server for the VERP bounce addresses and the
    unsubscribe address (run it behind BOUNCE_DOMAIN's MX), or an IMAP poller."""
    from newsletter.settings import settings

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO: one line per message of ours is enough.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    ensure_database()
    if imap:
        from newsletter.inbound.imap import ImapUrlError, parse_imap_url, run_poller

        try:
            target = parse_imap_url(imap)
        except ImapUrlError as exc:
            fail(str(exc))
        if not settings.imap_password:
            fail("set IMAP_PASSWORD to the mailbox's password")
        console.print(f"Polling {target.host}/{target.folder} every {interval:g} s; recorded "
                      f"messages move to {settings.imap_processed_folder}.", highlight=False)
        try:
            run_poller(imap, interval=interval, once=once)
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            fail(f"IMAP poll failed: {exc}")
        return

    from newsletter.inbound.receiver import InboundServer

    def ready(bound_host: str, bound_port: int) -> None:
        # Plain print, flushed: scripts and tests read the port from this line.
        print(f"Inbound SMTP listening on {bound_host}:{bound_port} for "
              f"bounces+…@{settings.bounce_domain} and {settings.unsubscribe_mailto}; "
              f"messages over {settings.inbound_max_bytes} bytes are refused.", flush=True)

    server = InboundServer(host, settings.inbound_port if port is None else port)
    try:
        server.serve_forever(ready=ready)
    except OSError as exc:
        fail(f"cannot listen on {host}:{server.port}: {exc}")
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("inbound")(inbound)
