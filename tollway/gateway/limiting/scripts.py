"""The Redis backend's Lua: one script per call, so each admit and each settle is one atomic
round trip shared by every instance. Same arithmetic as local.py (see windows.py).

Keys of one client key share a hash tag, so a Redis Cluster keeps them in one slot:
  S   hash   q (tokens used ever), qs (seeded), b (spent), bk (budget kind), bs (period start)
  W*  hash   t (total), o (oldest bucket), n (newest bucket), <bucket> -> count
  F   zset   in-flight leases: member -> expiry ms
"""

from __future__ import annotations

_WINDOWS = r"""
local function s(x) return string.format('%d', x) end
local STEP = {100, 60000, 100, 60000}
local WIN = {60000, 86400000, 60000, 86400000}

-- Drops buckets older than the window; returns the window's total and its oldest and newest
-- bucket (nil when empty), so callers need not read them again.
local function evict(key, step, win, now)
  local keep = math.floor(now / step) - win / step
  local w = redis.call('HMGET', key, 't', 'o', 'n')
  local total = tonumber(w[1])
  if not total then return 0, nil, nil end
  local o, n = tonumber(w[2]), tonumber(w[3])
  if n < keep then
    redis.call('DEL', key)
    return 0, nil, nil
  end
  if o < keep then
    local fields = {}
    for k = o, keep - 1 do fields[#fields + 1] = s(k) end
    local counts = redis.call('HMGET', key, unpack(fields))
    for i = 1, #counts do
      if counts[i] then total = total - tonumber(counts[i]) end
    end
    redis.call('HDEL', key, unpack(fields))
    redis.call('HSET', key, 't', s(total), 'o', s(keep))
    o = keep
  end
  return total, o, n
end

-- Counts n in the current bucket. `o`, `newest`: what evict returned (or HMGET read); the
-- bookkeeping fields and the expiry change only when a new bucket starts, so a request in
-- the same bucket as the last one costs two calls.
local function add(key, step, win, now, n, o, newest)
  local b = math.floor(now / step)
  local cur = s(b)
  redis.call('HINCRBY', key, cur, n)
  redis.call('HINCRBY', key, 't', n)
  if newest ~= b then
    if o == nil then
      redis.call('HSET', key, 'n', cur, 'o', cur)
    else
      redis.call('HSET', key, 'n', cur)
    end
    redis.call('PEXPIRE', key, win + step)
  end
  return b
end

local function reset_in(newest, step, win, now)
  if newest == nil then return 0 end
  return (newest + 1) * step + win - now
end
"""

ADMIT = (
    _WINDOWS
    + r"""
local now = tonumber(ARGV[1])
local lim = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local quota, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local kind, start, period_end = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local maxp, member, lease, ttl = tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[13]), ARGV[14]
local S = KEYS[1]
local NAMES = {'rpm', 'rpd', 'tpm', 'tpd'}

-- Past usage must be known before anything is decided or changed.
if quota >= 0 and redis.call('HEXISTS', S, 'qs') == 0 then return {'seed'} end
if budget >= 0 then
  local st = redis.call('HMGET', S, 'bk', 'bs')
  if st[1] ~= kind then return {'seed'} end
  if tonumber(st[2]) < start then redis.call('HSET', S, 'bs', ARGV[9], 'b', '0') end
end

local totals, olds, news = {}, {}, {}
for i = 1, 4 do
  if lim[i] >= 0 then
    local key, step, win = KEYS[i + 1], STEP[i], WIN[i]
    local total, o, n = evict(key, step, win, now)
    totals[i], olds[i], news[i] = total, o, n
    if total >= lim[i] then
      local retry = win
      if lim[i] > 0 then
        local fields = {}
        for k = o, n do fields[#fields + 1] = s(k) end
        local counts = redis.call('HMGET', key, unpack(fields))
        local excess, freed = total - lim[i] + 1, 0
        for j = 1, #counts do
          if counts[j] then
            freed = freed + tonumber(counts[j])
            if freed >= excess then
              retry = (o + j) * step + win - now
              break
            end
          end
        end
      end
      return {'refuse', NAMES[i], s(lim[i]), s(total), s(retry)}
    end
  end
end
if quota >= 0 then
  local used = tonumber(redis.call('HGET', S, 'q')) or 0
  if used >= quota then return {'refuse', 'quota', ARGV[6], s(used), '-1'} end
end
if budget >= 0 then
  local spent = tonumber(redis.call('HGET', S, 'b')) or 0
  if spent >= budget then
    local retry = '-1'
    if period_end >= 0 then retry = s(period_end - now) end
    return {'refuse', 'budget', ARGV[7], tostring(spent), retry}
  end
end
if maxp >= 0 then
  local F = KEYS[6]
  redis.call('ZREMRANGEBYSCORE', F, '-inf', now)
  local held = redis.call('ZCARD', F)
  if held >= maxp then return {'refuse', 'parallel', ARGV[11], s(held), '1000'} end
  redis.call('ZADD', F, now + lease, member)
  redis.call('PEXPIRE', F, lease * 2)
end

-- Admitted: charge the request windows, report the tightest of each kind.
local out = {'ok', '-1', '0', '0', '-1', '0', '0'}
for i = 1, 2 do
  if lim[i] >= 0 then
    local newest = add(KEYS[i + 1], STEP[i], WIN[i], now, 1, olds[i], news[i])
    local rem = lim[i] - totals[i] - 1
    if out[2] == '-1' or rem < tonumber(out[3]) then
      out[2], out[3] = s(lim[i]), s(rem)
      out[4] = s(reset_in(newest, STEP[i], WIN[i], now))
    end
  end
end
for i = 3, 4 do
  if lim[i] >= 0 then
    local rem = lim[i] - totals[i]
    if out[5] == '-1' or rem < tonumber(out[6]) then
      out[5], out[6] = s(lim[i]), s(rem)
      out[7] = s(reset_in(news[i], STEP[i], WIN[i], now))
    end
  end
end
if quota >= 0 or budget >= 0 then redis.call('PEXPIRE', S, ttl) end
return out
"""
)

SETTLE = (
    _WINDOWS
    + r"""
local now, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local S = KEYS[1]
if #ARGV > 5 then redis.call('ZREM', KEYS[6], unpack(ARGV, 6)) end
local function charge(key, step, win)
  local w = redis.call('HMGET', key, 'o', 'n')
  add(key, step, win, now, tokens, tonumber(w[1]), tonumber(w[2]))
end
if tokens > 0 then
  if ARGV[4] == '1' then charge(KEYS[4], STEP[3], WIN[3]) end
  if ARGV[5] == '1' then charge(KEYS[5], STEP[4], WIN[4]) end
  if redis.call('HEXISTS', S, 'qs') == 1 then redis.call('HINCRBY', S, 'q', tokens) end
end
if cost > 0 and redis.call('HEXISTS', S, 'bk') == 1 then
  redis.call('HINCRBYFLOAT', S, 'b', ARGV[3])
end
return 1
"""
)

# Sets what the database says a key used, unless another instance got there first.
SEED = r"""
local S = KEYS[1]
if ARGV[1] == '1' and redis.call('HEXISTS', S, 'qs') == 0 then
  redis.call('HSET', S, 'qs', '1', 'q', ARGV[2])
end
if ARGV[3] == '1' and redis.call('HGET', S, 'bk') ~= ARGV[4] then
  redis.call('HSET', S, 'bk', ARGV[4], 'bs', ARGV[5], 'b', ARGV[6])
end
redis.call('PEXPIRE', S, ARGV[7])
return 1
"""
