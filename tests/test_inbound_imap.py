"""`newsletter inbound --imap`: against a real Dovecot started here, on a free port, with
its own configuration in a temporary directory. Mail is put in the mailbox with IMAP
APPEND, as a mail server's delivery would leave it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter import delivery
from newsletter.models import Event, Issue, IssueStatus, Subscriber
from newsletter.settings import settings
from tests.fixtures.inbound import dsn, plain, start_inbound, vacation
from tests.fixtures.mail import SMTPTestServer

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password"

pytestmark = [
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason="dovecot-imapd is not installed"),
    pytest.mark.timeout(120),
    pytest.mark.slow,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""


@pytest.fixture
def dovecot() -> Iterator[int]:
    """A private Dovecot (IMAP only, no TLS) on a free port; yields the port."""
    # Not under pytest's tmp_path: its 0700 directories keep Dovecot's own users out.
    root = Path(tempfile.mkdtemp(prefix="roundup-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True)
    # Dovecot refuses to keep mail as root: the mailbox belongs to an unprivileged user.
    owner = pwd.getpwuid(os.getuid()) if os.getuid() else pwd.getpwnam("nobody")
    for sub in ("mail", "home"):
        shutil.chown(root / sub, owner.pw_uid, owner.pw_gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = _free_port()
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(root=root, uid=owner.pw_uid, gid=owner.pw_gid,
                                        port=port))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"dovecot did not start: {(root / 'dovecot.log').read_text()}")
    yield port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(root, ignore_errors=True)


def imap(port: int):  # type: ignore[no-untyped-def]
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=port, ssl=False)
    client.login(USER, PASSWORD)
    return client


@pytest.fixture
def sent(session: Session, make_issue: Callable[..., Issue],
         make_subscriber: Callable[..., Subscriber],
         smtp_server: SMTPTestServer) -> tuple[Issue, list[Subscriber], dict[str, bytes]]:
    issue = make_issue(items=["A story"], status=IssueStatus.approved)
    subscribers = [make_subscriber(email=f"reader{n}@example.org") for n in range(2)]
    delivery.plan_send(session=session, issue_id=issue.id)
    session.commit()
    delivery.run_batch(session=session, issue_id=issue.id, batch=1)
    messages = {m.rcpt_tos[0]: m for m in smtp_server.wait_for(2)}
    return issue, subscribers, {e: m.mail_from for e, m in messages.items()}


def _deliver(port: int, messages: list[bytes], flags: tuple[bytes, ...] = ()) -> None:
    client = imap(port)
    for message in messages:
        client.append("INBOX", message, flags=flags)
    client.logout()


def _poll(app_settings, tmp_path: Path, port: int) -> str:
    running = start_inbound(
        database_url=app_settings.database_url, data_dir=tmp_path / "var",
        args=("--imap", f"imap://{USER}@127.0.0.1:{port}/INBOX", "--once"),
        IMAP_PASSWORD=PASSWORD)
    assert running.proc.wait(60) == 0, running.log()
    return running.log()


def test_imap_poller_records_and_moves_only_our_mail(session, app_settings, tmp_path, dovecot,
                                                     sent):
    issue, (hard, away), verps = sent
    personal = plain(to="bounces@roundup.example", subject="Lunch on Friday?",
                     sender="friend@example.org")
    flagged = plain(to="bounces@roundup.example", subject="Flagged for deletion by a person",
                    sender="friend@example.org")
    bounce = dsn(to=verps[hard.email], final_recipient=hard.email, status="5.1.1")
    reply = vacation(to=verps[away.email], sender=away.email)
    _deliver(dovecot, [personal])
    _deliver(dovecot, [flagged], flags=(b"\\Deleted",))
    _deliver(dovecot, [bounce, reply])

    log = _poll(app_settings, tmp_path, dovecot)

    session.expire_all()
    assert session.get(Subscriber, hard.id).status == "bounced"
    assert session.get(Subscriber, away.id).status == "confirmed"
    kinds = sorted((e.subscriber_id, e.kind, e.source) for e in session.exec(
        select(Event).where(Event.issue_id == issue.id)).all())
    assert kinds == sorted([(hard.id, "bounced", "imap"), (away.id, "auto_reply", "imap")])
    client = imap(dovecot)
    assert client.folder_exists(settings.imap_processed_folder)
    client.select_folder("INBOX", readonly=True)
    left = client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    subjects = {bytes(v[b"BODY[HEADER.FIELDS (SUBJECT)]"]).strip(): v[b"FLAGS"]
                for v in left.values()}
    # Unrelated mail is exactly as it was: still there, still unread, flags untouched.
    assert subjects == {b"Subject: Lunch on Friday?": (),
                        b"Subject: Flagged for deletion by a person": (b"\\Deleted",)}
    client.select_folder(settings.imap_processed_folder, readonly=True)
    assert len(client.search(["ALL"])) == 2
    client.logout()
    assert "2 ours processed and moved" in log


def test_imap_poller_twice_records_once_and_leaves_personal_mail(session, app_settings,
                                                                 tmp_path, dovecot, sent):
    issue, (hard, _away), verps = sent
    bounce = dsn(to=verps[hard.email], final_recipient=hard.email, status="4.2.2")
    _deliver(dovecot, [bounce, plain(to="bounces@roundup.example", subject="Hello")])
    _poll(app_settings, tmp_path, dovecot)
    _deliver(dovecot, [bounce])  # the same bounce delivered again
    _poll(app_settings, tmp_path, dovecot)
    session.expire_all()
    soft = session.exec(select(Event).where(Event.kind == "soft_bounced")).all()
    assert len(soft) == 1
    client = imap(dovecot)
    client.select_folder("INBOX", readonly=True)
    assert len(client.search(["ALL"])) == 1
    assert client.search(["UNSEEN"]) == client.search(["ALL"])
    client.logout()
