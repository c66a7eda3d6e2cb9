"""What `TollwayApp.startup` builds, one function a part: the usage sink over its spool and
its writer, the limiter, the shared pool state, prices and the admin verifier; and what
shutdown waits for. `app.py` wires them; this module only knows how each is made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import Settings
from tollway.core.types import UsageEvent
from tollway.gateway.endpoint import Gateway
from tollway.gateway.limiting import LocalLimiter, RedisLimiter, connect
from tollway.gateway.limiting.seed import BatchedSeed
from tollway.gateway.limits import Limiter
from tollway.gateway.pricing import Price, prices_from_config
from tollway.gateway.usage import UsageSink, UsageWriter, open_spool
from tollway.gateway.usage_process import UsageProcess
from tollway.services import prices as price_service
from tollway.services.admin_secret import AdminVerifier, load_verifier
from tollway.store.db import pgbouncer_url
from tollway.store.spend import keys_spend
from tollway.store.usage_worker import DEAD_LETTER
from tollway.store.usage_writer import write_usage
from tollway.upstreams.pool import Pool
from tollway.upstreams.shared_state import SharedPoolState

log = logging.getLogger("tollway")


async def requests_settled(gateway: Gateway, wait: float = 5.0) -> None:
    """Requests that uvicorn cancelled at the end of the drain time still send their final
    error event and emit their usage event: give them a few loop turns before the sink stops."""
    for _ in range(int(wait / 0.01)):
        if not gateway.open:
            return
        await asyncio.sleep(0.01)
    if gateway.open:
        log.error("%d request(s) still open at shutdown: their usage is not recorded", gateway.open)


async def load_prices(engine: AsyncEngine, s: Settings) -> dict[str, Price]:
    """The config file's `prices:`, overridden by prices set in the database."""
    table = prices_from_config(s.config_path())
    for p in await price_service.list_prices(engine):
        table[p.model] = Price(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok)
    return table


async def start_sink(s: Settings, writer: UsageWriter, spool_dir: Path | None) -> UsageSink:
    """The sink over its spool, after the spools of dead processes are replayed (written
    before serving when the database lets us within the shutdown timeout; the rest is written
    first by the background task). A spool that cannot be opened is logged at ERROR and the
    gateway serves without it (`sink.healthy` False): usage still reaches the database, but a
    crash loses what is in memory."""
    spool = None
    if spool_dir is not None:
        try:
            spool = open_spool(spool_dir, s.spool_fsync)
        except OSError as exc:
            log.error("usage spool %s cannot be opened: %s; serving without it", spool_dir, exc)
    sink = UsageSink(
        writer, s.usage_batch_size, s.usage_flush_interval, spool, s.usage_shutdown_timeout
    )
    sink.healthy = spool is not None or spool_dir is None
    if sink.replay():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.flush(), s.usage_shutdown_timeout)
    sink.start()
    return sink


def usage_writer(s: Settings, engine: AsyncEngine, spool_dir: Path | None = None) -> UsageWriter:
    """Usage rows are written by a child process (`usage_writer: process`, the default), or
    on this event loop (`inline`; also for an in-memory SQLite database, which a second
    process could not see)."""
    if s.usage_writer == "process" and ":memory:" not in s.database_url:
        # One connection (pool_size=1 in the child); PgBouncer mode travels in its URL.
        url = pgbouncer_url(s.database_url) if s.db_pgbouncer else s.database_url
        return UsageProcess(url, spool_dir)
    dead_letter = spool_dir / DEAD_LETTER if spool_dir is not None else None

    async def write(events: list[UsageEvent]) -> None:
        await write_usage(engine, events, dead_letter)

    return write


def build_limiter(s: Settings, engine: AsyncEngine) -> Limiter:
    """In-process limits, or Redis-shared ones when TOLLWAY_REDIS_URL is set."""

    async def read(key_ids: list[int], since: float) -> dict[int, tuple[int, float]]:
        return await keys_spend(engine, key_ids, since)

    seed = BatchedSeed(read)
    if s.redis_url:
        limiter = RedisLimiter(connect(s.redis_url, s.redis_timeout), s.redis_prefix, seed)
        limiter.start()
        log.info("limits shared through Redis (key prefix %r)", s.redis_prefix)
        return limiter
    return LocalLimiter(seed)


def shared_state(s: Settings, pool: Pool) -> SharedPoolState | None:
    """With Redis, the instances share pool health, manual spend and one probe runner."""
    if not s.redis_url:
        return None
    client = connect(s.redis_url, s.redis_timeout)
    return SharedPoolState(client, s.redis_prefix, pool, lease_ttl=s.pool_lease_ttl)


async def load_admin(engine: AsyncEngine, s: Settings) -> AdminVerifier:
    """The admin secret's verifier; a too-short TOLLWAY_ADMIN_SECRET keeps the admin side off."""
    try:
        return await load_verifier(engine, s)
    except ValueError as exc:
        log.error("admin API and UI disabled: %s", exc)
        return AdminVerifier(None)
