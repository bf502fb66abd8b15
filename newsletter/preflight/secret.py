"""SECRET_KEY: the rules a key must meet, and the local key file.

No key ships in the source. Procfile processes need SECRET_KEY set (they share it
across machines); local commands (`demo`, `web`, `worker`, `send`, ...) make a random
key in DATA_DIR on first use and reuse it, so a laptop needs no setup and no two
installations share a key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from newsletter.settings import DEFAULT_SECRET, settings

KEY_FILE = "secret_key"
MIN_LENGTH = 32
GENERATE_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# Values people paste from examples and tutorials; a key containing one is not secret.
_EXAMPLE_WORDS = ("changeme", "change-me", "change_me", "insecure", "your-secret", "example")
_EXAMPLE_KEYS = {DEFAULT_SECRET, "secret", "secret-key", "secret_key", "password"}


class SecretKeyError(RuntimeError):
    """No usable SECRET_KEY; the message is one sentence for the operator."""


def weakness(key: str) -> str | None:
    """Why `key` must not sign anything, or None when it is fit for use."""
    lowered = key.lower()
    if key in _EXAMPLE_KEYS or any(word in lowered for word in _EXAMPLE_WORDS):
        return "is an example value published in documentation or source code"
    if len(key) < MIN_LENGTH:
        return f"is {len(key)} characters long; use at least {MIN_LENGTH} random characters"
    if len(set(key)) < 12:
        return "repeats too few different characters to be random"
    return None


def key_problems() -> list[str]:
    """One sentence per unusable key in SECRET_KEY and SECRET_KEY_FALLBACKS.

    A fallback verifies signatures, so a guessable fallback is as bad as a guessable key.
    """
    problems = []
    if settings.secret_key and (why := weakness(settings.secret_key)):
        problems.append(f"SECRET_KEY {why} (make one with: {GENERATE_HINT})")
    for number, key in enumerate(settings.fallback_keys, 1):
        if why := weakness(key):
            problems.append(f"SECRET_KEY_FALLBACKS key {number} {why}; remove it")
    return problems


def missing_sentence(process: str) -> str:
    return (f"{process}: SECRET_KEY is not set; set it to the same long random string for "
            f"every process (make one with: {GENERATE_HINT})")


def local_key(data_dir: Path) -> str:
    """The key in `data_dir`/secret_key, created (mode 0600) if there is none yet.

    Created by linking a finished temporary file into place, so two commands starting
    at once agree on one key and nobody ever reads a half-written file.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    if not path.exists():
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)  # nobody else on the machine may read it
    key = path.read_text().strip()
    if why := weakness(key):
        raise SecretKeyError(f"the key in {path.resolve()} {why}; delete the file to get "
                             "a new one (links already sent stop working) or set SECRET_KEY")
    return key


def ensure_secret_key() -> str:
    """SECRET_KEY, or outside production the local key (then kept in settings).

    Every signer reaches the key through here, so nothing ever signs with an empty key.
    """
    if settings.secret_key:
        return settings.secret_key
    if settings.environment == "production":
        raise SecretKeyError(missing_sentence("this process"))
    settings.secret_key = local_key(Path(settings.data_dir))
    return settings.secret_key


def signing_keys() -> list[str]:
    """Every key a signature may verify with, newest (the one that signs) last, as
    itsdangerous expects for key rotation."""
    current = ensure_secret_key()
    return [*(k for k in settings.fallback_keys if k != current), current]
