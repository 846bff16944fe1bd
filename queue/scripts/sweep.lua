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

if not redis.call('SET', P .. ':sweeper', me, 'NX', 'PX', lock_ms) then return 0 end

-- Appends and publishes one event of job id (and of its group); counters already updated.
local function emit(id, group, ev)
  local skey = P .. ':status:' .. id
  ev.v = 1
  ev.id = id
  ev.ts_ms = now
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

-- Gives job id an error result and puts it on P:dead.
local function dead_letter(id, worker, model, group, attempt, code, message)
  local skey = P .. ':status:' .. id
  redis.call('SET', P .. ':result:' .. id, cmsgpack.pack({v = 1, id = id, status = 'error',
             error = {code = code, message = message}, model = model, width = 0, height = 0,
             attempt = attempt, worker = worker}), 'EX', ttl)
  redis.call('DEL', P .. ':job:' .. id)
  redis.call('HSET', skey, 'state', 'failed', 'error', code, 'updated_ms', now)
  redis.call('HINCRBY', P .. ':stats', 'failed', 1)
  redis.call('HINCRBY', P .. ':stats', 'dead', 1)
  if group then
    local gkey = P .. ':group:' .. group
    redis.call('HINCRBY', gkey, 'queued', -1)
    redis.call('HINCRBY', gkey, 'failed', 1)
  end
  emit(id, group, {state = 'failed', worker = worker, attempt = attempt, error = code})
  redis.call('EXPIRE', skey, ttl)
  redis.call('EXPIRE', P .. ':events:' .. id, ttl)
  local rkey = P .. ':reply:' .. id
  redis.call('RPUSH', rkey, 'failed')
  redis.call('EXPIRE', rkey, ttl)
  local dead = P .. ':dead'
  redis.call('LPUSH', dead, id)
  redis.call('LTRIM', dead, 0, 99999)
end

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
          dead_letter(id, worker, model, group, attempt, 'job_not_found',
                      'the job payload is missing')
        elseif attempt >= max_attempts then
          dead_letter(id, worker, model, group, attempt, 'max_attempts_exceeded',
                      'the job\'s workers died ' .. attempt .. ' times')
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
          emit(id, group, {state = 'requeued', attempt = attempt})
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
