-- ack: record the outcome of a batch of jobs claimed by this worker (atomic, fenced).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of the finished records
-- ARGV[6] dead_ttl_s    TTL of dead-letter records
-- ARGV[7] max_attempts  a transient failure of a job that ran this many times is final
-- ARGV[8..] per job: id, result (the encoded result document), error code name ("" = done),
--           retry_ms (> 0: the error is transient, retry after this many ms if attempts are left)
-- Returns one code per job (CODE.ACK_*): 1 finished (record written); 2 duplicate (it already
-- had a record: only removed from in-flight); 0 not in this worker's in-flight list (it was
-- swept and belongs to someone else: nothing written); 3 canceled (a cancel was pending: a
-- `canceled` record instead of the result); 4 retrying (delayed by retry_ms, no record);
-- 5 failed after its last attempt (the record, and a dead letter keeping the job document).
-- Error reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local c = context(P, ARGV[4], ARGV[5])
c.dead_ttl = num(6) or DEFAULT.DEAD_TTL_S
local max_attempts = num(7) or DEFAULT.MAX_ATTEMPTS

local refused = lease_refused(P, worker, token)
if refused then return refused end

local kjob = c.kjob
local inflight = P .. ':' .. KEY.INFLIGHT .. ':' .. worker
-- Where each in-flight id is (its first place). Batches are acked in claim order, so the acked
-- ids are usually the list's head: read that many first, the whole list (a worker keeps a few
-- batches in flight: several times as many ids) only when one of them is not there.
local function index(stop)
  local l, at = redis.call('LRANGE', inflight, 0, stop), {}
  for i, id in ipairs(l) do
    if not at[id] then at[id] = i end
  end
  return l, at
end
local list, where = index(math.floor((#ARGV - 7) / 4) - 1)
for i = 8, #ARGV - 3, 4 do
  if not where[ARGV[i]] then
    list, where = index(-1)
    break
  end
end

local out, removed = {}, {}
-- Reused from job to job (finish keeps neither): most acks are plain `done`s.
local f = {}

-- Reads the job's model and tenant into f (a canceled record, a retry's delayed set, a dead
-- letter need them; a plain `done` does not).
local function model_of(id)
  local m = redis.call('HMGET', kjob .. id, 'model', 'tenant')
  f.model, f.tenant = m[1], m[2]
end
local done_how = {state = 'done', worker = worker, from = 'running'}
for i = 8, #ARGV - 3, 4 do
  local id, result, code, retry = ARGV[i], ARGV[i + 1], nonempty(ARGV[i + 2]),
                                  tonumber(ARGV[i + 3]) or 0
  local at = where[id]
  if not at then
    out[#out + 1] = job_fields(c, id, 'state') and CODE.ACK_NOT_OURS or CODE.ACK_DUPLICATE
  else
    where[id] = nil
    removed[#removed + 1] = at
    -- model and tenant only for the rarer outcomes (model_of): a field less per job.
    local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'cancel', 'watch')
    if not r then
      out[#out + 1] = CODE.ACK_DUPLICATE
    else
      f.attempts, f.off, f.epoch, f.group, f.model, f.tenant, f.watch =
        r[1], r[2], r[3], r[4], nil, nil, r[6]
      local group = nonempty(r[4])
      if r[5] == '1' or (group and group_get(c, group).cancel) then
        model_of(id)
        finish(c, id, f, {state = 'canceled', code = ERR.canceled, worker = worker,
                          from = 'running', message = 'canceled while it ran'})
        out[#out + 1] = CODE.ACK_CANCELED
      elseif code and retry > 0 and (tonumber(r[1]) or 0) < max_attempts then
        model_of(id)
        local due = c.now + retry
        local _, off, ep = job_event(c, id, f, 'retrying', 'retrying',
                                     {error = code, due_ms = due, worker = worker})
        w(c, 'HSET', kjob .. id, 'state', 'retrying', 'off', off, 'epoch', ep, 'due_ms', due,
          'error', code, 'updated_ms', c.now)
        w(c, 'HDEL', kjob .. id, 'worker')
        w(c, 'ZADD', c.kdelayed .. (nonempty(f.model) or ''), due, id)
        stat(c, 'retried', 1)
        if group then
          group_job(c, group, 'running', 'queued',
                    {id = id, type = 'retrying', state = 'retrying',
                     attempt = tonumber(r[1]) or 0, error = code})
        end
        out[#out + 1] = CODE.ACK_RETRYING
      elseif code and retry > 0 then
        model_of(id)
        finish(c, id, f, {state = 'failed', code = code, result = result, worker = worker,
                          from = 'running', dead = true,
                          doc = redis.call('HGET', kjob .. id, 'doc') or nil})
        out[#out + 1] = CODE.ACK_EXHAUSTED
      elseif not code then
        done_how.result = result
        finish(c, id, f, done_how)
        out[#out + 1] = CODE.ACK_FINISHED
      else
        finish(c, id, f, {state = 'failed', code = code, result = result, worker = worker,
                          from = 'running'})
        out[#out + 1] = CODE.ACK_FINISHED
      end
    end
  end
end

-- Out of the in-flight list: in one LTRIM when the acked ids are its head (the usual case:
-- batches are acked in claim order), else one by one.
table.sort(removed)
local head = true
for k, at in ipairs(removed) do
  if at ~= k then head = false end
end
if #removed > 0 then
  if head then
    w(c, 'LTRIM', inflight, #removed, -1)
  else
    for _, at in ipairs(removed) do w(c, 'LREM', inflight, 1, list[at]) end
  end
end
commit(c)
return out
