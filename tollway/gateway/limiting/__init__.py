"""Limit backends behind the `Limiter` protocol (tollway.gateway.limits): in-process for one
instance, Redis when several instances share keys."""

from .local import LocalLimiter
from .redis_backend import RedisLimiter, connect
from .seed import SeedFn

__all__ = ["LocalLimiter", "RedisLimiter", "SeedFn", "connect"]
