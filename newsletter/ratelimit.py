"""Rate limits: the `limits` library's moving window, counted in Redis.

One `Limiter` per process (the web app keeps one on `app.state`, workers one per
process). Limits are `limits` strings ("5/minute", "3/day"); `hit()` counts a request
and answers in one atomic step (a Lua script in Redis), so parallel requests can
never all read "under the limit" before any of them writes.

When Redis is unreachable the same limits are counted in this process's memory for
30 seconds before Redis is tried again: limits still hold per process, nobody gets a
500, and nobody is locked out by a stale count, since memory starts empty.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 30.0
KEY_PREFIX = "roundup:rl"


def private_key(value: str) -> str:
    """A stable identifier for an address that doesn't store the address in Redis."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


class Limiter:
    """Moving-window limits in Redis (REDIS_URL), in memory while Redis is down."""

    def __init__(self, *, redis_url: str = "", prefix: str = KEY_PREFIX) -> None:
        self.redis_url = redis_url
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        if redis_url:
            # Short timeouts: a Redis that hangs must not hold a request for long.
            storage = RedisStorage(redis_url, key_prefix=prefix, wrap_exceptions=True,
                                   socket_connect_timeout=0.5, socket_timeout=0.5)
            self._redis = MovingWindowRateLimiter(storage)
        self._redis_down_until = 0.0
        self._lock = threading.Lock()

    def _strategy(self) -> MovingWindowRateLimiter:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            return self._redis
        return self._memory

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        log.warning("rate limits: Redis unavailable (%s); counting in memory for %.0f s",
                    exc, REDIS_RETRY_SECONDS)

    def hit(self, limit: str | RateLimitItem, *identifiers: str) -> bool:
        """Count one request; False (and nothing counted) when the limit is reached."""
        item = parse(limit) if isinstance(limit, str) else limit
        strategy = self._strategy()
        if strategy is not self._memory:
            try:
                return strategy.hit(item, *identifiers)
            except StorageError as exc:
                self._failed(exc)
        return self._memory.hit(item, *identifiers)

    def remaining(self, limit: str | RateLimitItem, *identifiers: str) -> int:
        """How many more requests the limit allows now, without counting one."""
        item = parse(limit) if isinstance(limit, str) else limit
        strategy = self._strategy()
        if strategy is not self._memory:
            try:
                return int(strategy.get_window_stats(item, *identifiers).remaining)
            except StorageError as exc:
                self._failed(exc)
        return int(self._memory.get_window_stats(item, *identifiers).remaining)

    def clear(self, limit: str | RateLimitItem, *identifiers: str) -> None:
        item = parse(limit) if isinstance(limit, str) else limit
        strategy = self._strategy()
        if strategy is not self._memory:
            try:
                strategy.clear(item, *identifiers)
            except StorageError as exc:
                self._failed(exc)
        self._memory.clear(item, *identifiers)


_shared: dict[str, Limiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(redis_url: str) -> Limiter:
    """The process's limiter for `redis_url` (workers: one per process)."""
    with _shared_lock:
        limiter = _shared.get(redis_url)
        if limiter is None:
            limiter = _shared[redis_url] = Limiter(redis_url=redis_url)
        return limiter
