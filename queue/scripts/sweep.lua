-- sweep: recover the in-flight jobs of workers whose lease expired (atomic). At most one sweeper
-- runs per lock period (P:sweeper, SET NX PX), so many workers may call it on a timer.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        id of the worker running the sweep (stored in the lock, for debugging)
-- ARGV[3] lock_ms       lock period in milliseconds (2 x the sweep interval)
-- ARGV[4] max_attempts  a job that already ran this many times is dead-lettered
-- ARGV[5] now_ms        unix epoch milliseconds
-- ARGV[6] result_ttl_s  TTL for the keys of dead-lettered jobs
-- Returns the number of jobs requeued plus dead-lettered (0 also when another sweeper holds
-- the lock).
local P, me = ARGV[1], ARGV[2]
local lock_ms = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local ctx = {P = P, now = now, ttl = ttl}

if not redis.call('SET', P .. ':sweeper', me, 'NX', 'PX', lock_ms) then return 0 end

local count = 0
for _, worker in ipairs(redis.call('SMEMBERS', P .. ':workers')) do
  if redis.call('EXISTS', P .. ':worker:' .. worker) == 0 then
    local inflight = P .. ':inflight:' .. worker
    local ids = redis.call('LRANGE', inflight, 0, -1)
    -- Walk backwards so LPUSH leaves the jobs in their claim order at the queue front.
    for i = #ids, 1, -1 do
      local id = ids[i]
      if redis.call('EXISTS', P .. ':result:' .. id) == 0 then
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
        elseif attempt >= max_attempts then
          dead_letter(ctx, id, {worker = worker, model = model, group = group, attempt = attempt,
                                code = 'max_attempts_exceeded',
                                message = 'the job\'s workers died ' .. attempt .. ' times',
                                del_job = true})
        else
          -- Back to the front of its tenant queue, keeping the ring invariant.
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
        count = count + 1
      end
    end
    redis.call('DEL', inflight)
    redis.call('SREM', P .. ':workers', worker)
  end
end
return count
