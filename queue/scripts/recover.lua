-- recover: the read side of the recovery algorithm (docs/protocol.md "Reading without gaps"):
-- a channel's snapshot and the events a reader at (since_off, since_epoch) missed, or `resync`.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] kind          "job" or "group"
-- ARGV[3] id            the job id or the group id
-- ARGV[4] since_off     the reader's offset (0: a new reader)
-- ARGV[5] since_epoch   the reader's epoch ("" for a new reader)
-- ARGV[6] limit         at most this many history events (group)
-- ARGV[7] watch         1: mark a live job watched (its claim writes `started`)
-- Returns [status, snapshot, event...]: status "unknown" (no such job or group; no snapshot),
-- "recovered" (events = every event after since_off), "more" (the first `limit` of them: call
-- again from the last), "resync" (the missed events cannot be delivered: continue from the
-- snapshot). Snapshot and events are packed msgpack maps.
local P, kind, id = ARGV[1], ARGV[2], ARGV[3]
local since = num(4) or 0
local since_epoch = ARGV[5] or ''
local limit = num(6) or DEFAULT.RECOVER_LIMIT
if limit < 1 then limit = 1 end

if kind == 'job' then
  local key = P .. ':' .. KEY.JOB .. ':' .. id
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return {'unknown', false} end
  if t == 'hash' then
    local r = redis.call('HMGET', key, 'state', 'off', 'epoch', 'attempts', 'group', 'worker',
                         'updated_ms', 'cancel', 'due_ms', 'error', 'steps_done', 'steps_total',
                         'watch', 'enqueued_ms')
    local off = tonumber(r[2]) or 0
    local state = nonempty(r[1]) or 'queued'
    local attempt = tonumber(r[4]) or 0
    local c = context(P, 0, 0)
    -- A fast run (docs/protocol.md "Fast runs"): running on the worker whose in-flight list
    -- holds it; a reader that starts watching it now makes its ack publish (adopt).
    local wk = state == 'queued' and running_on(c, id)
    if wk then
      state, attempt, r[6] = 'running', attempt + 1, wk
      if ARGV[7] == '1' and r[13] ~= '1' then adopt(c, id, wk, r[4]) end
    end
    local snap = {v = 1, id = id, type = 'snapshot', state = state, off = off,
                  epoch = nonempty(r[3]) or '', ts_ms = tonumber(r[7] or r[14]) or 0,
                  attempt = attempt, group = nonempty(r[5])}
    if state == 'running' then
      snap.worker = nonempty(r[6])
      snap.steps_done, snap.steps_total = tonumber(r[11]), tonumber(r[12])
      if r[8] == '1' then snap.cancel = true end
    elseif state == 'retrying' then
      snap.due_ms, snap.error = tonumber(r[9]), nonempty(r[10])
    end
    if ARGV[7] == '1' and r[13] ~= '1' then
      w(c, 'HSET', key, 'watch', 1)
      -- Still queued: its claim must read it, to publish `started` (docs/protocol.md "Fetched
      -- claims").
      if state == 'queued' then w(c, 'SADD', P .. ':' .. KEY.SLOW, id) end
    end
    commit(c)
    local status = 'resync'
    if since_epoch == snap.epoch and since == off then status = 'recovered' end
    return {status, cmsgpack.pack(snap)}
  end
  if t ~= 'string' then return {'unknown', false} end
  local head = redis.call('GETRANGE', key, 0, DEFAULT.EVENT_MAX_BYTES - 1)
  local nxt, ev = cmsgpack.unpack_one(head)
  local packed = head
  if nxt > 0 then packed = string.sub(head, 1, nxt) end
  local off = tonumber(ev.off) or 0
  ev.type = 'snapshot'
  local snap = cmsgpack.pack(ev)
  if since_epoch == ev.epoch then
    if since == off then return {'recovered', snap} end
    if since == off - 1 then return {'recovered', snap, packed} end
  end
  return {'resync', snap}
elseif kind == 'group' then
  local gkey = P .. ':' .. KEY.GROUP .. ':' .. id
  local f = redis.call('HMGET', gkey, 'total', 'queued', 'running', 'done', 'failed', 'canceled',
                       'off', 'epoch', 'cancel', 'updated_ms')
  if not f[7] then return {'unknown', false} end
  local off = tonumber(f[7]) or 0
  local epoch = nonempty(f[8]) or ''
  local snap = {v = 1, group = id, type = 'snapshot', off = off, epoch = epoch,
                ts_ms = tonumber(f[10]) or 0, total = tonumber(f[1]) or 0,
                queued = tonumber(f[2]) or 0, running = tonumber(f[3]) or 0,
                done = tonumber(f[4]) or 0, failed = tonumber(f[5]) or 0,
                canceled = tonumber(f[6]) or 0}
  if f[9] == '1' then snap.cancel = true end
  local packed = cmsgpack.pack(snap)
  local fresh = since == 0 and since_epoch == ''
  if not fresh and since_epoch ~= epoch then return {'resync', packed} end
  if since > off then return {'resync', packed} end
  if since == off then return {'recovered', packed} end
  local hkey = P .. ':' .. KEY.GROUP_HISTORY .. ':' .. id
  local entries = redis.call('XRANGE', hkey, (since + 1) .. '-0', '+', 'COUNT', limit)
  -- The history must continue right after since_off: else it was trimmed (or lost) past it.
  if #entries == 0 or entries[1][1] ~= (since + 1) .. '-0' then return {'resync', packed} end
  local out = {'recovered', packed}
  local last = since
  for _, e in ipairs(entries) do
    local eoff = tonumber(string.match(e[1], '^(%d+)-'))
    if eoff ~= last + 1 then return {'resync', packed} end
    last = eoff
    local fields = e[2]
    for k = 1, #fields - 1, 2 do
      if fields[k] == 'e' then out[#out + 1] = fields[k + 1] end
    end
  end
  if last < off then
    if #entries < limit then return {'resync', packed} end
    out[1] = 'more'
  end
  return out
end
return redis.error_reply('ERR recover: kind must be "job" or "group", got ' .. tostring(kind))
