"""The one settings object. Every knob is an environment variable (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The key earlier versions shipped in this file. It signs nothing any more: it is
# public, so every start-up check refuses it (see newsletter/preflight/secret.py).
DEFAULT_SECRET = "dev-insecure-change-me"  # noqa: S105


class Settings(BaseSettings):
    """Configuration read from the environment (and an optional `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # Empty: local commands make a random key in DATA_DIR (secret_key file, mode 0600);
    # Procfile processes refuse to start (exit 78).
    secret_key: str = ""

    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file in data_dir
    redis_url: str = ""  # empty or unreachable: the CLI starts a private redis-server
    templates_dir: Path = REPO_ROOT / "templates"
    topics_file: Path = Path(__file__).resolve().parent / "data" / "topics.toml"

    base_url: str = "http://localhost:8000"
    mail_from_name: str = "Roundup"
    mail_from_address: str = "newsletter@roundup.example"
    reply_to: str = "editors@roundup.example"
    bounce_domain: str = "bounces.roundup.example"
    list_id: str = "weekly.roundup.example"
    unsubscribe_mailto: str = "unsubscribe@roundup.example"
    postal_address: str = "Roundup Newsletter, 1 Example Street, London EC1A 1AA, United Kingdom"

    # --- Branding (issues 9, 10): defaults for what owners set in /editor/settings ---
    newsletter_name: str = ""  # the masthead and list name; empty: MAIL_FROM_NAME
    logo_url: str = ""  # absolute URL of the emails' logo; empty: none (or one uploaded)
    accent_color: str = "#1a56db"  # buttons and links in emails, #rrggbb

    smtp_host: str = ""  # empty: the local mail catcher
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout: float = 30.0

    dkim_private_key_path: Path | None = None
    dkim_selector: str = "roundup"
    dkim_domain: str = ""

    digest_max_items: int = Field(default=12, ge=1)
    # Recipients per Celery task. Large enough that a batch keeps SMTP_MAX_CONNECTIONS
    # busy for many rounds (its last round leaves connections idle): bench/README.md.
    send_batch_size: int = Field(default=1000, ge=1)
    send_lease_seconds: int = Field(default=300, ge=10)
    send_max_retries: int = Field(default=8, ge=0)
    # 4xx backoff: doubles per attempt, capped at 10 minutes (no long ETAs on the broker)
    send_retry_base_seconds: float = Field(default=30.0, gt=0)

    # --- The digest email and click links (issue 9) ---
    track_clicks: bool = True  # story links go through /r/<token> and record one click
    track_opens: bool = False  # no open-tracking pixel unless set (not implemented)

    schedule_weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    schedule_time: str = "09:00"
    schedule_timezone: str = "Europe/London"

    signup_cooldown_minutes: int = 15
    signup_rate_per_minute: int = 10

    # --- keys and production settings (issue 11) ---
    # Older keys, comma-separated, that still verify links and sessions after a
    # rotation (SECRET_KEY signs; these only verify).
    secret_key_fallbacks: str = ""
    manage_link_days: int = Field(default=90, ge=1)  # unsubscribe links never expire

    # --- provider webhooks and suppressions (issue 8) ---
    # Each provider's webhook answers 503 until its secret is set.
    webhook_secret: str = ""  # bearer secret of the generic /webhooks/bounces/generic
    postmark_webhook_user: str = ""  # HTTP basic auth Postmark sends
    postmark_webhook_password: str = ""
    mailgun_webhook_signing_key: str = ""  # "HTTP webhook signing key" in Mailgun
    # SNS topics whose SES notifications we accept (comma-separated ARNs): anyone can
    # sign SNS messages from their own AWS account, so the topic is what proves it's ours.
    ses_topic_arns: str = ""
    # Bearer keys for /api/suppressions (comma-separated, so a new key can be added
    # before the old one is removed); empty: those endpoints answer 503.
    api_keys: str = ""

    # --- Inbound mail and bounce policy (issue 8) ---
    inbound_port: int = Field(default=2525, ge=1, le=65535)  # `newsletter inbound` SMTP port
    inbound_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)  # larger mail: 552
    soft_bounce_limit: int = Field(default=3, ge=1)  # soft bounces within 30 days to suppress
    bounce_pause_rate: float = Field(default=5.0, gt=0, le=100)  # percent of hard bounces
    imap_password: str = ""  # for `newsletter inbound --imap imaps://user@host/INBOX`
    imap_processed_folder: str = "Processed"  # where recorded messages are moved

    # --- web abuse limits and uploads (issue 11) ---
    # Proxies whose X-Forwarded-For `newsletter web` believes (comma-separated IPs or
    # CIDRs, uvicorn's syntax; "*" for all). Empty: the connection's own address.
    forwarded_allow_ips: str = ""
    confirmations_per_day: int = Field(default=3, ge=1)  # per address, moving 24 h
    manage_links_per_day: int = Field(default=3, ge=1)  # "email me a fresh link"
    max_items_per_issue: int = Field(default=200, ge=1)

    # --- delivery engine (issue 7) ---
    # SMTP transactions one worker process keeps in flight at once, each on its own
    # connection to SMTP_HOST (hosted relays answer in 50-300 ms: concurrency is speed).
    # Beyond what the relay allows (Postfix: 50 per client) it refuses at connect; the
    # worker then keeps to what it had for a minute (delivery/pool.py).
    smtp_max_connections: int = Field(default=100, ge=1, le=1000)
    # Messages per second to the relay, shared by every worker through Redis; 0: no limit.
    smtp_rate_limit: int = Field(default=0, ge=0)
    # 5xx refusals in a row, with no message accepted between, after which the relay is
    # taken to refuse us rather than those recipients: the issue pauses, nobody fails.
    smtp_refusals_before_pause: int = Field(default=10, ge=2)

    # --- delivery at scale (issue 7) ---
    # How often beat runs the delivery sweep (expired leases, batches lost with Redis).
    send_sweep_seconds: float = Field(default=15.0, ge=1, le=300)
    # Pause and cancel wait up to this long for running batches to hand their rows back.
    send_stop_wait_seconds: float = Field(default=5.0, ge=0, le=120)

    @property
    def fallback_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.secret_key_fallbacks.split(",") if k.strip())

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'newsletter.db').resolve()}"

    @property
    def mail_dir(self) -> Path:
        """Where the local mail catcher stores every message it receives."""
        return self.data_dir / "mail"


settings = Settings()
