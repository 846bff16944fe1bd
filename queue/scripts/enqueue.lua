-- enqueue: queue one or more jobs (atomic). The Python client sends one call per submit or
-- submit_many chunk; the C tools through sq_queue_enqueue_sync.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix        key prefix, e.g. "segq"
-- ARGV[2] now_ms        unix epoch milliseconds
-- ARGV[3] result_ttl_s  TTL of the records of jobs rejected here, and of the group keys
-- ARGV[4] group         group id of every job of the call, "" for none
-- ARGV[5] watch         1: publish these jobs' events (docs/protocol.md "Watched jobs"); a job
--                       whose channel has a subscriber already is watched anyway
-- ARGV[6..] per job: id, model, tenant ("" = default), priority (> 0: front of its tenant queue),
--                    payload (the job document, msgpack)
-- Returns one code per job (CODE.ENQUEUE_*): 1 queued; 0 already queued or running (nothing
-- done); 2 already finished (nothing done); 3 rejected with an `unknown_model` failed record
-- (workers registered in P:models:served and none serves the model); 4 rejected with a
-- `canceled` record (the group was canceled). Before any worker has registered every model is
-- accepted, its keys and the job with a TTL of result_ttl_s (the heartbeat keeps them).
local P = ARGV[1]
local c = context(P, ARGV[2], ARGV[3])
local group = nonempty(ARGV[4])
local watch = ARGV[5] == '1'

local served_key = P .. ':' .. KEY.SERVED
local any_served = redis.call('SCARD', served_key) > 0
local serves = {}
local g = nil
if group then g = group_get(c, group) end

-- Which of the call's jobs already have a subscriber (a reader that subscribed before the job
-- existed could not mark it watched): one PUBSUB NUMSUB per call, not per job.
local subscribed = {}
if not watch then
  local chans = {}
  for i = 6, #ARGV - 4, 5 do chans[#chans + 1] = c.kev .. ARGV[i] end
  for k = 1, #chans, 1000 do
    local r = redis.call('PUBSUB', 'NUMSUB', unpack(chans, k, math.min(k + 999, #chans)))
    for j = 1, #r, 2 do
      if r[j + 1] > 0 then subscribed[r[j]] = true end
    end
  end
end

local out = {}
local seen = {}
for i = 6, #ARGV - 4, 5 do
  local id, model, tenant, priority, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2],
                                               tonumber(ARGV[i + 3]) or 0, ARGV[i + 4]
  if tenant == '' then tenant = DEFAULT.TENANT end
  local kind = seen[id] or redis.call('TYPE', c.kjob .. id).ok
  if kind == 'hash' then
    out[#out + 1] = CODE.ENQUEUE_PENDING
  elseif kind ~= 'none' then
    -- A finished record (a string; any other type would not be ours either).
    out[#out + 1] = CODE.ENQUEUE_FINISHED
  else
    seen[id] = 'hash'
    local served = serves[model]
    if served == nil then
      served = not any_served or redis.call('SISMEMBER', served_key, model) == 1
      serves[model] = served
    end
    local f = {off = 0, epoch = new_epoch(c), attempts = 0, group = group, model = model,
               watch = watch and '1' or '0'}
    stat(c, 'enqueued', 1)
    if g then g.total = g.total + 1 end
    if not served then
      finish(c, id, f, {state = 'failed', code = ERR.unknown_model,
                        message = 'no worker serves model ' .. model})
      seen[id] = 'string'
      out[#out + 1] = CODE.ENQUEUE_REJECTED
    elseif g and g.cancel then
      finish(c, id, f, {state = 'canceled', code = ERR.canceled,
                        message = 'the group ' .. group .. ' was canceled'})
      seen[id] = 'string'
      out[#out + 1] = CODE.ENQUEUE_CANCELED
    else
      if subscribed[c.kev .. id] then f.watch = '1' end
      local packed, off, ep = job_event(c, id, f, 'queued', 'queued')
      new_job(c, id, payload, off, ep, model, tenant, group, f.watch)
      queue_push(c, model, tenant, id, priority > 0,
                 not group and f.watch ~= '1' and #payload <= DEFAULT.FETCHED_DOC_MAX)
      if not any_served then
        -- No worker has registered yet, so no model name can be refused: a job queued now is
        -- kept result_ttl_s for a worker serving its model to appear (its heartbeat makes the
        -- model's keys and jobs permanent), and a mistyped model leaves nothing for good.
        w(c, 'EXPIRE', c.kjob .. id, c.ttl)
        w(c, 'EXPIRE', c.kdoc .. id, c.ttl)
        w(c, 'EXPIRE', c.kq .. model .. ':' .. tenant, c.ttl)
        w(c, 'EXPIRE', c.kring .. model, c.ttl)
        c.wake_ttl = c.ttl
      end
      if g then group_job(c, group, nil, 'queued', {id = id, type = 'queued', state = 'queued'}) end
      out[#out + 1] = CODE.ENQUEUE_QUEUED
    end
  end
end
commit(c)
return out
