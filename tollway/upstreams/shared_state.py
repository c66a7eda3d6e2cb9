"""Pool health shared by the instances of a fleet through Redis (with TOLLWAY_REDIS_URL).

Shared: an upstream's cooldown, failure count and parked key; an account's exhaustion and its
probed balance; manual balances' spend (atomic counters, `spend_book.py`). How:

- The pool tells this object (its `watcher`) which upstream or account changed: a set add on
  the request path, nothing more. A background task, every FLUSH_S, writes the current state
  of each noted one to a Redis hash (so a starting instance loads it) and publishes it on a
  channel; every other instance applies it to its own pool's fields on its event loop. The
  pool's decisions keep reading only in-process fields.
- Times travel as wall-clock expiries and are converted to each instance's pool clock.
- A report of trouble extends what the receiver has (the later expiry wins); a report of
  recovery (no failures left) clears it. A parked key travels with a fingerprint of the key
  (a hash prefix, never the key), so a replaced key is not parked by the old one's report.
- One instance holds the fleet lease (`fleet_lease.py`) and runs the balance probes and
  active health checks; their results reach the others the same way.
- Redis restarts (a new `run_id`): the state and the spend totals are written again, the
  lease is taken again. The limiter re-registers its own slots (limiting/redis_backend.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .fleet_lease import FleetLease
from .pool import MAX_MODEL_HEALTH, Pool
from .spend_book import MICRO, SpendBook, spend_key
from .target import Account, ModelHealth, Upstream

log = logging.getLogger("tollway.upstreams")

FLUSH_S = 0.1  # how often noted changes are sent
WATCH_S = 1.0  # how often the Redis run_id (restarts) is checked
HASH_TTL_MS = 2 * 3600 * 1000  # an idle fleet's hashes go (longer than any rest they hold)

# Adds a spend (micro-dollars) to an account's counter. ARGV[2] is the total the caller
# already knows: a counter below it (Redis restarted and lost it) is raised to it first.
_ADD_SPEND = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if v < floor then v = floor end
v = v + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', v))
return v
"""


def key_fingerprint(up: Upstream) -> str:
    return hashlib.sha256(up.api_key.encode()).hexdigest()[:16]


