"""SMTP_RATE_LIMIT: messages per second to one relay, shared by every worker through Redis.

Relays impose a sending rate (SES starts accounts at 14 messages a second; Mailgun
and Postmark throttle too) and answer 4xx or worse beyond it. The limit is one
`limits` moving window of one second, keyed by the relay's host:port, in the Redis
the workers already share (REDIS_URL), so it holds however many worker processes and
machines send: each transaction takes one hit before it starts, and a worker that
finds the window full waits until its oldest entry leaves it. 0 turns it off.

Without REDIS_URL (a single local process) the window lives in memory. If Redis
cannot be reached, each worker process keeps the limit in memory until it is back:
never faster than the relay's limit from one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from newsletter.ratelimit import REDIS_RETRY_SECONDS
from newsletter.settings import settings

log = logging.getLogger("newsletter.delivery")

NAMESPACE = "roundup-smtp"


class RelayRateLimit:
    """Await `acquire()` before each transaction; it returns when one more is allowed."""

    def __init__(self, rate: int, relay: str) -> None:
        self.rate = rate
        self.relay = relay
        self.item = RateLimitItemPerSecond(rate, 1)
        url = settings.redis_url
        # Short timeouts, as newsletter/ratelimit.py's: a Redis that does not answer must
        # not hold every transaction for the operating system's TCP timeout.
        storage = (RedisStorage("async+" + url, implementation="redispy",
                                socket_connect_timeout=0.5, socket_timeout=0.5)
                   if url else MemoryStorage())
        self.limiter = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._warned = False
        self._redis_down_until = 0.0  # Redis failed: count here alone until then

    async def acquire(self) -> None:
        while True:
            try:
                if time.monotonic() < self._redis_down_until:
                    raise ConnectionError("Redis failed less than REDIS_RETRY_SECONDS ago")
                wait = await self._try(self.limiter)
            except Exception as exc:  # Redis gone: hold the limit in this process meanwhile
                if time.monotonic() >= self._redis_down_until:
                    self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                if not self._warned:
                    log.warning("SMTP_RATE_LIMIT: Redis unavailable (%s); limiting this "
                                "process alone to %s/s until it is back", exc, self.rate)
                    self._warned = True
                wait = await self._try(self._local)
            if wait <= 0:
                return
            await asyncio.sleep(min(1.0, max(0.001, wait)))

    async def _try(self, limiter: MovingWindowRateLimiter) -> float:
        """0 when a hit was taken, else how long until the window has room."""
        if await limiter.hit(self.item, NAMESPACE, self.relay):
            return 0.0
        stats = await limiter.get_window_stats(self.item, NAMESPACE, self.relay)
        return max(0.001, stats.reset_time - time.time())


_limits: dict[tuple[object, ...], RelayRateLimit] = {}


def relay_rate_limit(relay: str) -> RelayRateLimit | None:
    """The shared limit for `relay`, or None when SMTP_RATE_LIMIT is 0 (unlimited).

    One per process and event loop (its Redis connections belong to the loop), reused
    by every batch: a new one per batch would open a new connection pool each time.
    """
    rate = settings.smtp_rate_limit
    if rate <= 0:
        return None
    key = (os.getpid(), settings.redis_url, rate, relay)
    limit = _limits.get(key)
    if limit is None:
        limit = _limits[key] = RelayRateLimit(rate, relay)
    return limit
