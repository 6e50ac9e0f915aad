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

Amounts are decimal strings of at most 19 digits; HINCRBY keeps them exact in Redis and
the comparisons below use two base-1e9 limbs, so nothing goes through a Lua double that
could round (doubles are exact only to 2^53, amounts go to 2^62).

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

local function is_uint(s)
  return type(s) == 'string' and #s > 0 and #s <= MAX_LEN and string.find(s, '^%d+$') ~= nil
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

-- The int64 ceiling HINCRBY can reach; a write that would pass it is refused up front.
local INT64_MAX = {9223372036, 854775807}  -- 2^63 - 1 in limbs (no calls at load time)

local function now_ms(arg)
  if arg ~= '' then return arg end  -- a test clock passed by the client
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

local function log_event(P, kind, rid, now, fields)
  local seq = redis.call('INCR', P .. 'seq')
  local args = {'XADD', P .. 'ev', string.format('%d-0', seq), '_k', kind, '_r', rid, '_t', now}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  redis.call(unpack(args))
end

-- KEYS: hold, line_1..line_n
-- ARGV: plen, rid, ttl_ms, now|'', on_expiry, charge_now(0|1), grace_ms, n,
--       then per line: limit, amount, window_end_ms(0 = none)
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
  for i = 1, n do
    local b = 8 + 3 * (i - 1)
    if not is_uint(args[b + 1]) or not is_uint(args[b + 2]) or not is_uint(args[b + 3]) then
      return bad('line ' .. i)
    end
  end
  local P = string.sub(keys[1], 1, plen)
  local hold = keys[1]
  local prior = redis.call('HMGET', hold, 'st', 'ex')
  if prior[1] then
    if prior[1] == 'held' then return {2, prior[2]} end
    return {3, prior[2]}
  end
  -- Phase 1: check every line; nothing is written unless all of them grant.
  local fresh, stored = {}, {}
  for i = 1, n do
    local b = 8 + 3 * (i - 1)
    local row = redis.call('HMGET', keys[i + 1], 'lim', 'ov', 'sp', 'hd', 'bl')
    fresh[i] = not (row[1] or row[2] or row[3] or row[4] or row[5])
    stored[i] = row[1]
    local limit = row[2] or args[b + 1]
    local spent, held = row[3] or '0', row[4] or '0'
    if row[5] then return {0, i - 1, limit, spent, held, row[5]} end
    if gt(add(add(big(spent), big(held)), big(args[b + 2])), big(limit)) then
      return {0, i - 1, limit, spent, held, 'limit'}
    end
  end
  -- Phase 2: write every line, then the hold, the index and the log.
  local now = now_ms(now_arg)
  local expires = str(add(big(now), big(ttl)))
  local column = (charge_now == '1') and 'sp' or 'hd'
  local hold_fields = {'HSET', hold, 'st', (charge_now == '1') and 'committed' or 'held',
                       'cr', now, 'ex', expires, 'oe', on_expiry}
  local event = {}
  for i = 1, n do
    local b = 8 + 3 * (i - 1)
    local key, amount = keys[i + 1], args[b + 2]
    local line = string.sub(key, plen + 1)
    if stored[i] ~= args[b + 1] then redis.call('HSET', key, 'lim', args[b + 1]) end
    redis.call('HINCRBY', key, column, amount)
    if fresh[i] and grace ~= '0' and args[b + 3] ~= '0' then
      redis.call('PEXPIREAT', key, str(add(big(args[b + 3]), big(grace))))
    end
    hold_fields[#hold_fields + 1] = 'a:' .. line
    hold_fields[#hold_fields + 1] = amount
    event[#event + 1] = line
    event[#event + 1] = amount
    if charge_now == '1' then
      hold_fields[#hold_fields + 1] = 'c:' .. line
      hold_fields[#hold_fields + 1] = amount
    end
  end
  if charge_now == '1' then
    hold_fields[#hold_fields + 1] = 'se'
    hold_fields[#hold_fields + 1] = now
  end
  redis.call(unpack(hold_fields))
  log_event(P, 'reserve', rid, now, event)
  if charge_now == '1' then
    log_event(P, 'commit', rid, now, event)
  else
    redis.call('ZADD', P .. 'ex', expires, rid)
  end
  return {1, expires}
end

-- Settle one hold already read into `h` (a flat HGETALL reply). Shared by settle and reap.
local function settle_hold(P, hold, rid, h, mode, actual, now, tomb_ms)
  local lines, amounts, charged = {}, {}, {}
  local state
  for i = 1, #h, 2 do
    local f = h[i]
    if f == 'st' then state = h[i + 1]
    elseif string.sub(f, 1, 2) == 'a:' then
      lines[#lines + 1] = string.sub(f, 3)
      amounts[#amounts + 1] = h[i + 1]
    elseif string.sub(f, 1, 2) == 'c:' then
      charged[#charged + 1] = string.sub(f, 3)
      charged[#charged + 1] = h[i + 1]
    end
  end
  if state ~= 'held' then
    local out = {3}
    for i = 1, #charged do out[#out + 1] = charged[i] end
    return out
  end
  -- Work out every charge and check every line before writing any.
  local charges, over = {}, {}
  for i = 1, #lines do
    local charge = '0'
    if mode == 'commit' then
      local dim = string.match(lines[i], '/([^/]*)$')
      charge = actual[dim] or amounts[i]
    elseif mode == 'expire_charge' then
      charge = amounts[i]
    end
    charges[i] = charge
    if gt(big(charge), big(amounts[i])) then
      -- Only an overrun can push spent past what a reserve checked, so only then read it.
      local spent = redis.call('HGET', P .. lines[i], 'sp') or '0'
      if gt(add(big(spent), big(charge)), INT64_MAX) then
        return redis.error_reply('ERR ledger: spent would pass 2^63 on ' .. lines[i])
      end
      over[i] = str(sub(big(charge), big(amounts[i])))
    end
  end
  local status = 1
  local fields = {'HSET', hold, 'st', STATE[mode], 'se', now}
  local event, reply = {}, {}
  for i = 1, #lines do
    local key = P .. lines[i]
    redis.call('HINCRBY', key, 'hd', '-' .. amounts[i])
    if charges[i] ~= '0' then redis.call('HINCRBY', key, 'sp', charges[i]) end
    if over[i] then
      status = 2
      redis.call('HINCRBY', key, 'or', over[i])
      redis.call('HSETNX', key, 'bl', 'overrun')
    end
    fields[#fields + 1] = 'c:' .. lines[i]
    fields[#fields + 1] = charges[i]
    event[#event + 1] = lines[i]
    event[#event + 1] = charges[i]
  end
  redis.call(unpack(fields))
  redis.call('PEXPIRE', hold, tomb_ms)  -- a memory safety net; purge is the real cleanup
  redis.call('ZREM', P .. 'ex', rid)
  log_event(P, mode, rid, now, event)
  reply[1] = status
  for i = 1, #event do reply[#reply + 1] = event[i] end
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
  local actual = {}
  for i = 6, #args, 2 do
    if not is_uint(args[i + 1]) then return bad('actual ' .. args[i]) end
    actual[args[i]] = args[i + 1]
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
  local expires = str(add(big(now_ms(now_arg)), big(ttl)))
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
      local out = settle_hold(P, hold, rid, h, mode, {}, now, tomb)
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
