"""Many client keys for many_keys.py: rows written straight into Tollway's `api_keys` table,
and a wrk script that sends each request with the next key of a list.

Keys are made and hashed exactly as Tollway makes them (`generate_key`, `hash_key`), so auth
reads them like any created key; every key carries make_key.py's limits (all set, never
refusing), so the limits run per key too. Rows go in with plain sqlite3 in big transactions:
the service layer's one transaction per key would take hours for a million.
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from load import LUA_TEMPLATE, lua_string, request_body
from make_key import LIMITS

from tollway.core.secrets import display_prefix, generate_key, hash_key

FMT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite
BATCH = 100_000


def insert_keys(db: Path, total: int, active: int, seed: int = 7) -> tuple[list[str], float]:
    """Writes `total` keys; returns `active` of them (a random sample, so the ones in use
    are spread over the table and its index as real keys would be) and the seconds taken."""
    t0 = time.perf_counter()
    chosen = set(random.Random(seed).sample(range(total), active))
    picked: list[str] = []
    now = datetime.now(UTC).strftime(FMT)
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")  # a throwaway database: no fsync per transaction
    sql = (
        "INSERT INTO api_keys (key_hash, prefix, name, enabled, created_at, updated_at,"
        " rpm, rpd, tpm, tpd, token_quota, budget_usd, budget_period, max_parallel,"
        " response_cache) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
    )
    lim = LIMITS
    limits = (
        lim["rpm"], lim["rpd"], lim["tpm"], lim["tpd"], lim["token_quota"],
        lim["budget_usd"], lim["budget_period"], lim["max_parallel"],
    )  # fmt: skip
    for start in range(0, total, BATCH):
        rows = []
        for i in range(start, min(total, start + BATCH)):
            raw = generate_key()
            if i in chosen:
                picked.append(raw)
            rows.append((hash_key(raw), display_prefix(raw), f"bench {i}", now, now, *limits))
        with con:  # one transaction per batch
            con.executemany(sql, rows)
    con.execute("ANALYZE")  # as a long-lived database would have
    con.close()
    random.Random(seed).shuffle(picked)  # the order requests use them in
    return picked, time.perf_counter() - t0


# Each request takes the next key of the file, round robin (the worst order for an LRU that
# is too small: every request is a miss). `stop_after` > 0 ends the run once that many
# answers came back: one pass over the keys, each touched once (the cold pass). wrk's main
# thread would still sleep out -d, so the script leaves `done_file` and the caller stops wrk
# with SIGINT (which ends -d early and prints the summary over the time really run).
MANY_KEYS_LUA = """
local body = {body}
local stop_after = {stop_after}
local done_file = {done_file}
local reqs = {{}}
local n = 0
local sent = 0
local answered = 0

init = function(args)
  local headers = {{}}
  for line in io.lines({keys_file}) do
    n = n + 1
    headers["Content-Type"] = "application/json"
    headers["Authorization"] = "Bearer " .. line
    reqs[n] = wrk.format("POST", nil, headers, body)
  end
end

request = function()
  sent = sent + 1
  return reqs[(sent - 1) % n + 1]
end
"""

COUNT_ANSWERS_LUA = """
response = function(status, headers, body)
  answered = answered + 1
  if answered == stop_after then
    local f = io.open(done_file, "w")
    f:write("done")
    f:close()
    wrk.thread:stop()
  end
end
"""


def write_many_keys_lua(
    path: Path, keys_file: Path, stop_after: int = 0, done_file: Path | None = None
) -> Path:
    """A wrk script over the keys in `keys_file` (one a line), with load.py's result line."""
    done = LUA_TEMPLATE[LUA_TEMPLATE.index("done = function") :]
    text = MANY_KEYS_LUA.format(
        body=lua_string(request_body(stream=False).decode()),
        stop_after=stop_after,
        done_file=lua_string(str(done_file or "")),
        keys_file=lua_string(str(keys_file)),
    )
    # A response() hook costs wrk some speed: only the cold pass (slow anyway) has one.
    path.write_text(text + (COUNT_ANSWERS_LUA if stop_after > 0 else "") + done)
    return path
