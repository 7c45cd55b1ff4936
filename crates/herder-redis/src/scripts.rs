//! The Lua scripts that make each step atomic on the Redis side.
//!
//! Every script declares the Redis keys it touches (`KEYS`, see `layout.rs`), all of one hash
//! slot, so that it runs on a cluster as on a single server; the batch scripts (`*_MANY`) take
//! several keys' names, and on a cluster come in a `_CROSS` flavour that spans the slots of one
//! node (see `CROSS_SLOT` and `nodes.rs`). The generation of the key's bucket
//! (`KEYS[1]` where present) counts `invalidate_all`s; a key's epoch counts its invalidations, so
//! that a load that began before an invalidation cannot fill the tier after it.
//!
//! A stored value is `{generation}|{fresh_until_ms}|{envelope}`, with the deadline in Redis server
//! time, so that every instance agrees on freshness whatever its own clock; a value of an older
//! generation is a miss. A lease is `{generation}|{token}`; a lease of an older generation is no
//! lease. So `invalidate_all` orphans every value and lease with one `INCR` per bucket (they
//! expire on their own TTL, or are overwritten).

use std::sync::LazyLock;

use redis::Script;

const NOW: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// How long a key's epoch outlives its last invalidation (ms): longer than any load should take.
pub(crate) const EPOCH_TTL_MS: u64 = 3_600_000;

/// Lua helpers for counters (epochs and generations) that are not what the scripts keep there.
///
/// A counter is what a lease recorded (its epoch and generation) and what its fill compares
/// again: an invalidation (`INCR`) must move it to a value no lease was granted under, or a fill
/// of a load begun before the invalidation would land after it. A counter key of another type,
/// or a string `INCR` refuses (not an integer, or at the top of the range), would make `INCR` or
/// `GET` raise: the script would fail (against the breaker) and, for an invalidation, never
/// publish, retried for ever. Such a key is corrupt: `renew` replaces it with a fresh value, the
/// server time in microseconds (`{seconds}{micros:06}`, about 1.7e15): whatever a lease could
/// have recorded was either garbage (a non-integer string, never equal to it), a small count (a
/// counter starts at 1 and grows by one per invalidation), or an earlier fresh value plus the
/// invalidations since, which cannot catch up with the clock (Redis does not run a script per
/// microsecond on one key). `counter` reads a counter for a lease: absent is `'0'`, another type
/// is renewed (a miss, never an error).
///
/// A bucket's generation is never read as absent: `generation` (and `NEXT_GENERATION`) renew a
/// missing one. Values are kept under their generation alone (leases are also checked by token),
/// so a generation key that went missing (evicted under an `allkeys-*` `maxmemory-policy`,
/// deleted by hand) and came back as `'0'`, or as `1` after an `INCR`, would be a generation
/// that values were stored under before an `invalidate_all`, which would then be served again.
const COUNTERS: &str = r"
local function fresh_value()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
local function renew(k, px)
  local v = fresh_value()
  if px then
    redis.call('SET', k, v, 'PX', px)
  else
    redis.call('SET', k, v)
  end
  return v
end
local function bump(k)
  local n = redis.pcall('INCR', k)
  if type(n) == 'number' then return n end
  return tonumber(renew(k, nil))
end
local function counter(k, px)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then return v end
  if v then return renew(k, px) end
  return '0'
end
local function generation(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then return v end
  return renew(k, nil)
end
";

/// INVALIDATE(KEYS value, lease, epoch; ARGV epoch_ttl_ms, channel, message) → the message:
/// drops the value and the lease, bumps the key's epoch (renewing a corrupt one, see
/// `COUNTERS`), and tells every instance. Answering with its own message, it cannot be taken as
/// applied on a reply meant for another command.
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{COUNTERS}
redis.call('DEL', KEYS[1], KEYS[2])
bump(KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return ARGV[3]
"
    ))
});

/// NEXT_GENERATION(KEYS gen): a new generation of one bucket orphans its values and leases (a
/// corrupt or missing generation is renewed, see `COUNTERS`). `invalidate_all` runs it for
/// every bucket, then publishes.
pub(crate) static NEXT_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COUNTERS}\nif redis.call('EXISTS', KEYS[1]) == 0 then return tonumber(renew(KEYS[1], nil)) end\nreturn bump(KEYS[1])\n"
    ))
});

/// A batch script's Redis keys, `K`: its declared keys.
const DECLARED: &str = "local K = KEYS\n";

