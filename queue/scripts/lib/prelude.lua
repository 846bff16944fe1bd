-- prelude: helpers shared by the queue scripts. Not a script itself: every script's effective
-- source is this file followed by the script's own file (embed_scripts.cmake for C,
-- segq.client.load_script for Python), so each script can call them. They take their context
-- explicitly: ctx = {P = prefix, now = now_ms, ttl = result_ttl_s}.

-- Appends and publishes one event of job id (and of its group, nil for none); counters already
-- updated. Fills in ev's v, id, ts_ms, seq (and group, gseq, done, failed, total).
local function emit(ctx, id, group, ev)
  local P, ttl = ctx.P, ctx.ttl
  local skey = P .. ':status:' .. id
  ev.v = 1
  ev.id = id
  ev.ts_ms = ctx.now
  ev.seq = redis.call('HINCRBY', skey, 'seq', 1)
  if group then ev.group = group end
  local packed = cmsgpack.pack(ev)
  redis.call('XADD', P .. ':events:' .. id, 'MAXLEN', '~', 64, '*', 'e', packed)
  redis.call('PUBLISH', P .. ':ev:' .. id, packed)
  if group then
    local gkey = P .. ':group:' .. group
    ev.gseq = redis.call('HINCRBY', gkey, 'gseq', 1)
    local c = redis.call('HMGET', gkey, 'done', 'failed', 'total')
    ev.done, ev.failed, ev.total = tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0
    packed = cmsgpack.pack(ev)
    local gev = P .. ':gevents:' .. group
    redis.call('XADD', gev, 'MAXLEN', '~', 10000, '*', 'e', packed)
    redis.call('PUBLISH', P .. ':gev:' .. group, packed)
    redis.call('EXPIRE', gkey, ttl)
    redis.call('EXPIRE', gev, ttl)
  end
end

-- Gives job id an error result, marks it failed (stats, group counters, a `failed` event, the
-- reply token) and puts it on P:dead. j: worker, model, attempt, code, message (the error
-- result's fields); group (nil for none); status (may be nil): extra {field, value, ...} set on
-- the status hash between `error` and `updated_ms`; del_job: also delete P:job:<id> (sweep;
-- claim only dead-letters ids whose payload is already gone).
local function dead_letter(ctx, id, j)
  local P, ttl = ctx.P, ctx.ttl
  local skey = P .. ':status:' .. id
  redis.call('SET', P .. ':result:' .. id, cmsgpack.pack({v = 1, id = id, status = 'error',
             error = {code = j.code, message = j.message}, model = j.model, width = 0, height = 0,
             attempt = j.attempt, worker = j.worker}), 'EX', ttl)
  if j.del_job then redis.call('DEL', P .. ':job:' .. id) end
  local fields = {'state', 'failed', 'error', j.code}
  for _, x in ipairs(j.status or {}) do fields[#fields + 1] = x end
  fields[#fields + 1] = 'updated_ms'
  fields[#fields + 1] = ctx.now
  redis.call('HSET', skey, unpack(fields))
  redis.call('HINCRBY', P .. ':stats', 'failed', 1)
  redis.call('HINCRBY', P .. ':stats', 'dead', 1)
  local group = j.group
  if group then
    local gkey = P .. ':group:' .. group
    redis.call('HINCRBY', gkey, 'queued', -1)
    redis.call('HINCRBY', gkey, 'failed', 1)
  end
  emit(ctx, id, group, {state = 'failed', worker = j.worker, attempt = j.attempt, error = j.code})
  redis.call('EXPIRE', skey, ttl)
  redis.call('EXPIRE', P .. ':events:' .. id, ttl)
  local rkey = P .. ':reply:' .. id
  redis.call('RPUSH', rkey, 'failed')
  redis.call('EXPIRE', rkey, ttl)
  local dead = P .. ':dead'
  redis.call('LPUSH', dead, id)
  redis.call('LTRIM', dead, 0, 99999)
end

