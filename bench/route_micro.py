"""Cost of `Pool.candidates()` (the order to try upstreams, computed per request) for 1, 10
and 100 upstreams serving one model, per balancing strategy.

    .venv/bin/python bench/route_micro.py [--calls 20000] [--sizes 1,10,100]

Every call is timed on its own: wall time (perf_counter_ns, ~0.1 µs of its own) as min,
median and p99 in µs, and the thread's CPU time (thread_time_ns, ~0.3-1 µs of its own) as p99:
on a busy machine the wall p99 of a long call is the scheduler's (preempted calls), the CPU
p99 closer to the call's own. The upstreams are all healthy, each with its own account;
`balance` runs twice, with no balance known (the default until a probe answers) and with a
balance per account. Garbage collection is tuned as `tollway serve` tunes it (startup frozen,
gen-0 every 100,000 allocations). To compare two versions, run it in each checkout with
that checkout's own venv, back to back.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from tollway.upstreams.policy import STRATEGIES, PoolPolicy
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

MODEL = "bench-model"


def build(n: int, strategy: str, balances: bool) -> Pool:
    ups = [
        Upstream(
            name=f"up-{i}",
            base_url=f"http://127.0.0.1:9/{i}/v1",
            api_key=f"k-{i}",
            models=frozenset({MODEL, f"other-{i % 7}"}),
            account=f"account-{i}",
        )
        for i in range(n)
    ]
    pool = Pool(ups, PoolPolicy(default_strategy=strategy), rng=random.Random(7))
    for i, up in enumerate(pool.upstreams):
        up.latency_ewma_ms = 100.0 + i % 13  # as after some traffic (latency strategy)
        if balances:
            pool.set_balance(up.acct, 10.0 + i, 0.0)
    return pool


def time_calls(pool: Pool, calls: int) -> tuple[list[float], list[float]]:
    """(wall µs, CPU µs) per call, each sorted."""
    candidates = pool.candidates
    for _ in range(min(calls, 2000)):  # warm: group built, strategy state settled
        candidates(MODEL)
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    wall, cpu = [], []
    for _ in range(calls):
        c = cpu_clock()
        t = wall_clock()
        candidates(MODEL)
        t = wall_clock() - t
        cpu.append((cpu_clock() - c) / 1000)
        wall.append(t / 1000)
    wall.sort()
    cpu.sort()
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000, help="timed calls per row (20,000)")
    p.add_argument("--sizes", default="1,10,100", help="upstreams in the group (1,10,100)")
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    print("| strategy | upstreams | min µs | median µs | p99 µs | CPU p99 µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    variants = [("balance", True), *((s, False) for s in STRATEGIES)]
    for strategy, balances in variants:
        for n in sizes:
            ts, cpu = time_calls(build(n, strategy, balances), args.calls)
            name = strategy + (" (balances known)" if balances else "")
            p99 = int(len(ts) * 0.99)
            print(
                f"| {name} | {n} | {ts[0]:.1f} | {ts[len(ts) // 2]:.1f}"
                f" | {ts[p99]:.1f} | {cpu[p99]:.1f} |"
            )


if __name__ == "__main__":
    main()
