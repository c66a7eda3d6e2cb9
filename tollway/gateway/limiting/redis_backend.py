"""Limits shared by every instance through Redis: admit and settle are one Lua script call
each (one atomic round trip, pipelined with other requests' calls: `redis_pipe.py`). When
Redis cannot be reached, keys with limits are refused with a 503 (fail closed: a key never
gets more than its limits allow); keys without limits never touch Redis and keep working."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tollway.core.types import KeyRecord

from ..limits import NO_ADMISSION, Admission
from .policy import Refusal, limits_unavailable, rate_headers, refusal_error
from .redis_pipe import ScriptPipe, encode
from .scripts import ADMIT, SEED, SETTLE
from .seed import Seeder, SeedFn, no_history
from .windows import Clock, Periods

log = logging.getLogger("tollway.limits")

STATE_TTL_MS = 7 * 86_400_000  # idle key state goes; it is re-read from the database if needed
FAIL_FAST_S = 1.0  # after a failure, refuse at once for this long instead of waiting on Redis
RESTART_CHECK_S = 1.0  # how often Redis's run_id is read (a new one: Redis restarted)


def connect(url: str, timeout: float = 0.5) -> aioredis.Redis:
    # One quick retry covers a pooled connection that died with a Redis restart; no backoff,
    # so an outage costs a request milliseconds, not seconds.
    # A blocking pool: under a burst, a request waits briefly for a free connection instead of
    # failing with MaxConnectionsError (seen at concurrency 64 with the default pool).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
    client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
    return client


@dataclass(slots=True)
class _Settlement:
    """What the requests of one key that ended together add up to."""

    key: KeyRecord
    done: asyncio.Future[None]
    tokens: int = 0
    cost: float = 0.0
    leases: list[str] = field(default_factory=list)


def _n(value: int | float | None) -> str:
    return "-1" if value is None else str(value)


MAX_NAMED_KEYS = 100_000  # keys whose Redis key names are kept (a key seen once stays otherwise)


class RedisLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "tollway",
        seed: SeedFn = no_history,
        clock: Clock = time.time,
        lease_s: float = 60.0,
    ) -> None:
        self.redis = client
        self._pipe = ScriptPipe.like(client)  # the hot path's two scripts; redis-py the rest
        self.prefix = prefix
        self.clock = clock
        self.lease_ms = int(lease_s * 1000)
        self._seed = Seeder(seed)
        self._periods = Periods()
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)
        self._seed_script = client.register_script(SEED)
        self._names: dict[int, list[str]] = {}
        self._instance = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._leases: dict[str, int] = {}  # this instance's in-flight slots -> key id
        self._down_until = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._settling: dict[int, _Settlement] = {}  # key id -> requests ending together
        self._settle_timer: asyncio.Handle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._run_id: str | None = None
        self.restarts_seen = 0
        # Every new connection of the pipe first puts back the slots this instance holds, so
        # after a Redis restart `max_parallel` counts them again before its next admit.
        self._pipe.on_connect = self._reregister_commands

    def _keys(self, key_id: int) -> list[str]:
        names = self._names.get(key_id)
        if names is None:
            # One hash tag per client key: a Redis Cluster keeps all of them in one slot.
            base = f"{self.prefix}:{{k{key_id}}}:"
            names = [base + s for s in ("s", "rpm", "rpd", "tpm", "tpd", "fl")]
            if len(self._names) >= MAX_NAMED_KEYS:  # ~600 bytes a key; rebuilt on demand
                self._names.clear()
            self._names[key_id] = names
        return names

    async def _call(self, script: Any, keys: list[str], args: list[str]) -> Any:
        if time.monotonic() < self._down_until:
            raise limits_unavailable()
        try:
            return await self._pipe.run(script.sha, script.script, keys, args)
        except RedisError as exc:
            if self._down_until == 0.0 or time.monotonic() > self._down_until + 10:
                log.warning("Redis unreachable, refusing requests of keys with limits: %r", exc)
            self._down_until = time.monotonic() + FAIL_FAST_S
            raise limits_unavailable() from exc

    async def admit(self, key: KeyRecord, model: str | None) -> Admission:
        lim = key.limits
        if not lim.any():
            return NO_ADMISSION
        keys = self._keys(key.id)
        lease = f"{self._instance}:{next(self._ids)}" if lim.max_parallel is not None else ""
        for _ in range(3):
            now = self.clock()
            start, end, _tag = self._periods.current(lim.budget_period, now)
            now_ms = int(now * 1000)
            args = [
                str(now_ms),
                _n(lim.rpm),
                _n(lim.rpd),
                _n(lim.tpm),
                _n(lim.tpd),
                _n(lim.token_quota),
                _n(lim.budget_usd),
                lim.budget_period,
                str(int(start)),
                "-1" if end == float("inf") else str(int(end * 1000)),
                _n(lim.max_parallel),
                lease,
                str(self.lease_ms),
                str(STATE_TTL_MS),
            ]
            res = await self._call(self._admit, keys, args)
            verdict = res[0]
            if verdict == b"ok":
                if lease:
                    self._leases[lease] = key.id
                req = (int(res[1]), int(res[2]), float(res[3])) if res[1] != b"-1" else None
                tok = (int(res[4]), int(res[5]), float(res[6])) if res[4] != b"-1" else None
                return Admission(rate_headers(req, tok), bool(lease), lease)
            if verdict == b"refuse":
                retry = float(res[4])
                refusal = Refusal(
                    res[1].decode(),
                    float(res[2]),
                    float(res[3]),
                    float("inf") if retry < 0 else retry,
                    lim.budget_period,
                )
                raise refusal_error(refusal, now)
            await self._load_history(key, start, keys)  # b"seed"
        raise limits_unavailable()

    async def _load_history(self, key: KeyRecord, start: float, keys: list[str]) -> None:
        lim = key.limits
        tokens, cost = await self._seed(key.id, start)
        args = [
            "1" if lim.token_quota is not None else "0",
            str(tokens),
            "1" if lim.budget_usd is not None else "0",
            lim.budget_period,
            str(int(start)),
            repr(cost),
            str(STATE_TTL_MS),
        ]
        await self._call(self._seed_script, keys[:1], args)

    async def settle(
        self, key: KeyRecord, admission: Admission, tokens: int | None, cost: float | None
    ) -> None:
        """The requests of one key that end in the same loop turn (under load, several do:
        one turn wakes every request whose answer arrived) are settled by one script call,
        their tokens and cost summed and their slots released together, in the next turn.
        Returns once that call is done."""
        if admission is NO_ADMISSION:
            return
        if admission.lease:
            self._leases.pop(admission.lease, None)
        elif not tokens and not cost:
            return  # nothing to release, nothing to charge
        batch = self._settling.get(key.id)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._settling[key.id] = _Settlement(key, loop.create_future())
            if self._settle_timer is None:
                self._settle_timer = loop.call_soon(self._flush_settlements)
        batch.tokens += tokens or 0
        batch.cost += cost or 0.0
        if admission.lease:
            batch.leases.append(admission.lease)
        await asyncio.shield(batch.done)

    def _flush_settlements(self) -> None:
        self._settle_timer = None
        batches, self._settling = self._settling, {}
        loop = asyncio.get_running_loop()
        for batch in batches.values():
            task = loop.create_task(self._send_settlement(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_settlement(self, batch: _Settlement) -> None:
        lim = batch.key.limits
        args = [
            str(int(self.clock() * 1000)),
            str(batch.tokens),
            repr(batch.cost) if batch.cost else "-1",
            "1" if lim.tpm is not None else "0",
            "1" if lim.tpd is not None else "0",
            *batch.leases,
        ]
        try:
            await self._call(self._settle, self._keys(batch.key.id), args)
        except Exception:
            # Not charged; an unreleased slot's lease expires by itself.
            log.debug("settling key %d's requests failed", batch.key.id, exc_info=True)
        finally:
            if not batch.done.done():
                batch.done.set_result(None)

    # -- in-flight leases ------------------------------------------------------------------------

    def _held_by_key(self) -> tuple[int, dict[int, dict[str, int]]]:
        expiry = int(self.clock() * 1000) + self.lease_ms
        by_key: dict[int, dict[str, int]] = {}
        for member, key_id in list(self._leases.items()):
            by_key.setdefault(key_id, {})[member] = expiry
        return expiry, by_key

    async def renew_leases(self, recreate: bool = False) -> None:
        """Pushes out the expiry of every slot this instance still holds (`recreate`: adds
        the ones Redis lost, after a restart)."""
        if not self._leases:
            return
        _, by_key = self._held_by_key()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id, members in by_key.items():
                pipe.zadd(self._keys(key_id)[5], members, xx=not recreate)
                if recreate:
                    pipe.pexpire(self._keys(key_id)[5], self.lease_ms * 2)
            await pipe.execute()

    def _reregister_commands(self) -> list[bytes]:
        _, by_key = self._held_by_key()
        out: list[bytes] = []
        for key_id, members in by_key.items():
            name = self._keys(key_id)[5].encode()
            args: list[bytes] = []
            for member, expiry in members.items():
                args += (b"%d" % expiry, member.encode())
            out.append(encode(b"ZADD", name, *args))
            out.append(encode(b"PEXPIRE", name, b"%d" % (self.lease_ms * 2)))
        return out

    async def check_restart(self) -> bool:
        """Reads Redis's run_id; a new one means a restart emptied it: the slots held here
        are put back at once (rate windows cannot be: README, "Running several instances")."""
        info = await self.redis.info("server")
        run_id = str(info.get("run_id", ""))
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        if restarted:
            self.restarts_seen += 1
            log.warning("Redis restarted: re-registering %d in-flight slot(s)", len(self._leases))
            await self.renew_leases(recreate=True)
        return restarted

    async def _renew_forever(self) -> None:
        every = max(1, round(self.lease_ms / 3000.0 / RESTART_CHECK_S))
        ticks = 0
        while True:
            # The first check runs at once: the run_id read then is what a restart is told
            # from (read a second later, a restart within that second would go unseen).
            try:
                restarted = await self.check_restart()
                if ticks and ticks % every == 0 and not restarted:
                    await self.renew_leases()
            except (RedisError, OSError):
                log.debug("renewing in-flight leases failed", exc_info=True)
            await asyncio.sleep(RESTART_CHECK_S)
            ticks += 1

    def start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def snapshot(self, key_id: int) -> dict[str, float]:
        """What Redis holds for a key (admin views and tests)."""
        keys = self._keys(key_id)
        now_ms = int(self.clock() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys[0], ["q", "b"])
            pipe.zcount(keys[5], now_ms + 1, "+inf")
            (q, b), in_flight = await pipe.execute()
        return {"in_flight": int(in_flight), "tokens": int(q or 0), "spent": float(b or 0.0)}

    async def close(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._flush_settlements()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._pipe.close()
        await self.redis.aclose()
