"""One holder in the fleet for the background work that should run once (balance probes,
active health checks): a Redis key set with NX and an expiry, renewed by its holder. A holder
that dies stops renewing; another instance takes over within the lease's time."""

from __future__ import annotations

import contextlib
import logging
import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("tollway.upstreams")

# Only the holder may extend or drop the lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FleetLease:
    def __init__(self, client: aioredis.Redis, key: str, ttl: float) -> None:
        self.redis = client
        self.key = key
        self.ttl_ms = max(1, int(ttl * 1000))
        self.me = os.urandom(8).hex()
        self.held = False
        self.reachable = True
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def runs_jobs(self) -> bool:
        """Hold the lease, or Redis cannot be reached: then every instance does the work
        itself, as it would without Redis (probes twice beat probes never)."""
        return self.held or not self.reachable

    async def tick(self) -> bool:
        """Take the lease if it is free, or renew it; every ttl/3 seconds."""
        try:
            if self.held and await self._renew(keys=[self.key], args=[self.me, self.ttl_ms]):
                pass
            else:
                taken = await self.redis.set(self.key, self.me, nx=True, px=self.ttl_ms)
                if taken and not self.held:
                    log.info("this instance now runs the fleet's balance probes and health checks")
                self.held = bool(taken)
            self.reachable = True
        except (RedisError, OSError):
            self.held = False
            self.reachable = False
        return self.held

    async def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(RedisError, OSError):  # else it expires by itself
                await self._release(keys=[self.key], args=[self.me])
