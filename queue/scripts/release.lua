-- release: hand jobs this worker claimed back to the front of their queues without charging an
-- attempt (atomic, fenced). A worker whose device failed (not the job) releases what it holds
-- so another worker runs it at once, instead of waiting for its lease to expire and the sweeper.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of the group keys an event touches, and of a dead-lettered job's
-- ARGV[6..] ids         the jobs to hand back, in claim order
-- Returns one integer per id: 1 back in its queue, 2 it already had a result (only removed from
-- in-flight), 3 its payload or status is gone (dead-lettered with job_not_found, as the sweeper
-- does), 0 not in this worker's in-flight list (swept or acked; nothing changed).
-- Error reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local ctx = {P = P, now = now, ttl = ttl}

if redis.call('GET', P .. ':worker:' .. worker) ~= token then
  return redis.error_reply('LEASE lease of worker ' .. worker .. ' is lost')
end
local inflight = P .. ':inflight:' .. worker

-- Hands one job back; returns its reply code.
local function release(id)
  if redis.call('LREM', inflight, 0, id) == 0 then return 0 end
  if redis.call('EXISTS', P .. ':result:' .. id) == 1 then return 2 end
  local skey = P .. ':status:' .. id
  local st = redis.call('HMGET', skey, 'model', 'tenant', 'group', 'attempts')
  local model, tenant, group = st[1], st[2], st[3]
  if not model then model = '' end
  if not tenant or tenant == '' then tenant = 'default' end
  if group == false or group == '' then group = nil end
  -- The claim counted this execution; the device failed, not the job: take it back.
  local attempt = (tonumber(st[4]) or 1) - 1
  if attempt < 0 then attempt = 0 end
  if model == '' or redis.call('EXISTS', P .. ':job:' .. id) == 0 then
    dead_letter(ctx, id, {worker = worker, model = model, group = group, attempt = attempt,
                          code = 'job_not_found', message = 'the job payload is missing',
                          del_job = true})
    return 3
  end
  local q = P .. ':q:' .. model .. ':' .. tenant
  if redis.call('LLEN', q) == 0 then
    redis.call('RPUSH', P .. ':ring:' .. model, tenant)
  end
  redis.call('LPUSH', q, id)
  redis.call('HSET', skey, 'state', 'requeued', 'attempts', attempt, 'updated_ms', now)
  redis.call('HDEL', skey, 'worker')
  redis.call('HINCRBY', P .. ':stats', 'released', 1)
  emit(ctx, id, group, {state = 'requeued', attempt = attempt, released = true})
  local wake = P .. ':wake:' .. model
  redis.call('RPUSH', wake, '1')
  redis.call('LTRIM', wake, -64, -1)
  return 1
end

-- Backwards, so LPUSH leaves the jobs in their claim order at the queue front (as sweep does).
local out = {}
for i = #ARGV, 6, -1 do out[i - 5] = release(ARGV[i]) end
return out
