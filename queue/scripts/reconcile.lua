-- reconcile: hand back the ids in this worker's in-flight list that the worker does not hold
-- (atomic, fenced). The worker calls it after every (re)connect and after a failed claim: a claim
-- whose reply was lost, or a claim that survived while the ack after it was lost (Redis lost its
-- last writes: appendfsync everysec and a crash, a failover to a lagging replica), leaves ids in
-- a live worker's list that nobody would ever run, since its lease keeps the sweeper away.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL for the keys of jobs dead-lettered here
-- ARGV[6..] held        the ids the worker holds (claimed and not yet acked)
-- For each id in the list and not held: removed from the list; if it has a result, nothing else
-- (its ack went through); without a payload, dead-lettered (job_not_found); else back to the
-- front of its tenant queue with the attempt its claim charged given back (the worker did not run
-- it, or its run was lost), status `requeued`, a `requeued` event and a wake-up token.
-- Returns {requeued, finished, missing}: ids requeued (or dead-lettered), ids that already had a
-- result, and held ids that are not in the list (swept meanwhile: their ack will say so).
-- Error reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local ctx = {P = P, now = now, ttl = ttl}

if redis.call('GET', P .. ':worker:' .. worker) ~= token then
  return redis.error_reply('LEASE lease of worker ' .. worker .. ' is lost')
end

local held, nheld = {}, 0
for i = 6, #ARGV do
  if not held[ARGV[i]] then nheld = nheld + 1 end
  held[ARGV[i]] = true
end

local inflight = P .. ':inflight:' .. worker
local ids = redis.call('LRANGE', inflight, 0, -1)
local seen, done = {}, {}
local requeued, finished, found = 0, 0, 0
-- Walk backwards so LPUSH leaves the jobs in their claim order at the queue front.
for i = #ids, 1, -1 do
  local id = ids[i]
  if held[id] then
    if not seen[id] then found = found + 1 end
    seen[id] = true
  elseif not done[id] then
    done[id] = true
    redis.call('LREM', inflight, 0, id)
    if redis.call('EXISTS', P .. ':result:' .. id) == 1 then
      finished = finished + 1
    else
      local skey = P .. ':status:' .. id
      local st = redis.call('HMGET', skey, 'model', 'tenant', 'group', 'attempts')
      local model, tenant, group = st[1], st[2], st[3]
      local attempt = tonumber(st[4]) or 0
      if not model then model = '' end
      if not tenant or tenant == '' then tenant = 'default' end
      if group == false or group == '' then group = nil end
      if redis.call('EXISTS', P .. ':job:' .. id) == 0 or model == '' then
        dead_letter(ctx, id, {worker = worker, model = model, group = group, attempt = attempt,
                              code = 'job_not_found', message = 'the job payload is missing',
                              del_job = true})
      else
        if attempt > 0 then
          attempt = redis.call('HINCRBY', skey, 'attempts', -1)
        end
        local q = P .. ':q:' .. model .. ':' .. tenant
        if redis.call('LLEN', q) == 0 then
          redis.call('RPUSH', P .. ':ring:' .. model, tenant)
        end
        redis.call('LPUSH', q, id)
        redis.call('HSET', skey, 'state', 'requeued', 'updated_ms', now)
        redis.call('HDEL', skey, 'worker')
        redis.call('HINCRBY', P .. ':stats', 'requeued', 1)
        emit(ctx, id, group, {state = 'requeued', attempt = attempt})
        local wake = P .. ':wake:' .. model
        redis.call('RPUSH', wake, '1')
        redis.call('LTRIM', wake, -64, -1)
      end
      requeued = requeued + 1
    end
  end
end
return {requeued, finished, nheld - found}
