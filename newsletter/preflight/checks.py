"""`newsletter check`: every setting that is not fit for production, in one report.

Each check returns problems rather than raising, so an operator fixes everything in
one round instead of one restart per mistake. `release` runs the report, and in
production `web` and `worker` refuse to start while it has anything in it.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.preflight.secret import key_problems
from newsletter.settings import Settings, settings

RELAY_TIMEOUT = 5.0  # seconds for connect + EHLO: a start-up check must not hang
# RFC 2606 and RFC 6761 reserve these; mail to or from them never arrives.
_RESERVED_SUFFIXES = ("example", "test", "invalid", "localhost", "local")
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org", "example.edu",
                    "example.co.uk", "localhost", "localdomain")


@dataclass(frozen=True)
class Problem:
    """One setting and what is wrong with it, as a sentence an operator can act on."""

    setting: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


NO_RELAY = Problem("SMTP_HOST", "is not set: production mail needs a relay")


def example_domain(domain: str) -> bool:
    """True for documentation domains (roundup.example, example.org, *.test, ...)."""
    domain = domain.strip().strip(".").lower()
    if not domain:
        return False
    last = domain.rsplit(".", 1)[-1]
    return last in _RESERVED_SUFFIXES or any(
        domain == d or domain.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def _domain_of(address: str) -> str:
    return address.strip().strip("<>").rpartition("@")[2]


def _local_host(host: str) -> bool:
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified or address.is_private


def base_url_problems() -> list[Problem]:
    url = urlsplit(settings.base_url.strip())
    host = (url.hostname or "").lower()
    problems = []
    if url.scheme != "https":
        problems.append(Problem("BASE_URL", f"{settings.base_url} is not https: links in "
                                "emails and the session cookie would travel in clear text"))
    if _local_host(host):
        problems.append(Problem("BASE_URL", f"{settings.base_url} points at this machine "
                                "or a private network: links in emails would not open "
                                "for subscribers"))
    elif example_domain(host):
        problems.append(Problem("BASE_URL", f"{host} is an example domain"))
    return problems


def _address_settings() -> list[tuple[str, str]]:
    """(setting, domain) for every setting that names a mail domain."""
    pairs = [("MAIL_FROM_ADDRESS", _domain_of(settings.mail_from_address)),
             ("BOUNCE_DOMAIN", settings.bounce_domain),
             ("LIST_ID", settings.list_id)]
    if settings.reply_to:
        pairs.append(("REPLY_TO", _domain_of(settings.reply_to)))
    if settings.unsubscribe_mailto:
        pairs.append(("UNSUBSCRIBE_MAILTO", _domain_of(settings.unsubscribe_mailto)))
    return pairs


def example_domain_problems() -> list[Problem]:
    return [Problem(name, f"{domain or '(empty)'} is an example domain: set it to a "
                          "domain you own")
            for name, domain in _address_settings() if not domain or example_domain(domain)]


def postal_address_problems() -> list[Problem]:
    address = settings.postal_address.strip()
    if not address:
        return [Problem("POSTAL_ADDRESS", "is empty: bulk mail must carry the sender's "
                                          "postal address (CAN-SPAM, Gmail and Yahoo rules)")]
    default = Settings.model_fields["postal_address"].default
    if address == default or "example street" in address.lower():
        return [Problem("POSTAL_ADDRESS", f"{address!r} is the example address: set your "
                                          "organisation's real postal address")]
    return []


def secret_problems() -> list[Problem]:
    problems = [Problem("SECRET_KEY", p.removeprefix("SECRET_KEY ")) for p in key_problems()]
    if not settings.secret_key:
        problems.insert(0, Problem("SECRET_KEY", "is not set: every process must share "
                                                 "one long random key"))
    return problems


def dkim_signing_problems() -> list[Problem]:
    """What would stop mail from being signed: a DKIM key without a domain, a domain
    without a key, or a key that cannot be loaded. Workers refuse to start with any
    of these in every environment (mail is signed or not sent)."""
    key_path, domain = settings.dkim_private_key_path, settings.dkim_domain.strip()
    if key_path and not domain:
        return [Problem("DKIM_DOMAIN", "is not set but DKIM_PRIVATE_KEY_PATH is: mail "
                                       "could not be signed; set the domain the key is for")]
    if domain and not key_path:
        return [Problem("DKIM_PRIVATE_KEY_PATH", f"is not set but DKIM_DOMAIN is ({domain}): "
                                                 "set the private key's path")]
    if not key_path:
        return []
    try:
        load_private_key(Path(key_path))
    except (OSError, ValueError, TypeError) as exc:
        return [Problem("DKIM_PRIVATE_KEY_PATH", f"cannot use the key at {key_path}: {exc}")]
    return []


def dkim_problems() -> list[Problem]:
    """dkim_signing_problems, then what production also needs: a real domain aligned
    with the sender's (DMARC)."""
    problems = dkim_signing_problems()
    domain = settings.dkim_domain.strip()
    if not (settings.dkim_private_key_path and domain):
        return problems
    if example_domain(domain):
        problems.append(Problem("DKIM_DOMAIN", f"{domain} is an example domain"))
    sender = _domain_of(settings.mail_from_address).lower()
    if example_domain(sender):
        return problems  # the sender is reported already; alignment follows its fix
    if not (sender == domain.lower() or sender.endswith("." + domain.lower())
            or domain.lower().endswith("." + sender)):
        problems.append(Problem("DKIM_DOMAIN", f"{domain} is not the sender's domain "
                                f"({sender}): DMARC needs them aligned"))
    return problems


def load_private_key(path: Path):  # type: ignore[no-untyped-def]
    """The RSA private key in a PEM file (raises OSError/ValueError with the reason)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key (DKIM here signs with rsa-sha256)")
    return key


def relay_problems(timeout: float = RELAY_TIMEOUT) -> list[Problem]:
    """Connect to the relay and say EHLO (STARTTLS and login too when configured)."""
    host, port = settings.smtp_host, settings.smtp_port
    if not host:
        return [NO_RELAY]
    where = f"{host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            code, reply = smtp.ehlo()
            if code != 250:
                return [Problem("SMTP_HOST", f"the relay at {where} answered EHLO with "
                                             f"{code} {reply.decode(errors='replace')}")]
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
    except smtplib.SMTPAuthenticationError as exc:
        said = exc.smtp_error
        said = said.decode(errors="replace") if isinstance(said, bytes) else said
        return [Problem("SMTP_USERNAME", f"the relay at {where} refused the login: "
                                         f"{exc.smtp_code} {said}")]
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        return [Problem("SMTP_HOST", f"cannot reach the relay at {where} within "
                                     f"{timeout:g} s: {exc or type(exc).__name__}")]
    return []


def find_problems(*, relay: bool = True) -> list[Problem]:
    """Everything wrong with the configuration for production, in settings order."""
    problems = [*secret_problems(), *base_url_problems(), *example_domain_problems(),
                *postal_address_problems(), *dkim_problems()]
    if relay:
        problems += relay_problems()
    elif not settings.smtp_host:
        problems.append(NO_RELAY)
    return problems


def report_text(problems: list[Problem]) -> str:
    """One line per problem, each a sentence ("SMTP_HOST is not set: ...")."""
    return "\n".join(f"  {p.setting}{' ' if p.message.startswith('is ') else ': '}{p.message}"
                     for p in problems)
