"""The set of upstreams: which serve a model, in what order to try them, and their health.

Everything here runs on the request path: no I/O, O(upstreams of the model) per call.
Health is passive (the relay reports outcomes); background probes (manager.py) only write
balances and clear cooldowns.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from .policy import PoolPolicy
from .strategies import Group, order
from .target import Account, ModelHealth, Upstream
from .windows import window_add, window_count

Clock = Callable[[], float]


MAX_CACHED_MODELS = 4096  # unknown model names from clients must not grow the cache forever
MAX_MODEL_HEALTH = 256  # models in trouble tracked per upstream (clients choose the names)


class PoolWatcher(Protocol):
    """Told when an upstream's or an account's health changes (shared_state.py shares it with
    the other instances). Called synchronously on the request path: it must only take note."""

    def upstream_changed(self, up: Upstream) -> None: ...

    def account_changed(self, acct: Account) -> None: ...


OPENAI_ONLY = frozenset({"openai"})


class Pool:
    def __init__(
        self,
        upstreams: list[Upstream] | None = None,
        policy: PoolPolicy | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.policy = policy or PoolPolicy()
        self._rng = rng or random.Random()
        self.upstreams: list[Upstream] = []
        self.accounts: dict[str, Account] = {}
        self.by_name: dict[str, Upstream] = {}
        self._groups: dict[str | None, Group] = {}
        self.mixed_apis = False
        self.watcher: PoolWatcher | None = None  # set when the fleet shares pool health
        self.replace(upstreams or [])

    # -- the set ---------------------------------------------------------------------------

    def replace(self, upstreams: list[Upstream], policy: PoolPolicy | None = None) -> None:
        """Swap in a new set, keeping the live state of upstreams and accounts that stay."""
        if policy is not None:
            self.policy = policy
        old = self.by_name
        accounts: dict[str, Account] = {}
        kept: list[Upstream] = []
        for up in upstreams:
            prev = old.get(up.name)
            if prev is not None and prev.settings_key() == up.settings_key():
                up = prev  # unchanged: the same object, so requests in flight settle on it
            elif prev is not None:
                # Changed: carry health over; in-flight requests settle on the old object.
                up.cooldown_until = prev.cooldown_until
                up.consecutive_failures = prev.consecutive_failures
                up.latency_ewma_ms = prev.latency_ewma_ms
                up.requests, up.failures, up.last_error = (
                    prev.requests,
                    prev.failures,
                    prev.last_error,
                )
                up.req_window, up.tok_window = prev.req_window, prev.tok_window
                up.discovered_models = prev.discovered_models
                up.model_health = prev.model_health
                if prev.api_key == up.api_key:  # a new key deserves a fresh chance
                    up.parked_until, up.rejections = prev.parked_until, prev.rejections
            acct = accounts.get(up.account_name)
            if acct is None:
                acct = self._account_for(up)
                accounts[up.account_name] = acct
            up.acct = acct
            kept.append(up)
        upstreams = kept
        self.accounts = accounts
        self.upstreams = upstreams
        self.by_name = {u.name: u for u in upstreams}
        self._groups = {}
        # Some upstream does not speak OpenAI only: requests are then ordered by API.
        self.mixed_apis = any(u.apis != OPENAI_ONLY for u in upstreams)

    def _account_for(self, up: Upstream) -> Account:
        prev = self.accounts.get(up.account_name)
        acct = Account(up.account_name, probe=up.probe_kind())
        acct.manual_base_usd = up.manual_balance_usd
        if prev is not None:
            acct.balance_usd, acct.checked_at = prev.balance_usd, prev.checked_at
            acct.probe_error = prev.probe_error
            acct.exhausted_until = prev.exhausted_until
            acct.exhausted_at_balance = prev.exhausted_at_balance
            if prev.manual_base_usd == acct.manual_base_usd:
                acct.spent_usd = prev.spent_usd  # same balance as before: keep what was spent
            else:
                acct.exhausted_until = 0.0  # an admin set a new balance
        return acct

    def _group(self, model: str | None) -> Group:
        group = self._groups.get(model)
        if group is None:
            group = Group(
                [u for u in self.upstreams if u.serves(model)], self.policy.strategy_for(model)
            )
            if group.ups or len(self._groups) < MAX_CACHED_MODELS:
                self._groups[model] = group
        return group

    def serving(self, model: str | None) -> list[Upstream]:
        return self._group(model).ups

    def knows(self, model: str) -> bool:
        return bool(self._group(model).ups) or model in self.policy.fallbacks

    def fallbacks(self, model: str | None) -> tuple[str, ...]:
        if model is None:
            return ()
        return self.policy.fallbacks.get(model, ())

    def in_rotation(self, up: Upstream, now: float) -> bool:
        """Not disabled, key not rejected, account not out of credit (candidates() inlines
        the same tests)."""
        if up.weight <= 0 or up.parked_until > now:
            return False
        acct = up.acct
        if acct.exhausted_until > now:
            return False
        balance = acct.available()
        return balance is None or balance > self.policy.min_balance_usd

    def models(self) -> list[str]:
        """What the upstreams in rotation serve (a cooldown is too short to hide a model),
        plus models that fall back to one of them."""
        now = self.clock()
        names: set[str] = set()
        for up in self.upstreams:
            if self.in_rotation(up, now):
                names |= up.public_models()
        for model, targets in self.policy.fallbacks.items():
            if any(t in names for t in targets):
                names.add(model)
        return sorted(names)

    # -- choosing ----------------------------------------------------------------------------

    def candidates(self, model: str | None) -> list[Upstream]:
        """Upstreams to try, best first: healthy ones in the strategy's order, then the
        cooled-down ones (a last resort beats a certain 503). Out of rotation: nothing."""
        group = self._group(model)
        now = self.clock()
        min_balance = self.policy.min_balance_usd
        healthy: list[Upstream] = []
        resting: list[Upstream] = []
        balances = False  # some account's balance is known (else "balance" is "weighted")
        for up in group.ups:
            # in_rotation() and _capped(), inlined: this runs per upstream of the model on
            # every request, and two calls per upstream were half its cost at 100 upstreams.
            if up.weight <= 0 or up.parked_until > now:
                continue
            acct = up.acct
            if acct.exhausted_until > now:
                continue
            balance = acct.available()
            if balance is not None:
                if not balance > min_balance:
                    continue
                balances = True
            if (up.rpm is not None or up.tpm is not None) and self._capped(up, now):
                continue
            if up.cooldown_until > now:
                resting.append(up)
            elif up.consecutive_failures and up.in_flight:
                continue  # half-open: one trial request at a time
            elif not up.model_health or not model:
                healthy.append(up)  # the usual case: no model of it in trouble
            else:
                # A model that failed here rests alone.
                mh = up.model_health.get(model)
                if mh is None or not mh.consecutive_failures:
                    healthy.append(up)
                elif mh.cooldown_until > now:
                    resting.append(up)
                elif mh.trial_until <= now:  # half-open for this model: one trial at a time
                    mh.trial_until = now + self.policy.cooldown_base
                    healthy.append(up)
        if len(healthy) > 1:
            healthy = order(group, healthy, self._rng, self.policy.latency_explore, balances)
        if resting:
            if len(resting) > 1:
                resting.sort(key=lambda u: self._rest_until(u, model))
            healthy.extend(resting)
        return healthy

    @staticmethod
    def _rest_until(up: Upstream, model: str | None) -> float:
        mh = up.model_health.get(model) if model is not None else None
        return up.cooldown_until if mh is None else max(up.cooldown_until, mh.cooldown_until)

    def _capped(self, up: Upstream, now: float) -> bool:
        if up.rpm is not None and window_count(up.req_window, now) >= up.rpm:
            return True
        return up.tpm is not None and window_count(up.tok_window, now) >= up.tpm

    # -- outcomes (reported by the relay and the endpoint) ------------------------------------

    def on_attempt(self, up: Upstream) -> None:
        up.requests += 1
        if up.rpm is not None:
            window_add(up.req_window, self.clock(), 1.0)

    def on_success(self, up: Upstream, latency_ms: float, model: str | None = None) -> None:
        recovered = up.consecutive_failures > 0
        mh = up.model_health.get(model) if up.model_health and model else None
        if mh is not None and mh.consecutive_failures:
            # Kept with no failures: the fleet learns this model recovered (shared_state.py).
            mh.consecutive_failures = 0
            mh.cooldown_until = mh.trial_until = 0.0
            recovered = True
        if recovered and self.watcher is not None:
            self.watcher.upstream_changed(up)  # recovered: the others may stop resting it
        up.consecutive_failures = 0
        up.cooldown_until = 0.0
        up.rejections = 0
        prev = up.latency_ewma_ms
        up.latency_ewma_ms = latency_ms if prev is None else prev * 0.8 + latency_ms * 0.2

    def on_failure(self, up: Upstream, retry_after: float | None = None, reason: str = "") -> None:
        """Connection error, timeout or 429: the whole upstream cools down with exponential
        backoff, or for as long as the upstream's Retry-After asks."""
        p = self.policy
        up.failures += 1
        up.consecutive_failures += 1
        up.last_error = reason or up.last_error
        if retry_after is not None:
            pause = min(retry_after, p.retry_after_max)
        else:
            pause = min(p.cooldown_max, p.cooldown_base * 2 ** min(up.consecutive_failures - 1, 30))
        up.cooldown_until = max(up.cooldown_until, self.clock() + pause)
        if self.watcher is not None:
            self.watcher.upstream_changed(up)

    def on_model_failure(self, up: Upstream, model: str | None, reason: str = "") -> None:
        """A 5xx answer for one model: the upstream answered, so only this model rests here
        (same backoff); its other models keep their traffic. Without a model, or past
        MAX_MODEL_HEALTH models in trouble, the whole upstream cools down."""
        health = up.model_health
        if model is not None and model not in health and len(health) >= MAX_MODEL_HEALTH:
            for name in [m for m, h in health.items() if not h.consecutive_failures]:
                del health[name]  # recovered ones make room
        if model is None or (model not in health and len(health) >= MAX_MODEL_HEALTH):
            self.on_failure(up, None, reason)
            return
        mh = health.get(model)
        if mh is None:
            mh = health[model] = ModelHealth()
        p = self.policy
        up.failures += 1
        mh.failures += 1
        mh.consecutive_failures += 1
        mh.last_error = reason or mh.last_error
        up.last_error = f"{model}: {reason}" if reason else up.last_error
        pause = min(p.cooldown_max, p.cooldown_base * 2 ** min(mh.consecutive_failures - 1, 30))
        mh.cooldown_until = max(mh.cooldown_until, self.clock() + pause)
        mh.trial_until = 0.0
        if self.watcher is not None:
            self.watcher.upstream_changed(up)

    def on_key_rejected(self, up: Upstream, status: int) -> None:
        """A 401 about our key (upstreams/verdict.py): this key is out of rotation; it gets a
        trial again after a long rest."""
        p = self.policy
        up.failures += 1
        up.rejections += 1
        up.consecutive_failures += 1
        up.last_error = f"key rejected (HTTP {status})"
        pause = min(p.key_park_max, p.key_park * 2 ** min(up.rejections - 1, 30))
        up.parked_until = self.clock() + pause
        if self.watcher is not None:
            self.watcher.upstream_changed(up)

    def on_exhausted(self, up: Upstream, status: int) -> None:
        """402 or a structured out-of-credit code (upstreams/verdict.py): the whole account is
        out of rotation until a probe shows a top-up, an admin sets a balance, or the rest
        ends."""
        up.failures += 1
        up.last_error = f"account out of credit (HTTP {status})"
        acct = up.acct
        acct.exhausted_until = self.clock() + self.policy.exhausted_park
        acct.exhausted_at_balance = acct.available()
        if self.watcher is not None:
            self.watcher.account_changed(acct)

    def on_usage(self, upstream: str | None, tokens: int | None, cost_usd: float | None) -> None:
        """After a response: count tokens against tpm, spend against a manual balance."""
        up = self.by_name.get(upstream) if upstream is not None else None
        if up is None:
            return
        if tokens and up.tpm is not None:
            window_add(up.tok_window, self.clock(), float(tokens))
        if cost_usd and up.acct.manual_base_usd is not None:
            up.acct.spent_usd += cost_usd

    def set_balance(self, acct: Account, balance: float | None, checked_at: float) -> None:
        """A probe's answer. A balance above the one seen at exhaustion ends the exhaustion."""
        acct.balance_usd = balance
        acct.checked_at = checked_at
        acct.probe_error = None
        if (
            acct.exhausted_until
            and balance is not None
            and balance > (acct.exhausted_at_balance or 0.0) + 0.005
        ):
            acct.exhausted_until = 0.0
        if self.watcher is not None:
            self.watcher.account_changed(acct)

    def reset_health(self) -> None:
        """Forget every cooldown, rejection and exhaustion (tests; an admin's "retry all")."""
        for up in self.upstreams:
            up.cooldown_until = up.parked_until = 0.0
            up.consecutive_failures = up.rejections = 0
            up.model_health = {}
            up.acct.exhausted_until = 0.0

    def health(self, up: Upstream) -> str:
        now = self.clock()
        if up.weight <= 0:
            return "disabled"
        if up.parked_until > now:
            return "key_rejected"
        if not self.in_rotation(up, now):
            return "out_of_credit"
        if up.cooldown_until > now:
            return "cooldown"
        if self._capped(up, now):
            return "rate_capped"
        if up.consecutive_failures:
            return "half_open"
        return "healthy"

    def model_states(self, up: Upstream) -> dict[str, str]:
        """The models in trouble on this upstream: "cooldown" or "half_open" each."""
        now = self.clock()
        return {
            m: "cooldown" if mh.cooldown_until > now else "half_open"
            for m, mh in sorted(up.model_health.items())
            if mh.consecutive_failures
        }
