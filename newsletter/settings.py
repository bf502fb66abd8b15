"""The one settings object. Every knob is an environment variable (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRET = "dev-insecure-change-me"  # noqa: S105 - refused outside development


class Settings(BaseSettings):
    """Configuration read from the environment (and an optional `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    secret_key: str = DEFAULT_SECRET

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
    send_batch_size: int = Field(default=250, ge=1)
    send_lease_seconds: int = Field(default=300, ge=10)
    send_max_retries: int = Field(default=8, ge=0)
    # 4xx backoff: doubles per attempt, capped at 10 minutes (no long ETAs on the broker)
    send_retry_base_seconds: float = Field(default=30.0, gt=0)

    schedule_weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    schedule_time: str = "09:00"
    schedule_timezone: str = "Europe/London"

    signup_cooldown_minutes: int = 15
    signup_rate_per_minute: int = 10

    # --- delivery at scale (issue 7) ---
    # How often beat runs the delivery sweep (expired leases, batches lost with Redis).
    send_sweep_seconds: float = Field(default=15.0, ge=1, le=300)
    # Pause and cancel wait up to this long for running batches to hand their rows back.
    send_stop_wait_seconds: float = Field(default=5.0, ge=0, le=120)

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(
                "SECRET_KEY is the built-in development secret; set SECRET_KEY "
                "to a long random string before running in production"
            )
        return self

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
