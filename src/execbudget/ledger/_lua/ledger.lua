#!lua name=execbudget_@V@
--[[
execbudget ledger as a Redis Function library (FUNCTION LOAD; FCALL eb@V@_<op>).

Every write function does the same three steps, because Redis does not roll back a
script that fails halfway: validate every argument, read and check every line, and only
then write. All keys of one ledger share the hash tag {<prefix>}, so every key below is
in one cluster slot; P is that tagged prefix, passed as its length `plen` and sliced off
KEYS[1].

  P l:<scope>/<window>/<dim>   HASH lim ov sp hd or bl      a budget line
  P h:<rid>                    HASH st cr ex oe se a:<line> c:<line>   a hold / tombstone
  P ex                         ZSET rid -> deadline_ms       expiry index for reap
  P ev                         STREAM id <seq>-0             event log
  P seq                        STRING                        last event seq

Amounts are decimal strings of at most 19 digits; HINCRBY keeps them exact in Redis.
Comparisons and sums go through Lua doubles only where that is exact (see `exceeds`),
and otherwise through two base-1e9 limbs, so nothing is rounded (doubles are exact only
to 2^53, amounts go to 2^62).

Each function runs once per ledger operation, so the hot two (reserve, settle) keep the
number of redis.call()s, tables and new strings down: that, not the commands themselves,
is most of their time on the server.

`@V@` is replaced by a hash of this file when loaded, so two execbudget versions can
share a server without replacing each other's functions.
--]]

local LIMB = 1000000000
local MAX_LEN = 19
local STATE = {commit = 'committed', release = 'released', expire = 'expired',
               expire_charge = 'expire_charge'}

local function bad(what)
  return redis.error_reply('ERR ledger: bad arguments: ' .. what)
end

-- A canonical decimal (no sign, no leading zero), as HINCRBY takes it: a number that
-- passes here never makes a write fail halfway.
local function is_uint(s)
  return type(s) == 'string' and #s <= MAX_LEN and (s == '0' or string.find(s, '^[1-9]%d*$') ~= nil)
end

local function big(s)
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end

local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= LIMB then return {hi + 1, lo - LIMB} end
  return {hi, lo}
end

local function sub(a, b)  -- a >= b
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then return {hi - 1, lo + LIMB} end
  return {hi, lo}
end

