"""Finding 7: random keys can neither grow the key cache without bound nor turn every request
into a database read: the cache is a bounded LRU (unknown keys apart from known ones) and
invalid keys are throttled per client address (429 without reading the database)."""

from __future__ import annotations

import secrets
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord
from tollway.gateway.auth import KeyCache, one_by_one
from tollway.gateway.auth_throttle import InvalidKeyThrottle
from tollway.gateway.key_lru import KeyLRU
from tollway.store import queries

from .fixtures_gateway import Stack

LIMIT = 10


async def test_random_keys_stay_within_the_cache_bound_and_never_evict_known_keys() -> None:
    good = KeyRecord(id=1, name="k", prefix="tw-good")
    good_reads = [0]

    async def loader(digest: str) -> KeyRecord | None:
        if digest == hash_key("tw-good"):
            good_reads[0] += 1
            return good
        return None

    cache = KeyCache(one_by_one(loader), ttl=600, negative_ttl=600, size=100, negative_size=1000)
    assert await cache.lookup("tw-good") is good
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20_000):
        assert await cache.lookup("tw-" + secrets.token_hex(16)) is None
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache._entries) == 1 + 1000
    assert await cache.lookup("tw-good") is good and good_reads[0] == 1  # still cached
    print(f"\n20,000 random keys: cache holds {len(cache._entries)} entries, +{grown // 1024} KiB")


def test_key_lru_drops_least_recently_used_and_behaves_like_a_dict() -> None:
    lru = KeyLRU(known_size=2, unknown_size=2)
    rec = {n: KeyRecord(id=n, name=str(n), prefix=str(n)) for n in range(4)}
    lru["a"] = (rec[0], 1.0)
    lru["b"] = (rec[1], 1.0)
    assert lru.get("a") is not None  # a is now the most recently used
    lru["c"] = (rec[2], 1.0)
    assert "b" not in lru and "a" in lru and "c" in lru
    lru["x"] = (None, 1.0)
    lru["y"] = (None, 1.0)
    lru["z"] = (None, 1.0)
    assert "x" not in lru and len(lru) == 4  # unknown keys evict unknown keys only
    lru["y"] = (rec[3], 1.0)  # a key that became known moves across
    assert lru.get("y") == (rec[3], 1.0) and "a" not in lru and len(lru) == 3
    assert lru.pop("y") == (rec[3], 1.0) and lru.pop("nope") is None
    lru.clear()
    assert len(lru) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("keys"), invalid_key_limit=LIMIT, invalid_key_window=60.0)
    yield s
    s.stop()


def counted_reads(stack: Stack) -> list[str]:
    """Every database read of the gateway's key cache, from now on."""
    rt = stack.gateway.app.runtime
    assert rt is not None
    reads: list[str] = []
    load = rt.keys._load

    async def counting(digests: list[str]) -> Any:
        reads.extend(digests)
        return await load(digests)

    rt.keys._load = counting
    return reads


def client_from(stack: Stack, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=stack.url, transport=transport, timeout=10)


def models(client: httpx.Client, key: str) -> httpx.Response:
    return client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})


def settled(stack: Stack) -> None:
    """The gateway has seen the latest key change (it clears its cache on one)."""
    rt = stack.gateway.app.runtime
    assert rt is not None
    current = stack.gateway.call(queries.read_revisions(rt.engine))
    deadline = time.monotonic() + 10
    while rt.revisions != current:
        assert time.monotonic() < deadline, "revisions never caught up"
        time.sleep(0.05)


def test_invalid_keys_from_one_address_get_429_without_database_reads(stack: Stack) -> None:
    settled(stack)
    with client_from(stack, "127.0.0.2") as guesser, client_from(stack, "127.0.0.3") as other:
        assert models(guesser, stack.key).status_code == 200  # its real key, now cached
        reads = counted_reads(stack)
        for _ in range(LIMIT):
            assert models(guesser, "tw-" + secrets.token_hex(16)).status_code == 401
        assert len(reads) == LIMIT
        for _ in range(30):
            resp = models(guesser, "tw-" + secrets.token_hex(16))
            assert resp.status_code == 429
            error = resp.json()["error"]
            assert error["code"] == "too_many_invalid_keys" and set(error) >= {"message", "type"}
            assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert len(reads) == LIMIT  # none of the 30 reached the database
        print(f"\n{LIMIT + 30} random keys from one address: {len(reads)} database reads")
        # A key already in the cache still works from that address; other addresses are free.
        assert models(guesser, stack.key).status_code == 200
        assert models(other, "tw-" + secrets.token_hex(16)).status_code == 401
        assert models(other, stack.key).status_code == 200


def test_throttle_window_ends_and_ipv6_counts_per_64() -> None:
    throttle = InvalidKeyThrottle(2, 60.0)
    throttle.failed("2001:db8::1")
    throttle.failed("2001:db8::2")  # same /64
    with pytest.raises(Exception) as err:
        throttle.check("2001:db8::ffff")
    assert getattr(err.value, "status", None) == 429
    throttle.check("2001:db8:0:1::1")  # another /64
    throttle.check("192.0.2.1")
    # The window ended: the address is free again.
    group = "2001:db8::/64"
    count, _ = throttle._seen[group]
    throttle._seen[group] = (count, -1000.0)
    throttle.check("2001:db8::1")
    InvalidKeyThrottle(0, 60.0).failed("192.0.2.1")  # limit 0: off, nothing kept
