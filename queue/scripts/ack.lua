-- ack: record the results of a batch of jobs claimed by this worker (atomic, fenced).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of result, status, events, reply and group keys
-- ARGV[6..] triples     id, result (encoded result document), error code name ("" = done)
-- Returns one integer per job: 1 written, 2 duplicate (a result existed: only removed from
-- in-flight), 0 not in this worker's in-flight list (it was swept; nothing written).
-- Error reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local ctx = {P = P, now = now, ttl = ttl}

if redis.call('GET', P .. ':worker:' .. worker) ~= token then
  return redis.error_reply('LEASE lease of worker ' .. worker .. ' is lost')
end
local inflight = P .. ':inflight:' .. worker

local out = {}
for i = 6, #ARGV - 2, 3 do
  local id, result, code = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rkey = P .. ':result:' .. id
  if redis.call('EXISTS', rkey) == 1 then
    redis.call('LREM', inflight, 0, id)
    out[#out + 1] = 2
  elseif redis.call('LREM', inflight, 0, id) == 0 then
    out[#out + 1] = 0
  else
    local state = 'done'
    if code ~= '' then state = 'failed' end
    redis.call('SET', rkey, result, 'EX', ttl)
    redis.call('DEL', P .. ':job:' .. id)
    local skey = P .. ':status:' .. id
    if code ~= '' then
      redis.call('HSET', skey, 'state', state, 'worker', worker, 'error', code, 'updated_ms', now)
    else
      redis.call('HSET', skey, 'state', state, 'worker', worker, 'updated_ms', now)
    end
    local st = redis.call('HMGET', skey, 'group', 'attempts')
    local group = st[1]
    if group == false or group == '' then group = nil end
    redis.call('HINCRBY', P .. ':stats', state, 1)
    if group then
      local gkey = P .. ':group:' .. group
      redis.call('HINCRBY', gkey, 'queued', -1)
      redis.call('HINCRBY', gkey, state, 1)
    end
    local ev = {state = state, worker = worker, attempt = tonumber(st[2]) or 0}
    if code ~= '' then ev.error = code end
    emit(ctx, id, group, ev)
    redis.call('EXPIRE', skey, ttl)
    redis.call('EXPIRE', P .. ':events:' .. id, ttl)
    local reply = P .. ':reply:' .. id
    redis.call('RPUSH', reply, state)
    redis.call('EXPIRE', reply, ttl)
    out[#out + 1] = 1
  end
end
return out
