"""Keeps the pool filled and current: loads every source (YAML, key list, PocketBase,
database), merges them, and runs the background work (PocketBase refresh, balance probes,
active health checks, model discovery, saving manual spend). Off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import Settings
from tollway.store.manual_spend import add_spend, raise_spend, read_spend

from .balance import probe_all
from .config import (
    GatewayConfig,
    UpstreamConfig,
    key_list_path,
    load_key_list,
    read_config,
    upstreams_from_config,
    upstreams_from_keys,
)
from .crypto import SecretBox, SecretKeyMissing, secret_box
from .dbsource import load_db_upstreams
from .egress import egress_defaults
from .pocketbase import PocketBaseUnavailable, fetch_keys
from .pool import Pool
from .shared_state import SharedPoolState
from .spend_book import SpendBook, spend_key
from .target import Upstream
from .verdict import MAX_JUDGED_BODY, key_rejected

log = logging.getLogger("tollway.upstreams")
SPEND_SAVE_INTERVAL = 30.0


class UpstreamManager:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        engine: AsyncEngine | None,
        config: GatewayConfig | None = None,
        base_dir: Path | None = None,
        shared: SharedPoolState | None = None,
    ) -> None:
        self.pool = pool
        # With Redis, pool health, spend and the probes' lease are shared by the fleet.
        self.shared = shared
        self.book = shared.book if shared is not None else SpendBook(pool)
        self.settings = settings
        self.engine = engine
        path = settings.config_path() if config is None else None
        self.config = config or (read_config(path) if path is not None else GatewayConfig())
        self.base_dir = base_dir or (path.parent if path is not None else Path.cwd())
        self.static = upstreams_from_config(self.config, self.base_dir)
        self.pocketbase: dict[str, list[Upstream]] = {}
        self.pocketbase_state: dict[str, str] = {}  # entry -> where its keys came from
        self.db: list[Upstream] = []
        try:
            self.box: SecretBox | None = secret_box(settings, reading=True)
        except SecretKeyMissing:
            self.box = None
        self.net = egress_defaults(settings)  # CA bundle and proxies, as the relay uses them
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # trust_env off: every call gets its proxy from egress.py (per upstream, NO_PROXY).
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        warn_unverified(self.config.upstreams)
        for cfg in self._pocketbase_entries():
            await self.refresh_pocketbase(cfg)
        await self.reload_db()
        await self._load_spend()
        if self.shared is not None:
            await self.shared.start()
        r = self.config.routing
        loop = asyncio.get_running_loop()
        for cfg in self._pocketbase_entries():
            assert cfg.pocketbase is not None
            if cfg.pocketbase.refresh_interval > 0:
                self._every(loop, cfg.pocketbase.refresh_interval, self._pb_job(cfg))
        if r.balance_refresh_interval > 0:
            self.tasks.append(loop.create_task(self._balance_loop(r.balance_refresh_interval)))
        if r.health_check_interval > 0:
            self._every(loop, r.health_check_interval, self._fleet_job(self.check_health))
        if r.discover_models:
            self.tasks.append(loop.create_task(self._discovery_loop(r.discovery_interval)))
        if self.engine is not None:
            self._every(loop, SPEND_SAVE_INTERVAL, self.save_spend)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        if self.shared is not None:
            await self.shared.stop()
        with contextlib.suppress(Exception):
            await self.save_spend(final=True)
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _every(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        job: Callable[[], Awaitable[None]],
    ) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except Exception:
                    log.exception("background upstream job failed")

        self.tasks.append(loop.create_task(run()))

    def runs_fleet_jobs(self) -> bool:
        """Balance probes and active health checks: once per fleet with Redis (the lease
        holder's results reach the others through the shared state), else in every process."""
        return self.shared is None or self.shared.lease.runs_jobs

    def _fleet_job(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if self.runs_fleet_jobs():
                await job()

        return run

    def _pb_job(self, cfg: UpstreamConfig) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            await self.refresh_pocketbase(cfg)
            self.apply()

        return job

    # -- sources -----------------------------------------------------------------------------

    def apply(self) -> None:
        """Merge the sources into the pool; on a name clash the file wins, then PocketBase."""
        merged: list[Upstream] = []
        names: set[str] = set()
        for group in (self.static, *self.pocketbase.values(), self.db):
            for up in group:
                if up.name in names:
                    log.warning(
                        "upstream name %s is defined twice; the %s one is ignored",
                        up.name,
                        up.source,
                    )
                    continue
                names.add(up.name)
                merged.append(up)
        self.pool.replace(merged, self.config.routing.policy())

    def _pocketbase_entries(self) -> list[UpstreamConfig]:
        return [c for c in self.config.upstreams if c.pocketbase is not None]

    async def refresh_pocketbase(self, cfg: UpstreamConfig) -> None:
        """Keys from PocketBase; when it is unreachable, the entry's JSON key list (logged),
        or else the keys loaded last time."""
        assert cfg.pocketbase is not None and self.session is not None
        try:
            keys = await fetch_keys(self.session, cfg.pocketbase, self.net)
        except PocketBaseUnavailable as exc:
            path = key_list_path(cfg, self.base_dir)
            if path is not None:
                try:
                    entries = load_key_list(path)
                except Exception as file_exc:
                    log.error(
                        "PocketBase for %s is unreachable (%s) and its key list %s "
                        "cannot be read (%s)",
                        cfg.name,
                        exc,
                        path,
                        file_exc,
                    )
                else:
                    log.warning(
                        "PocketBase for %s is unreachable (%s); using the JSON key "
                        "list %s (%d keys)",
                        cfg.name,
                        exc,
                        path,
                        len(entries),
                    )
                    self.pocketbase[cfg.name] = upstreams_from_keys(cfg, entries, "key_list")
                    self.pocketbase_state[cfg.name] = "key_list"
                    return
            else:
                log.error(
                    "PocketBase for %s is unreachable (%s) and it has no key_list to "
                    "fall back to; keeping %d keys from before",
                    cfg.name,
                    exc,
                    len(self.pocketbase.get(cfg.name, [])),
                )
            self.pocketbase_state[cfg.name] = "stale"
            self.pocketbase.setdefault(cfg.name, [])
            return
        if self.pocketbase_state.get(cfg.name) != "pocketbase":
            log.info("PocketBase for %s: %d keys", cfg.name, len(keys))
        self.pocketbase[cfg.name] = upstreams_from_keys(cfg, keys, "pocketbase")
        self.pocketbase_state[cfg.name] = "pocketbase"

    async def refresh_all_pocketbase(self) -> None:
        for cfg in self._pocketbase_entries():
            await self.refresh_pocketbase(cfg)
        self.apply()

    async def reload_db(self) -> None:
        """Re-read the database's upstreams (after an "upstreams" revision bump)."""
        if self.engine is not None:
            self.db = await load_db_upstreams(self.engine, self.box)
        self.apply()

    # -- background work ---------------------------------------------------------------------

    async def refresh_balances(self, accounts: set[str] | None = None) -> None:
        assert self.session is not None
        await probe_all(self.session, self.pool, accounts, net=self.net)

    async def _balance_loop(self, interval: float) -> None:
        while True:
            try:
                if self.runs_fleet_jobs():
                    await self.refresh_balances()
            except Exception:
                log.exception("balance probes failed")
            await asyncio.sleep(interval)

    async def check_health(self) -> None:
        """Active checks for upstreams out of rotation or cooling down: `GET /models`."""
        assert self.session is not None
        now = self.pool.clock()
        for up in list(self.pool.upstreams):
            if up.cooldown_until <= now and up.parked_until <= now and not up.consecutive_failures:
                continue
            started = time.perf_counter()
            try:
                async with self.session.get(
                    up.models_url(), headers=_auth(up), **self._options(up)
                ) as resp:
                    status = resp.status
                    body = b"" if status == 200 else await resp.content.read(MAX_JUDGED_BODY + 1)
            except (aiohttp.ClientError, TimeoutError):
                continue
            if status == 200:
                up.parked_until = 0.0
                self.pool.on_success(up, (time.perf_counter() - started) * 1000.0)
            elif key_rejected(status, body):  # the relay's rule: a 403 never parks a key
                self.pool.on_key_rejected(up, status)

    async def discover_models(self) -> None:
        """What "every model" upstreams really serve, for `GET /v1/models`."""
        assert self.session is not None
        for up in list(self.pool.upstreams):
            if up.models is not None:
                continue
            try:
                async with self.session.get(
                    up.models_url(), headers=_auth(up), **self._options(up)
                ) as resp:
                    if resp.status != 200:
                        continue
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            items = data.get("data") if isinstance(data, dict) else None
            if isinstance(items, list):
                up.discovered_models = frozenset(
                    str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")
                )

    async def _discovery_loop(self, interval: float) -> None:
        while True:
            try:
                await self.discover_models()
            except Exception:
                log.exception("model discovery failed")
            await asyncio.sleep(interval)

    def _options(self, up: Upstream) -> dict[str, Any]:
        return self.net.aiohttp_options(up.models_url(), up.egress)

    # -- manual balances: exact across instances, kept across restarts -------------------------

    async def save_spend(self, final: bool = False) -> None:
        """Without Redis, adds this process's new spend to the database's totals (atomic) and
        takes the others' in. With Redis (the counters live there), the lease holder stores
        the totals so they survive a restart of everything; every instance does when it
        stops (a stored total is never lowered)."""
        if self.engine is None:
            return
        book = self.book
        if self.shared is None:
            unshared = book.unshared()
            deltas = {k: d for k, (_, d) in unshared.items()}
            totals = await add_spend(self.engine, deltas)
            for key, (acct, sent) in unshared.items():
                base, total = totals.get(key[0], (key[1], 0.0))
                if base == key[1]:
                    book.absorb(acct, total, sent)
        elif final or self.shared.lease.held:
            known = {spend_key(a): book.known.get(spend_key(a), 0.0) for a in book.manual()}
            if any(known.values()):
                await raise_spend(self.engine, known)

    async def _load_spend(self) -> None:
        if self.engine is None:
            return
        totals = await read_spend(self.engine)
        for name, (base, spent) in totals.items():
            acct = self.pool.accounts.get(name)
            if acct is not None and acct.manual_base_usd == base:
                self.book.start_from(acct, spent)


def warn_unverified(upstreams: list[UpstreamConfig]) -> None:
    """Loudly, at start: upstreams whose TLS certificates are not checked at all."""
    for up in upstreams:
        if not up.verify:
            log.warning(
                "TLS VERIFICATION IS OFF for upstream %s (verify: false): anyone on the path "
                "to %s can read and change its traffic, keys included",
                up.name,
                up.base_url,
            )


def _auth(up: Upstream) -> dict[str, str]:
    """Health checks and model discovery send what the relay sends: its headers, our key."""
    return up.auth_headers()
