"""`newsletter dns`: the SPF, DKIM and DMARC records to publish for this configuration.

The DKIM public key is derived from DKIM_PRIVATE_KEY_PATH, so the record always
matches the key that signs.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path

from newsletter.settings import settings

# The SPF mechanism a relay documents, by the suffix of its SMTP host.
_RELAY_SPF = {
    "amazonaws.com": "include:amazonses.com",
    "postmarkapp.com": "include:spf.mtasv.net",
    "mailgun.org": "include:mailgun.org",
    "sendgrid.net": "include:sendgrid.net",
    "sparkpostmail.com": "include:sparkpostmail.com",
    "mailjet.com": "include:spf.mailjet.com",
}
TXT_CHUNK = 255  # one DNS character-string holds at most 255 octets


@dataclass(frozen=True)
class Record:
    """A TXT record: its purpose, the name to publish and the value."""

    kind: str
    name: str
    value: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def zone_line(self) -> str:
        """The record as a zone-file line, the value split into 255-octet strings."""
        parts = [self.value[i:i + TXT_CHUNK] for i in range(0, len(self.value), TXT_CHUNK)]
        quoted = " ".join(f'"{p}"' for p in parts)
        return f"{self.name}. 3600 IN TXT {quoted}" if len(parts) == 1 else \
            f"{self.name}. 3600 IN TXT ( {quoted} )"


def dkim_public_key(private_key_path: Path) -> str:
    """The base64 SubjectPublicKeyInfo of the key, as DKIM's p= tag wants it."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from newsletter.preflight.checks import load_private_key

    der = load_private_key(private_key_path).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _spf_mechanism(host: str) -> str:
    host = host.strip().lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        for suffix, mechanism in _RELAY_SPF.items():
            if host == suffix or host.endswith("." + suffix):
                return mechanism
        return f"a:{host}"
    return f"ip{address.version}:{address}"


def spf_record() -> Record:
    """SPF is checked against the envelope sender, which is on BOUNCE_DOMAIN."""
    host = settings.smtp_host
    mechanism = _spf_mechanism(host) if host else "a"
    note = ("the relay's addresses may send for the bounce domain; if your relay "
            "documents its own include:, use that")
    return Record("SPF", settings.bounce_domain, f"v=spf1 {mechanism} -all", note)


def dkim_record() -> Record | None:
    if not (settings.dkim_private_key_path and settings.dkim_domain):
        return None
    key = dkim_public_key(Path(settings.dkim_private_key_path))
    return Record("DKIM", f"{settings.dkim_selector}._domainkey.{settings.dkim_domain}",
                  f"v=DKIM1; k=rsa; p={key}")


def dmarc_record() -> Record:
    domain = settings.mail_from_address.rpartition("@")[2]
    return Record("DMARC", f"_dmarc.{domain}",
                  f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r",
                  "start with p=none and read the reports; move to p=quarantine once "
                  "they show only your own mail")


def dns_records() -> list[Record]:
    """The records to publish; DKIM only when a key and domain are configured."""
    records = [spf_record()]
    dkim = dkim_record()
    if dkim is not None:
        records.append(dkim)
    records.append(dmarc_record())
    return records