class SharedPoolState:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        pool: Pool,
        book: SpendBook | None = None,
        lease_ttl: float = 10.0,
    ) -> None:
        self.redis = client
        self.pool = pool
        base = f"{prefix}:pool:"
        self.ups_key, self.accts_key = base + "u", base + "a"
        self.channel = base + "events"
        self.spend_prefix = base + "spend:"
        self.instance = os.urandom(6).hex()
        self.lease = FleetLease(client, base + "lease", lease_ttl)
        self.book = book or SpendBook(pool)
        self.run_id: str | None = None
        self._add_spend = client.register_script(_ADD_SPEND)
        self._ups: set[str] = set()  # noted since the last flush
        self._accts: set[str] = set()
        self._remote: dict[tuple[str, float], float] = {}  # others' spend totals, to fold in
        self._reseed = False  # Redis restarted: raise every spend counter back
        self._tasks: list[asyncio.Task[None]] = []

    # -- the pool's watcher (request path: note only) ---------------------------------------

    def upstream_changed(self, up: Upstream) -> None:
        self._ups.add(up.name)

    def account_changed(self, acct: Account) -> None:
        self._accts.add(acct.name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads the fleet's state and spend, takes the lease if free, starts the tasks."""
        self.pool.watcher = self
        for acct in self.book.manual():
            self.book.start_from(acct, acct.spent_usd)  # what the database holds
        try:
            self.run_id = await self._run_id()
            await self.load()
            await self._send_spend(seed=True)
        except (RedisError, OSError) as exc:
            log.warning("shared pool state: Redis unreachable at start (%r)", exc)
        await self.lease.tick()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flush_forever()),
            loop.create_task(self._listen_forever()),
            loop.create_task(self._watch_forever()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.flush()
        await self.lease.release()
        if self.pool.watcher is self:
            self.pool.watcher = None
        await self.redis.aclose()

    # -- sending -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Sends the noted states and the unshared spend; folds in others' spend totals."""
        ups, accts = self._ups, self._accts
        self._ups, self._accts = set(), set()
        try:
            u = [s for s in (self._up_state(n) for n in ups) if s is not None]
            a = [s for s in (self._acct_state(n) for n in accts) if s is not None]
            totals = await self._send_spend(seed=self._reseed)
            self._reseed = False
            if u or a or totals:
                async with self.redis.pipeline(transaction=False) as pipe:
                    if u:
                        pipe.hset(self.ups_key, mapping={s["n"]: orjson.dumps(s) for s in u})
                        pipe.pexpire(self.ups_key, HASH_TTL_MS)
                    if a:
                        pipe.hset(self.accts_key, mapping={s["n"]: orjson.dumps(s) for s in a})
                        pipe.pexpire(self.accts_key, HASH_TTL_MS)
                    message = {"i": self.instance, "u": u, "a": a, "s": totals}
                    pipe.publish(self.channel, orjson.dumps(message))
                    await pipe.execute()
        except BaseException:
            self._ups |= ups  # sent again next time
            self._accts |= accts
            raise
        for key, total in list(self._remote.items()):
            acct = self.pool.accounts.get(key[0])
            if acct is not None and acct.manual_base_usd == key[1]:
                self.book.absorb(acct, total, 0.0)
        self._remote.clear()

    async def _send_spend(self, seed: bool = False) -> list[list[Any]]:
        """Adds this instance's unshared spend to the counters; seeding, every counter is
        raised to at least the total known here (at start: the database's)."""
        work: list[tuple[Account, float, int]] = []
        for acct, delta in self.book.unshared().values():
            micro = round(delta * MICRO)
            if micro or seed:
                work.append((acct, delta, micro))
        if not work:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for acct, _, micro in work:
                known = self.book.known.get(spend_key(acct), 0.0)
                keys = [self._spend_key(acct)]
                await self._add_spend(keys=keys, args=[micro, round(known * MICRO)], client=pipe)
            results = await pipe.execute()
        totals: list[list[Any]] = []
        for (acct, _, micro), total in zip(work, results, strict=True):
            self.book.absorb(acct, int(total) / MICRO, micro / MICRO)
            totals.append([acct.name, acct.manual_base_usd, int(total)])
        return totals

    def _spend_key(self, acct: Account) -> str:
        return f"{self.spend_prefix}{acct.name}:{acct.manual_base_usd!r}"

    def _up_state(self, name: str) -> dict[str, Any] | None:
        up = self.pool.by_name.get(name)
        if up is None:
            return None
        return {
            "n": name,
            "k": key_fingerprint(up),
            "c": self._wall(up.cooldown_until),
            "p": self._wall(up.parked_until),
            "f": up.consecutive_failures,
            "r": up.rejections,
            "e": up.last_error,
            # Models in trouble, and recovered ones (f = 0) so the others clear them too.
            "m": [
                [m, self._wall(h.cooldown_until), h.consecutive_failures, h.last_error]
                for m, h in up.model_health.items()
            ],
        }

    def _acct_state(self, name: str) -> dict[str, Any] | None:
        acct = self.pool.accounts.get(name)
        if acct is None:
            return None
        return {
            "n": name,
            "x": self._wall(acct.exhausted_until),
            "xb": acct.exhausted_at_balance,
            "b": acct.balance_usd,
            "t": acct.checked_at,
            "pe": acct.probe_error,
        }

    def _wall(self, until: float) -> float:
        """A pool-clock expiry as wall-clock time (0: none)."""
        left = until - self.pool.clock()
        return time.time() + left if left > 0 else 0.0

    def _local(self, wall: float) -> float:
        left = wall - time.time()
        return self.pool.clock() + left if left > 0 else 0.0

    # -- receiving -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Everything the fleet knows now (at start, after a reconnect)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.ups_key)
            pipe.hgetall(self.accts_key)
            ups, accts = await pipe.execute()
        for raw in ups.values():
            self.apply_upstream(orjson.loads(raw))
        for raw in accts.values():
            self.apply_account(orjson.loads(raw))

    def apply(self, message: dict[str, Any]) -> None:
        if message.get("i") == self.instance:
            return
        for state in message.get("u", ()):
            self.apply_upstream(state)
        for state in message.get("a", ()):
            self.apply_account(state)
        for name, base, total in message.get("s", ()):
            key = (name, float(base))
            self._remote[key] = max(self._remote.get(key, 0.0), total / MICRO)

    def apply_upstream(self, s: dict[str, Any]) -> None:
        up = self.pool.by_name.get(s["n"])
        if up is None or s["k"] != key_fingerprint(up):
            return
        self._apply_models(up, s.get("m") or ())
        if not s["f"] and not s["p"]:  # recovered
            up.consecutive_failures = up.rejections = 0
            up.cooldown_until = up.parked_until = 0.0
            return
        up.cooldown_until = max(up.cooldown_until, self._local(s["c"]))
        up.parked_until = max(up.parked_until, self._local(s["p"]))
        up.consecutive_failures = max(up.consecutive_failures, s["f"])
        up.rejections = max(up.rejections, s["r"])
        up.last_error = s["e"] or up.last_error

    def _apply_models(self, up: Upstream, models: Iterable[list[Any]]) -> None:
        """Per-model health, by the same rules: trouble extends, a recovery clears."""
        for name, wall, failures, error in models:
            mh = up.model_health.get(name)
            if not failures:
                if mh is not None:
                    mh.consecutive_failures = 0
                    mh.cooldown_until = mh.trial_until = 0.0
                continue
            if mh is None:
                if len(up.model_health) >= MAX_MODEL_HEALTH:
                    continue
                mh = up.model_health[name] = ModelHealth()
            mh.cooldown_until = max(mh.cooldown_until, self._local(wall))
            mh.consecutive_failures = max(mh.consecutive_failures, failures)
            mh.last_error = error or mh.last_error

    def apply_account(self, s: dict[str, Any]) -> None:
        acct = self.pool.accounts.get(s["n"])
        if acct is None:
            return
        until = self._local(s["x"])
        if until > acct.exhausted_until:
            acct.exhausted_until = until
            acct.exhausted_at_balance = s["xb"]
        checked = s["t"]
        if checked is not None and (acct.checked_at is None or checked > acct.checked_at):
            # A newer probe (pool.set_balance's rule, without telling the watcher again).
            balance = s["b"]
            acct.balance_usd, acct.checked_at, acct.probe_error = balance, checked, s["pe"]
            if (
                acct.exhausted_until
                and balance is not None
                and balance > (acct.exhausted_at_balance or 0.0) + 0.005
            ):
                acct.exhausted_until = 0.0

    # -- background ----------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except (RedisError, OSError):
                log.debug("sending shared pool state failed", exc_info=True)
                await asyncio.sleep(1.0)

    async def _listen_forever(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self.load()  # what was published while not subscribed
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        self.apply(orjson.loads(msg["data"]))
            except (RedisError, OSError):
                log.debug("shared pool state: subscription lost", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _watch_forever(self) -> None:
        """Notices a Redis restart; keeps the lease."""
        ticks = 0
        every = max(1, round(self.lease.ttl_ms / 3000 / WATCH_S))
        while True:
            await asyncio.sleep(WATCH_S)
            ticks += 1
            try:
                run_id = await self._run_id()
                if self.run_id is not None and run_id != self.run_id:
                    log.warning("Redis restarted: writing the shared pool state again")
                    self._restarted()
                self.run_id = run_id
            except (RedisError, OSError):
                pass
            if ticks % every == 0 or not self.lease.held:
                await self.lease.tick()

    def _restarted(self) -> None:
        """Redis lost everything: what is in trouble here and every probed balance go out
        again (not healthy states: they would clear another instance's news), and every
        spend counter is raised back to the total known here."""
        now = self.pool.clock()
        self._ups.update(
            u.name
            for u in self.pool.upstreams
            if u.consecutive_failures
            or u.parked_until > now
            or u.cooldown_until > now
            or any(h.consecutive_failures for h in u.model_health.values())
        )
        self._accts.update(
            a.name
            for a in self.pool.accounts.values()
            if a.exhausted_until > now or a.checked_at is not None
        )
        self._reseed = True

    async def _run_id(self) -> str:
        info = await self.redis.info("server")
        return str(info.get("run_id", ""))