/// A batch script on a cluster, one per node: it declares one key (which routes it to the node,
/// and which Redis checks against the node's slots) and takes every key it touches, of several
/// slots, from the end of ARGV (their first index is the last ARGV), which Redis 7 allows a
/// script flagged `allow-cross-slot-keys` as long as the node serves them all.
const CROSS_SLOT: &str = "#!lua flags=allow-cross-slot-keys
local K = {}
for i = tonumber(ARGV[#ARGV]), #ARGV - 1 do K[#K + 1] = ARGV[i] end
";

/// ACQUIRE_MANY(KEYS gen, value, lease, epoch of each key; ARGV token, lease_ms, ignore_value
/// flags, one character per key) → one answer per key, in order, then the token (a single key's
/// acquire is this script with one key): `{1, body, fresh_left_ms}` a fresh value; `{2, epoch, gen, corrupt}`
/// the lease (`corrupt` is 1 when the stored value was unreadable and was dropped); `{3, body}`
/// a stale value while another instance holds the lease; `{4, lease_pttl}` wait. The token
/// at the end ties the answer to its call: a reply that is not this call's (a connection
/// whose replies got out of step with its requests) is no answer, never another key's value.
/// A batch's
/// keys in one atomic step (on a single server, all of them): a batch waits only for leases
/// granted before its own.
///
/// A stored value this script cannot read (not `gen|deadline|body`, a deadline that is not a
/// number, a key of another type) is a miss: it is deleted and the lease granted, so the next
/// fill replaces it. A lease that is not one (another type, no token) or that has no expiry
/// (it would never expire, and every instance would wait for it until `max_wait`) is garbage,
/// taken over like an expired one. A generation or epoch key of another type is renewed (see
/// `COUNTERS`). It never raises a Lua error, which would count as a Redis failure against the
/// breaker.
fn acquire_many() -> String {
    format!(
        r"{NOW}{COUNTERS}
local now = now_ms()
local gens = {{}}
local function one(gk, vk, lk, ek, ignore)
  local gen = gens[gk]
  if not gen then
    gen = generation(gk)
    gens[gk] = gen
  end
  local body = false
  local corrupt = 0
  if ignore ~= '1' then
    local v = redis.pcall('GET', vk)
    if type(v) == 'table' then
      v = false
      corrupt = 1
    end
    if v then
      local a = string.find(v, '|', 1, true)
      local b = a and string.find(v, '|', a + 1, true)
      local fresh = b and tonumber(string.sub(v, a + 1, b - 1))
      if not fresh then
        corrupt = 1
      elseif string.sub(v, 1, a - 1) == gen then
        local left = fresh - now
        body = string.sub(v, b + 1)
        if left > 0 then return {{1, body, left}} end
      end
    end
    if corrupt == 1 then redis.call('DEL', vk) end
  end
  local mine = gen .. '|'
  local held = redis.pcall('GET', lk)
  local left = -1
  if type(held) == 'string' and #held > #mine and string.sub(held, 1, #mine) == mine then
    left = redis.call('PTTL', lk)
  end
  if left < 0 then
    redis.call('SET', lk, mine .. ARGV[1], 'PX', ARGV[2])
    return {{2, counter(ek, {EPOCH_TTL_MS}), gen, corrupt}}
  end
  if body then return {{3, body}} end
  return {{4, left}}
end
local out = {{}}
for i = 1, math.floor(#K / 4) do
  local k = 4 * i - 3
  out[i] = one(K[k], K[k + 1], K[k + 2], K[k + 3], string.sub(ARGV[3], i, i))
end
out[#out + 1] = ARGV[1]
return out
"
    )
}

pub(crate) static ACQUIRE_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DECLARED}{}", acquire_many())));
pub(crate) static ACQUIRE_MANY_CROSS: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CROSS_SLOT}{}", acquire_many())));

/// FILL_MANY(K gen, value, lease, epoch of each key; ARGV channel, then for each key mode
/// (`f` fill, `r` release), lease, epoch, gen, fresh_ms, body, px_ms, message) → per key, in
/// order, 1 or 0. A fill stores the value only while this instance still holds the lease, of
/// the current generation, and no invalidation bumped the key's epoch since the lease was
/// granted (an invalidated fill drops the lease instead): 1 stored, 0 the lease was lost. A
/// release drops a lease still held and wakes its waiters. A single key's fill is this script
/// with one key.
fn fill_many() -> String {
    format!(
        r"{NOW}
local now = now_ms()
local out = {{}}
for i = 1, math.floor(#K / 4) do
  local k = 4 * i - 3
  local a = 8 * (i - 1) + 1
  local lease = ARGV[a + 2]
  local r = 0
  if redis.pcall('GET', K[k + 2]) == lease then
    if ARGV[a + 1] == 'r' then
      redis.call('DEL', K[k + 2])
      redis.call('PUBLISH', ARGV[1], ARGV[a + 8])
      r = 1
    elseif (redis.pcall('GET', K[k]) or '0') ~= ARGV[a + 4] then
      r = 0
    elseif (redis.pcall('GET', K[k + 3]) or '0') ~= ARGV[a + 3] then
      redis.call('DEL', K[k + 2])
    else
      local body = ARGV[a + 6]
      if body ~= '' then
        local v = ARGV[a + 4] .. '|' .. tostring(now + tonumber(ARGV[a + 5])) .. '|' .. body
        if tonumber(ARGV[a + 7]) > 0 then
          redis.call('SET', K[k + 1], v, 'PX', ARGV[a + 7])
        else
          redis.call('SET', K[k + 1], v)
        end
      end
      redis.call('DEL', K[k + 2])
      redis.call('PUBLISH', ARGV[1], ARGV[a + 8])
      r = 1
    end
  end
  out[i] = r
end
return out
"
    )
}

pub(crate) static FILL_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DECLARED}{}", fill_many())));
pub(crate) static FILL_MANY_CROSS: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CROSS_SLOT}{}", fill_many())));

/// EXTEND_MANY(K leases; ARGV lease_ms, then each lease's value) → how many were extended
/// (those still held).
const EXTEND_MANY_BODY: &str = r"
local n = 0
for i = 1, #K do
  if redis.pcall('GET', K[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', K[i], ARGV[1])
    n = n + 1
  end
end
return n
";

pub(crate) static EXTEND_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DECLARED}{EXTEND_MANY_BODY}")));
pub(crate) static EXTEND_MANY_CROSS: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CROSS_SLOT}{EXTEND_MANY_BODY}")));
