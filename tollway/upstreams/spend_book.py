"""What manual balances have spent, kept exact across instances.

`pool.on_usage` adds each request's cost to `Account.spent_usd` (in process, no I/O). A
background job sends the part not yet shared (`spent_usd - known`) to one shared counter — a
Redis key (`shared_state.py`) or the database's `kv` row (`store/manual_spend.py`), both
atomic additions — and folds the counter's new total back in. Every instance converges on the
same total; cost recorded while the addition was on its way stays counted.
"""

from __future__ import annotations

from .pool import Pool
from .target import Account

MICRO = 1_000_000  # Redis counts micro-dollars as integers (exact sums)
SpendKey = tuple[str, float]  # (account, manual balance): a new balance starts afresh


def spend_key(acct: Account) -> SpendKey:
    assert acct.manual_base_usd is not None
    return (acct.name, acct.manual_base_usd)


class SpendBook:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.known: dict[SpendKey, float] = {}  # the shared total last seen, per account

    def manual(self) -> list[Account]:
        return [a for a in self.pool.accounts.values() if a.manual_base_usd is not None]

    def unshared(self) -> dict[SpendKey, tuple[Account, float]]:
        """Cost recorded here that the shared counter does not hold yet."""
        out: dict[SpendKey, tuple[Account, float]] = {}
        for acct in self.manual():
            key = spend_key(acct)
            out[key] = (acct, acct.spent_usd - self.known.get(key, 0.0))
        return out

    def absorb(self, acct: Account, total: float, sent: float) -> None:
        """The counter's total after adding `sent` (or after others added theirs: sent 0)."""
        key = spend_key(acct)
        known = self.known.get(key, 0.0)
        if sent == 0.0 and total <= known:
            return  # an older total than one already seen
        acct.spent_usd += total - known - sent
        self.known[key] = total

    def start_from(self, acct: Account, total: float) -> None:
        """A total read at start (nothing recorded here yet that it lacks)."""
        acct.spent_usd = total
        self.known[spend_key(acct)] = total
