"""Balancing strategies: given the healthy upstreams of one model group, the order to try
them. Each picks the first in one O(n) pass; the rest follow in rotation (failover order).

- balance: weight x the account's remaining credit, shared by the account's keys
- weighted: static weights
- least_busy: fewest requests in flight
- latency: lowest moving-average latency (with a little exploration to keep measuring)
- round_robin: in turn

The weighted ones use smooth weighted round robin (nginx's): picks are exactly proportional
over a window and interleaved, so a burst never runs long on one upstream when weights are close.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .target import Account, Upstream


@dataclass(slots=True, eq=False)
class Group:
    """The upstreams serving one model, with the strategy's state for that model."""

    ups: list[Upstream]
    strategy: str
    current: dict[Upstream, float] = field(default_factory=dict)  # smooth WRR state
    turn: int = 0
    # Every upstream bills its own account (the usual case): then so does any subset of them,
    # and balance_weights need not count keys per account.
    own_accounts: bool = field(init=False)

    def __post_init__(self) -> None:
        self.own_accounts = len({up.acct for up in self.ups}) == len(self.ups)


def _rotated(ups: list[Upstream], first: int) -> list[Upstream]:
    if first == 0:
        return ups
    return [*ups[first:], *ups[:first]]


def balance_weights(ups: list[Upstream], own_accounts: bool = False) -> list[float]:
    """weight x balance / (the account's keys among these): an account's balance is counted
    once however many keys it has. Unknown balances count as the mean of the known ones.
    `own_accounts`: the caller knows each of `ups` has an account of its own (no counting)."""
    keys: dict[Account, int] | None = None
    if own_accounts:
        accounts = [up.acct for up in ups]
    else:
        keys = {}
        for up in ups:
            acct = up.acct
            keys[acct] = keys.get(acct, 0) + 1
        accounts = list(keys)
    balances = [acct.available() for acct in accounts]  # once per account, in that order
    known = [b for b in balances if b is not None]
    if not known:  # no balance known (no probe answered yet): the static weights
        return [up.weight for up in ups]
    default = sum(known) / len(known)
    if keys is None or len(keys) == len(ups):  # one key per account: `balances` in `ups` order
        # `/ 1` as in the general case below: the same float, bit for bit.
        return [
            up.weight * (default if b is None else b) / 1
            for up, b in zip(ups, balances, strict=True)
        ]
    per_account = dict(zip(keys, balances, strict=True))
    weights = []
    for up in ups:
        acct = up.acct
        balance = per_account[acct]
        if balance is None:
            balance = default
        weights.append(up.weight * balance / keys[acct])
    return weights


def smooth_pick(group: Group, ups: list[Upstream], weights: list[float]) -> int:
    current = group.current
    get = current.get
    total = 0.0
    best = 0
    best_value = float("-inf")
    for i, (up, w) in enumerate(zip(ups, weights, strict=True)):
        total += w
        value = get(up, 0.0) + w
        current[up] = value
        if value > best_value:
            best, best_value = i, value
    current[ups[best]] = best_value - total
    return best


def order(
    group: Group,
    ups: list[Upstream],
    rng: random.Random,
    explore: float,
    balances: bool = True,
) -> list[Upstream]:
    """`balances` False: no account of `ups` has a balance known, so balance_weights would
    give the static weights (the caller saw every balance already)."""
    n = len(ups)
    strategy = group.strategy
    if strategy == "balance":
        weights = balance_weights(ups, group.own_accounts) if balances else [u.weight for u in ups]
        return _rotated(ups, smooth_pick(group, ups, weights))
    if strategy == "weighted":
        return _rotated(ups, smooth_pick(group, ups, [u.weight for u in ups]))
    start = group.turn % n
    group.turn += 1
    if strategy == "round_robin":
        return _rotated(ups, start)
    if strategy == "least_busy":
        # Scan from a rotating start so equal loads take turns.
        best = start
        for k in range(1, n):
            i = (start + k) % n
            if ups[i].in_flight < ups[best].in_flight:
                best = i
        return _rotated(ups, best)
    if strategy == "latency":
        if rng.random() < explore:
            return _rotated(ups, rng.randrange(n))
        best = start
        best_ms = _latency(ups[start])
        for k in range(1, n):
            i = (start + k) % n
            ms = _latency(ups[i])
            if ms < best_ms:
                best, best_ms = i, ms
        return _rotated(ups, best)
    raise ValueError(f"unknown strategy {strategy!r}")


def _latency(up: Upstream) -> float:
    # Never measured: try it first, so it gets measured.
    return -1.0 if up.latency_ewma_ms is None else up.latency_ewma_ms