local function gt(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function str(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end

-- Integers below 2^53 are exact doubles. A comparison against a bound below 2^53 is exact
-- in doubles even when the other side rounds: rounding is monotonic, so a true value above
-- the bound (at least bound + 1 <= 2^53) never rounds down to the bound, and a true value
-- at or below it is exact. Against a bound from 2^53 up, a double sum below 2^53 is exact
-- (every term is, and so is each partial sum) and so below the bound: only a sum from
-- 2^53 up takes the limb path. (The gateway's counting lines have a bound of 2^62 and
-- sums far below it: they skip the limbs' tables.)
local EXACT = 9007199254740992  -- 2^53

-- a + b + c > bound (decimal strings).
local function exceeds(a, b, c, bound)
  local limit = tonumber(bound)
  local sum = tonumber(a) + tonumber(b) + tonumber(c)
  if limit < EXACT then return sum > limit end
  if sum < EXACT then return false end
  return gt(add(add(big(a), big(b)), big(c)), big(bound))
end

-- a > b (decimal strings).
local function above(a, b)
  local limit = tonumber(b)
  local value = tonumber(a)
  if limit < EXACT then return value > limit end
  if value < EXACT then return false end
  return gt(big(a), big(b))
end

-- a + b as a decimal string, exact.
local function plus(a, b)
  local sum = tonumber(a) + tonumber(b)
  if sum < EXACT then return string.format('%d', sum) end
  return str(add(big(a), big(b)))
end

-- The int64 ceiling HINCRBY can reach; a write that would pass it is refused up front.
local INT64_MAX = {9223372036, 854775807}  -- 2^63 - 1 in limbs (no calls at load time)

local function now_ms(arg)
  if arg ~= '' then return arg end  -- a test clock passed by the client
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- XADD P.ev <seq>-0 _k kind _r rid _t now <line amount>...: `entry` is that command with
-- slots 3 (id), 5 (kind) and 9 (now) to fill, the header being built once per call.
local function log_event(P, entry, kind, now)
  entry[3] = string.format('%d-0', redis.call('INCR', P .. 'seq'))
  entry[5] = kind
  entry[9] = now
  redis.call(unpack(entry))
end

-- KEYS: hold, line_1..line_n
-- ARGV: plen, rid, ttl_ms, now|'', on_expiry, charge_now(0|1), grace_ms, n,
--       then per line: limit, amount, window_end_ms(0 = none)
-- Reply: {1, expires, then per line: limit, spent, held, overrun} when granted;
--        {2|3, expires} for a known rid; {0, index, limit, spent, held, reason} refused.
local function reserve(keys, args)
  local plen, rid, ttl, now_arg = tonumber(args[1]), args[2], args[3], args[4]
  local on_expiry, charge_now, grace, n = args[5], args[6], args[7], tonumber(args[8])
  if not plen or not n or n < 1 or #keys ~= n + 1 or #args ~= 8 + 3 * n then
    return bad('key or argument count')
  end
  if not is_uint(ttl) or tonumber(ttl) < 1 or not is_uint(grace) then return bad('ttl') end
  if now_arg ~= '' and not is_uint(now_arg) then return bad('now') end
  if on_expiry ~= 'release' and on_expiry ~= 'charge' then return bad('on_expiry') end
  if charge_now ~= '0' and charge_now ~= '1' then return bad('charge_now') end
  for b = 9, 8 + 3 * n do
    if not is_uint(args[b]) then return bad('line ' .. math.floor((b - 6) / 3)) end
  end
  local call = redis.call
  local hold = keys[1]
  if call('EXISTS', hold) == 1 then  -- a retry of a known rid changes nothing
    local prior = call('HMGET', hold, 'st', 'ex')
    if prior[1] == 'held' then return {2, prior[2]} end
    if prior[1] then return {3, prior[2]} end
  end
  -- Phase 1: check every line; nothing is written unless all of them grant.
  local rows = {}
  for i = 1, n do
    local b = 6 + 3 * i
    local row = call('HMGET', keys[i + 1], 'lim', 'ov', 'sp', 'hd', 'bl', 'or')
    local limit, spent, held = row[2] or args[b], row[3] or '0', row[4] or '0'
    if row[5] then return {0, i - 1, limit, spent, held, row[5]} end
    if exceeds(spent, held, args[b + 1], limit) then
      return {0, i - 1, limit, spent, held, 'limit'}
    end
    rows[i] = row
  end
  -- Phase 2: write every line, then the hold, the index and the log.
  local P = string.sub(hold, 1, plen)
  local now = now_ms(now_arg)
  local expires = plus(now, ttl)
  local charged = charge_now == '1'
  local column = charged and 'sp' or 'hd'
  local fields = {'HSET', hold, 'st', charged and 'committed' or 'held',
                  'cr', now, 'ex', expires, 'oe', on_expiry}
  local entry = {'XADD', P .. 'ev', '', '_k', '', '_r', rid, '_t', ''}
  -- The reply carries every line's books as this reserve leaves them (limit, spent, held,
  -- overrun; none is blocked, or it would have refused): a caller that shows the room
  -- left needs no second read.
  local reply = {1, expires}
  local f, e, r = 10, 9, 2
  for i = 1, n do
    local b = 6 + 3 * i
    local key, amount, row = keys[i + 1], args[b + 1], rows[i]
    local line = string.sub(key, plen + 1)
    if row[1] ~= args[b] then call('HSET', key, 'lim', args[b]) end
    call('HINCRBY', key, column, amount)
    if grace ~= '0' and args[b + 2] ~= '0'
        and not (row[1] or row[2] or row[3] or row[4] or row[5]) then
      call('PEXPIREAT', key, plus(args[b + 2], grace))  -- a line this call created
    end
    fields[f + 1] = 'a:' .. line
    fields[f + 2] = amount
    f = f + 2
    if charged then
      fields[f + 1] = 'c:' .. line
      fields[f + 2] = amount
      f = f + 2
    end
    entry[e + 1] = line
    entry[e + 2] = amount
    e = e + 2
    local spent, held = row[3] or '0', row[4] or '0'
    if charged then spent = plus(spent, amount) else held = plus(held, amount) end
    reply[r + 1] = row[2] or args[b]
    reply[r + 2] = spent
    reply[r + 3] = held
    reply[r + 4] = row[6] or '0'
    r = r + 4
  end
  if charged then
    fields[f + 1] = 'se'
    fields[f + 2] = now
  end
  call(unpack(fields))
  log_event(P, entry, 'reserve', now)
  if charged then
    log_event(P, entry, 'commit', now)
  else
    call('ZADD', P .. 'ex', expires, rid)
  end
  return reply
end

-- Settle one hold already read into `h` (a flat HGETALL reply). Shared by settle and reap.
local function settle_hold(P, hold, rid, h, mode, actual, now, tomb_ms)
  local call = redis.call
  local lines, amounts, charged = {}, {}, {}
  local state
  for i = 1, #h, 2 do
    local f = h[i]
    local c1, c2 = string.byte(f, 1, 2)
    if c2 == 58 then  -- 'a:' or 'c:'
      if c1 == 97 then
        lines[#lines + 1] = string.sub(f, 3)
        amounts[#amounts + 1] = h[i + 1]
      elseif c1 == 99 then
        charged[#charged + 1] = string.sub(f, 3)
        charged[#charged + 1] = h[i + 1]
      end
    elseif f == 'st' then
      state = h[i + 1]
    end
  end
  if state ~= 'held' then
    local out = {3}
    for i = 1, #charged do out[i + 1] = charged[i] end
    return out
  end
  -- Work out every charge and check every line before writing any.
  local n = #lines
  local charges, over = {}, {}
  for i = 1, n do
    local charge = '0'
    if mode == 'commit' then
      charge = actual and actual[string.match(lines[i], '/([^/]*)$')] or amounts[i]
    elseif mode == 'expire_charge' then
      charge = amounts[i]
    end
    charges[i] = charge
    if charge ~= amounts[i] and above(charge, amounts[i]) then
      -- Only an overrun can push spent past what a reserve checked, so only then read it.
      local spent = call('HGET', P .. lines[i], 'sp') or '0'
      if gt(add(big(spent), big(charge)), INT64_MAX) then
        return redis.error_reply('ERR ledger: spent would pass 2^63 on ' .. lines[i])
      end
      over[i] = str(sub(big(charge), big(amounts[i])))
    end
  end
  local status = 1
  local fields = {'HSET', hold, 'st', STATE[mode], 'se', now}
  local entry = {'XADD', P .. 'ev', '', '_k', '', '_r', rid, '_t', ''}
  local reply = {1}
  for i = 1, n do
    local key, line, charge = P .. lines[i], lines[i], charges[i]
    -- (Redis refuses '-0' as an integer: a zero hold has nothing to free.)
    if amounts[i] ~= '0' then call('HINCRBY', key, 'hd', '-' .. amounts[i]) end
    if charge ~= '0' then call('HINCRBY', key, 'sp', charge) end
    if over[i] then
      status = 2
      call('HINCRBY', key, 'or', over[i])
      call('HSETNX', key, 'bl', 'overrun')
    end
    fields[5 + 2 * i] = 'c:' .. line
    fields[6 + 2 * i] = charge
    entry[8 + 2 * i] = line
    entry[9 + 2 * i] = charge
    reply[2 * i] = line
    reply[2 * i + 1] = charge
  end
  call(unpack(fields))
  call('PEXPIRE', hold, tomb_ms)  -- a memory safety net; purge is the real cleanup
  call('ZREM', P .. 'ex', rid)
  log_event(P, entry, mode, now)
  reply[1] = status
  return reply
end

-- KEYS: hold.  ARGV: plen, rid, mode, now|'', tombstone_ms, then dim, amount pairs.
local function settle(keys, args)
  local plen, rid, mode, now_arg, tomb = tonumber(args[1]), args[2], args[3], args[4], args[5]
  if not plen or #keys ~= 1 or not STATE[mode] or #args % 2 ~= 1 then
    return bad('key or argument count')
  end
  if now_arg ~= '' and not is_uint(now_arg) then return bad('now') end
  if not is_uint(tomb) or tonumber(tomb) < 1 then return bad('tombstone ttl') end
  local actual
  if #args > 5 then
    actual = {}
    for i = 6, #args, 2 do
      if not is_uint(args[i + 1]) then return bad('actual ' .. args[i]) end
      actual[args[i]] = args[i + 1]
    end
  end
  local h = redis.call('HGETALL', keys[1])
  if #h == 0 then return {0} end
  local P = string.sub(keys[1], 1, plen)
  return settle_hold(P, keys[1], rid, h, mode, actual, now_ms(now_arg), tomb)
end

-- KEYS: hold, expiry index.  ARGV: rid, ttl_ms, now|''.
local function extend(keys, args)
  local rid, ttl, now_arg = args[1], args[2], args[3]
  if #keys ~= 2 or not is_uint(ttl) then return bad('ttl') end
  if now_arg ~= '' and not is_uint(now_arg) then return bad('now') end
  if redis.call('HGET', keys[1], 'st') ~= 'held' then return 0 end
  local expires = plus(now_ms(now_arg), ttl)
  redis.call('HSET', keys[1], 'ex', expires)
  redis.call('ZADD', keys[2], expires, rid)
  return 1
end

-- KEYS: expiry index.  ARGV: plen, now|'', limit, tombstone_ms.
-- Oldest deadline first (ties by rid), each by its own on_expiry; returns how many settled.
local function reap(keys, args)
  local plen, now_arg, limit, tomb = tonumber(args[1]), args[2], args[3], args[4]
  if not plen or #keys ~= 1 or not is_uint(limit) or not is_uint(tomb) then
    return bad('reap')
  end
  if now_arg ~= '' and not is_uint(now_arg) then return bad('now') end
  local P = string.sub(keys[1], 1, plen)
  local now = now_ms(now_arg)
  local due = redis.call('ZRANGE', keys[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  local done = 0
  for _, rid in ipairs(due) do
    local hold = P .. 'h:' .. rid
    local h = redis.call('HGETALL', hold)
    if #h == 0 then
      redis.call('ZREM', keys[1], rid)  -- the hold vanished (purged by hand): drop the entry
    else
      local mode = 'expire'
      for i = 1, #h, 2 do
        if h[i] == 'oe' and h[i + 1] == 'charge' then mode = 'expire_charge' end
      end
      local out = settle_hold(P, hold, rid, h, mode, nil, now, tomb)
      if out[1] == 1 or out[1] == 2 then done = done + 1 end
    end
  end
  return done
end

-- KEYS: line.  ARGV: 'limit'|'block', value|'' ('' clears the override or the block).
local function admin(keys, args)
  local what, value = args[1], args[2]
  if #keys ~= 1 then return bad('key count') end
  local field = (what == 'limit') and 'ov' or ((what == 'block') and 'bl' or nil)
  if not field then return bad('admin op') end
  if what == 'limit' and value ~= '' and not is_uint(value) then return bad('limit') end
  redis.call('HSETNX', keys[1], 'lim', (what == 'limit' and value ~= '') and value or '0')
  if value == '' then
    redis.call('HDEL', keys[1], field)
  else
    redis.call('HSET', keys[1], field, value)
  end
  return 1
end

-- KEYS: holds to consider.  ARGV: settled_before_ms.  Deletes settled ones older than that.
local function purge(keys, args)
  if not is_uint(args[1]) then return bad('settled_before_ms') end
  local cutoff = big(args[1])
  local n = 0
  for _, key in ipairs(keys) do
    local se = redis.call('HGET', key, 'se')
    if se and gt(cutoff, big(se)) then
      redis.call('DEL', key)
      n = n + 1
    end
  end
  return n
end

redis.register_function('eb@V@_reserve', reserve)
redis.register_function('eb@V@_settle', settle)
redis.register_function('eb@V@_extend', extend)
redis.register_function('eb@V@_reap', reap)
redis.register_function('eb@V@_admin', admin)
redis.register_function('eb@V@_purge', purge)
