-- sweep: recover the in-flight jobs of workers whose lease expired (atomic). At most one sweeper
-- runs per lock period (P:sweeper), so many workers may call it on a timer. Also moves due
-- retries of the served models back to their queues and prunes dead letters whose record expired
-- and P:slow ids whose job is gone.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        id of the worker running the sweep (stored in the lock, for debugging)
-- ARGV[3] lock_ms       lock period in milliseconds (2 x the sweep interval)
-- ARGV[4] max_attempts  a job that already ran this many times is dead-lettered
-- ARGV[5] now_ms        unix epoch milliseconds
-- ARGV[6] result_ttl_s  TTL of the group keys touched
-- ARGV[7] dead_ttl_s    TTL of dead-letter records
-- Returns the number of jobs requeued plus dead-lettered (0 also when another sweeper holds
-- the lock).
local P, me = ARGV[1], ARGV[2]
local lock_ms = num(3)
local max_attempts = num(4) or DEFAULT.MAX_ATTEMPTS
local c = context(P, ARGV[5], ARGV[6])
c.dead_ttl = num(7) or DEFAULT.DEAD_TTL_S

local lock = P .. ':' .. KEY.SWEEPER
if redis.call('EXISTS', lock) == 1 then return 0 end
w(c, 'SET', lock, me, 'PX', lock_ms)

local kjob = c.kjob
local count = 0
-- Never the sweeper's own list: a worker running this is alive, its lease only ran out (Redis
-- blocked by large payloads past the TTL, a stalled host). Its next heartbeat re-acquires the
-- lease with the same token, its acks go through, and what it no longer holds it hands back
-- itself (the reconciliation); requeueing would run every such job twice, at attempt 2.
for _, worker in ipairs(redis.call('SMEMBERS', P .. ':' .. KEY.WORKERS)) do
  if worker ~= me and redis.call('EXISTS', P .. ':' .. KEY.LEASE .. ':' .. worker) == 0 then
    local inflight = P .. ':' .. KEY.INFLIGHT .. ':' .. worker
    local ids = redis.call('LRANGE', inflight, 0, -1)
    -- Walk backwards so the pushes to the front leave the jobs in their claim order.
    for i = #ids, 1, -1 do
      local id = ids[i]
      local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'model', 'tenant', 'deaths',
                           'watch', 'state')
      local model = r and nonempty(r[5])
      if model then
        local attempt = tonumber(r[1]) or 0
        -- A fast run's claim did not count it (docs/protocol.md "Fast runs").
        if r[9] == 'queued' then attempt = attempt + 1 end
        local deaths = (tonumber(r[7]) or 0) + 1
        local f = {attempts = attempt, off = r[2], epoch = r[3], group = r[4], model = model,
                   tenant = r[6], watch = r[8]}
        if attempt >= max_attempts then
          finish(c, id, f, {state = 'failed', code = ERR.max_attempts_exceeded, worker = worker,
                            from = 'running', dead = true,
                            doc = job_doc(c, id),
                            message = 'the job ran ' .. attempt .. ' times and its worker died'})
        elseif deaths >= DEFAULT.POISON_DEATHS then
          finish(c, id, f, {state = 'failed', code = ERR.suspected_poison, worker = worker,
                            from = 'running', dead = true,
                            doc = job_doc(c, id),
                            message = 'the job was in flight on ' .. deaths ..
                                      ' workers that died (last: ' .. worker .. ')'})
        else
          local _, off, ep = job_event(c, id, f, 'requeued', 'queued')
          w(c, 'HSET', kjob .. id, 'state', 'queued', 'deaths', deaths, 'off', off, 'epoch', ep,
            'updated_ms', c.now, 'attempts', attempt)
          w(c, 'HDEL', kjob .. id, 'worker')
          queue_push(c, model, nonempty(r[6]) or DEFAULT.TENANT, id, true)
          stat(c, 'requeued', 1)
          local group = nonempty(r[4])
          if group then
            group_job(c, group, 'running', 'queued',
                      {id = id, type = 'requeued', state = 'queued', attempt = attempt})
          end
        end
        count = count + 1
      end
      -- else: finished (a record) or gone: nothing to recover.
    end
    w(c, 'DEL', inflight)
    w(c, 'DEL', P .. ':' .. KEY.ATTN .. ':' .. worker)
    w(c, 'SREM', P .. ':' .. KEY.WORKERS, worker)
  end
end

-- Due retries back to their queues (the claim also takes them directly).
for _, model in ipairs(redis.call('SMEMBERS', P .. ':' .. KEY.SERVED)) do
  local dkey = c.kdelayed .. model
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dkey, '-inf', c.now, 'LIMIT', 0, 1000)) do
    local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'tenant', 'watch')
    if r and r[2] then
      local f = {attempts = r[1], off = r[2], epoch = r[3], group = r[4], watch = r[6]}
      local _, off, ep = job_event(c, id, f, 'requeued', 'queued')
      w(c, 'HSET', kjob .. id, 'state', 'queued', 'off', off, 'epoch', ep, 'updated_ms', c.now)
      queue_push(c, model, nonempty(r[5]) or DEFAULT.TENANT, id, true)
      local group = nonempty(r[4])
      if group then
        group_job(c, group, nil, nil, {id = id, type = 'requeued', state = 'queued',
                                       attempt = tonumber(r[1]) or 0})
      end
    end
    w(c, 'ZREM', dkey, id)
  end
end

-- Dead letters whose record expired (oldest first, a bounded number per sweep).
local dead = P .. ':' .. KEY.DEAD
for _, id in ipairs(redis.call('ZRANGE', dead, 0, 99)) do
  if redis.call('EXISTS', kjob .. id) == 0 then w(c, 'ZREM', dead, id) end
end
-- P:slow ids without a job (it expired in a queue that expired too: no claim comes for them);
-- a random bounded sample per sweep. Pruning one still queued is harmless: its claim then
-- fetches it, finds it gone and fails it as `job_not_found`, as a read would.
local kslow = P .. ':' .. KEY.SLOW
for _, id in ipairs(redis.call('SRANDMEMBER', kslow, 100)) do
  if redis.call('EXISTS', kjob .. id) == 0 then w(c, 'SREM', kslow, id) end
end
commit(c)
return count
