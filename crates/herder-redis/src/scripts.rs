//! The Lua scripts that make each step atomic on the Redis side.
//!
//! Names: every key of a namespace starts with `prefix` (`{namespace}:h{FORMAT}:`). Values and
//! leases live under the namespace's current generation (`{prefix}gen`), so `invalidate_all` is
//! one `INCR`; a key's epoch (`{prefix}e:{key}`) counts its invalidations, so that a load that
//! began before an invalidation cannot fill the tier after it. A stored value is
//! `{fresh_until_ms}|{envelope}`, with the deadline in Redis server time, so that every instance
//! agrees on freshness whatever its own clock.

use std::sync::LazyLock;

use redis::Script;

const NAMES: &str = r"
local prefix, key = ARGV[1], ARGV[2]
local gen = redis.call('GET', prefix .. 'gen') or '0'
local base = prefix .. gen .. ':'
local vkey, lkey, ekey = base .. 'v:' .. key, base .. 'l:' .. key, prefix .. 'e:' .. key
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// ACQUIRE(prefix, key, token, lease_ms, ignore_value) →
/// `{1, body, fresh_left_ms}` a fresh value; `{2, epoch, gen, corrupt}` the lease (`corrupt` is
/// 1 when the stored value was unreadable and was dropped); `{3, body}` a stale value while
/// another instance holds the lease; `{4, lease_pttl}` wait.
///
/// A stored value this script cannot read (no `|`, a deadline that is not a number, a key of
/// another type) is a miss: it is deleted and the lease granted, so the next fill replaces it.
/// It never raises a Lua error, which would count as a Redis failure against the breaker.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NAMES}
local body = false
local corrupt = 0
if ARGV[5] ~= '1' then
  local v = redis.pcall('GET', vkey)
  if type(v) == 'table' then
    v = false
    corrupt = 1
  end
  if v then
    local sep = string.find(v, '|', 1, true)
    local fresh = sep and tonumber(string.sub(v, 1, sep - 1))
    if fresh then
      local left = fresh - now_ms()
      body = string.sub(v, sep + 1)
      if left > 0 then return {{1, body, left}} end
    else
      corrupt = 1
    end
  end
  if corrupt == 1 then redis.call('DEL', vkey) end
end
if redis.call('SET', lkey, ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {{2, redis.call('GET', ekey) or '0', gen, corrupt}}
end
if body then return {{3, body}} end
return {{4, redis.call('PTTL', lkey)}}
"
    ))
});

/// FILL(prefix, key, token, epoch, gen, fresh_ms, body, px_ms, channel, message) → 1 stored,
/// 0 the lease was lost (expired and taken over, or revoked by an invalidation).
pub(crate) static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NAMES}
local held = prefix .. ARGV[5] .. ':l:' .. key
if gen ~= ARGV[5] or redis.call('GET', held) ~= ARGV[3] then return 0 end
if (redis.call('GET', ekey) or '0') ~= ARGV[4] then
  redis.call('DEL', lkey)
  return 0
end
if ARGV[7] ~= '' then
  local v = tostring(now_ms() + tonumber(ARGV[6])) .. '|' .. ARGV[7]
  if tonumber(ARGV[8]) > 0 then
    redis.call('SET', vkey, v, 'PX', ARGV[8])
  else
    redis.call('SET', vkey, v)
  end
end
redis.call('DEL', lkey)
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 1
"
    ))
});

/// EXTEND(prefix, key, token, gen, lease_ms) → 1 extended, 0 the lease is gone.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NAMES}
local held = prefix .. ARGV[4] .. ':l:' .. key
if redis.call('GET', held) == ARGV[3] then
  redis.call('PEXPIRE', held, ARGV[5])
  return 1
end
return 0
"
    ))
});

/// RELEASE(prefix, key, token, gen, channel, message): gives up a lease (the load failed) and
/// wakes the instances waiting for it.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NAMES}
local held = prefix .. ARGV[4] .. ':l:' .. key
if redis.call('GET', held) == ARGV[3] then
  redis.call('DEL', held)
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return 1
end
return 0
"
    ))
});

/// INVALIDATE(prefix, key, epoch_ttl_ms, channel, message): drops the value and the lease,
/// bumps the key's epoch, and tells every instance.
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NAMES}
redis.call('DEL', vkey, lkey)
redis.call('INCR', ekey)
redis.call('PEXPIRE', ekey, ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"
    ))
});

/// INVALIDATE_ALL(prefix, channel, message): a new generation orphans every value and lease
/// (they expire on their own TTL), and every instance is told.
pub(crate) static INVALIDATE_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('INCR', ARGV[1] .. 'gen')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
",
    )
});
