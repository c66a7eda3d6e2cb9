"""A Test of an upstream in the pool, whose result the pool's health then agrees with: a
failed Test rests the upstream (or, with a model and a 5xx, that model), a passing one clears
a cooldown or "half open" (a model's, when the Test named one). Admin API and UI share it."""

from __future__ import annotations

from tollway.services.upstreams import UpstreamTestResult, call_upstream
from tollway.upstreams.egress import EgressDefaults
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream
from tollway.upstreams.verdict import key_rejected, out_of_credit


async def test_in_pool(
    pool: Pool, up: Upstream, model: str | None = None, net: EgressDefaults | None = None
) -> UpstreamTestResult:
    result = await call_upstream(up, model, net=net)
    record(pool, up, model, result)
    return result


def record(pool: Pool, up: Upstream, model: str | None, result: UpstreamTestResult) -> None:
    """The same judgement the relay makes of a real answer (gateway/relay.py `_judge`)."""
    status = result.status
    if status is None:
        pool.on_failure(up, reason=f"test: {result.message}")
    elif 200 <= status < 300:
        up.parked_until = 0.0  # the key works again (as an active health check decides)
        pool.on_success(up, result.latency_ms, model)
    elif out_of_credit(status, result.message.encode()):
        pool.on_exhausted(up, status)
    elif key_rejected(status, result.message.encode()):
        pool.on_key_rejected(up, status)
    elif status == 429:
        pool.on_failure(up, reason="test: HTTP 429")
    elif status >= 500:
        pool.on_model_failure(up, model, f"test: HTTP {status}")
    # Any other answer (a 400 for a misspelt model...) says nothing about health.


test_in_pool.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
