-- ack: record the outcome of a batch of jobs claimed by this worker (atomic, fenced).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of the finished records
-- ARGV[6] dead_ttl_s    TTL of dead-letter records
-- ARGV[7] max_attempts  a transient failure of a job that ran this many times is final
-- ARGV[8] gen           the data generation of the fast records' epochs ("" when none)
-- ARGV[9..] per job: id, blob, how. how "": a fast run done (docs/protocol.md "Fast runs"):
--           blob is the whole record (terminal event, then the result document), built by the
--           worker from what its claim returned; "-": done, blob is the result document; else
--           "<error code name>" or "<error code name>:<retry_ms>" (retry_ms > 0: the error is
--           transient, retry after this many ms if attempts are left), blob is the result;
--           "!": the worker found no document for a claimed job (docs/protocol.md "Fetched
--           claims"), blob is its model: a job that has its record stays as it is, any other
--           gets a `job_not_found` failure and a dead letter.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local c = context(P, ARGV[4], ARGV[5])
c.dead_ttl = num(6) or DEFAULT.DEAD_TTL_S
local max_attempts = num(7) or DEFAULT.MAX_ATTEMPTS

local refused = lease_refused(P, worker, token)
if refused then return refused end

local kjob = c.kjob
local inflight = P .. ':' .. KEY.INFLIGHT .. ':' .. worker
local nj = math.floor((#ARGV - 8) / 3)
-- Batches are acked in claim order, so the acked ids are usually the list's head, in order: one
-- comparison each. Else an index of where each in-flight id is (its first place), of the whole
-- list (a worker keeps a few batches in flight: several times as many ids).
local list = redis.call('LRANGE', inflight, 0, nj - 1)
local head = #list == nj
for k = 1, nj do
  if not head then break end
  if list[k] ~= ARGV[6 + 3 * k] then head = false end
end
local where = nil
if not head then
  list, where = redis.call('LRANGE', inflight, 0, -1), {}
  for i, id in ipairs(list) do
    if not where[id] then where[id] = i end
  end
end

local out, removed = {}, {}
-- Fast runs changed since their claim (adopted): these take the slow path.
local attn_key = P .. ':' .. KEY.ATTN .. ':' .. worker
local attn, attn_done = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', attn_key)) do attn[id] = true end
-- A generation change (Redis lost its data) since the claim: every fast record is re-made.
local fast_ok = ARGV[8] ~= '' and ARGV[8] == epochs(c).gen
-- Reused from job to job (finish keeps neither): most acks are plain `done`s.
local f = {}

-- Reads the job's model and tenant into f (a canceled record, a retry's delayed set, a dead
-- letter need them; a plain `done` does not).
local function model_of(id)
  local m = redis.call('HMGET', kjob .. id, 'model', 'tenant')
  f.model, f.tenant = m[1], m[2]
end
local done_how = {state = 'done', worker = worker, from = 'running'}
-- The fast runs' records (one key kind: c.kjob), stored by c.late after the other writes.
local ttl = string.format('%d', c.ttl)
local fkey, fval, nfast = {}, {}, 0
for k = 1, nj do
  local i = 6 + 3 * k
  local id, blob, how = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local at = k
  if where then
    -- Off the index as it is taken (its list position leaves with the acked ones).
    at = where[id]
    if at then
      where[id] = nil
      removed[#removed + 1] = at
    end
  end
  if not at then
    out[k] = job_fields(c, id, 'state') and CODE.ACK_NOT_OURS or CODE.ACK_DUPLICATE
  elseif how == '!' then
    local t = redis.call('TYPE', kjob .. id).ok
    local m = t == 'hash' and redis.call('HMGET', kjob .. id, 'model', 'tenant')
    if t == 'string' then
      out[k] = CODE.ACK_DUPLICATE
    elseif m and migrate_doc(c, id) > 0 then
      -- Queued by a version before P:doc (its document was in its hash): back to the front of
      -- its queue, unrun, read by its next claim.
      if attn[id] then attn_done[#attn_done + 1] = id end
      w(c, 'HSET', kjob .. id, 'state', 'queued')
      w(c, 'HDEL', kjob .. id, 'worker')
      queue_push(c, m[1] or blob, nonempty(m[2]) or DEFAULT.TENANT, id, true)
      out[k] = CODE.ACK_DUPLICATE
    else
      -- No document to run: a job whose hash is left (its document key was lost) ends too.
      local r = t == 'hash' and job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'tenant',
                                           'watch', 'state')
      local ff = {model = blob}
      local from = nil
      if r then
        ff.attempts, ff.off, ff.epoch, ff.group, ff.tenant, ff.watch = r[1], r[2], r[3], r[4], r[5], r[6]
        if r[7] ~= 'queued' then from = 'running' end
      end
      if attn[id] then attn_done[#attn_done + 1] = id end
      finish(c, id, ff, {state = 'failed', code = ERR.job_not_found, worker = worker, from = from,
                         message = 'the job document is missing', dead = true})
      out[k] = CODE.ACK_FINISHED
    end
  elseif how == '' and fast_ok and not attn[id] then
    -- The fast path: nothing read, the worker's record stored as it is.
    nfast = nfast + 1
    fkey[nfast], fval[nfast] = kjob .. id, blob
    c.rdoc[#c.rdoc + 1] = c.kdoc .. id -- its document goes with those finish() ends
    out[k] = CODE.ACK_FINISHED
  else
    if attn[id] then attn_done[#attn_done + 1] = id end
    local result, code, retry = blob, nil, 0
    if how == '' then
      -- A fast record the ack cannot take as it is: its result follows the terminal event.
      result = string.sub(blob, cmsgpack.unpack_one(blob) + 1)
    elseif how ~= '-' then
      local name, ms = string.match(how, '^([^:]*):?(%d*)$')
      code, retry = nonempty(name) or how, tonumber(ms) or 0
    end
    -- model and tenant only for the rarer outcomes (model_of): a field less per job.
    local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'cancel', 'watch', 'state')
    if not r then
      out[k] = CODE.ACK_DUPLICATE
    else
      -- A fast run not adopted still counts the runs before it.
      local attempts = tonumber(r[1]) or 0
      if r[7] == 'queued' then attempts = attempts + 1 end
      f.attempts, f.off, f.epoch, f.group, f.model, f.tenant, f.watch =
        attempts, r[2], r[3], r[4], nil, nil, r[6]
      local group = nonempty(r[4])
      if r[5] == '1' or (group and group_get(c, group).cancel) then
        model_of(id)
        finish(c, id, f, {state = 'canceled', code = ERR.canceled, worker = worker,
                          from = 'running', message = 'canceled while it ran'})
        out[k] = CODE.ACK_CANCELED
      elseif code and retry > 0 and attempts < max_attempts then
        model_of(id)
        local due = c.now + retry
        local _, off, ep = job_event(c, id, f, 'retrying', 'retrying',
                                     {error = code, due_ms = due, worker = worker})
        w(c, 'HSET', kjob .. id, 'state', 'retrying', 'off', off, 'epoch', ep, 'due_ms', due,
          'error', code, 'updated_ms', c.now, 'attempts', attempts)
        w(c, 'HDEL', kjob .. id, 'worker')
        w(c, 'ZADD', c.kdelayed .. (nonempty(f.model) or ''), due, id)
        stat(c, 'retried', 1)
        if group then
          group_job(c, group, 'running', 'queued',
                    {id = id, type = 'retrying', state = 'retrying',
                     attempt = attempts, error = code})
        end
        out[k] = CODE.ACK_RETRYING
      elseif code and retry > 0 then
        model_of(id)
        finish(c, id, f, {state = 'failed', code = code, result = result, worker = worker,
                          from = 'running', dead = true,
                          doc = job_doc(c, id)})
        out[k] = CODE.ACK_EXHAUSTED
      elseif not code then
        done_how.result = result
        finish(c, id, f, done_how)
        out[k] = CODE.ACK_FINISHED
      else
        finish(c, id, f, {state = 'failed', code = code, result = result, worker = worker,
                          from = 'running'})
        out[k] = CODE.ACK_FINISHED
      end
    end
  end
end
if nfast > 0 then
  stat(c, 'done', nfast)
  -- SETEX: SET's option parsing is a loop of string compares per call.
  c.late_acl = {{'SETEX', fkey[1]}}
  c.late = function()
    for k = 1, nfast do redis.call('SETEX', fkey[k], ttl, fval[k]) end
  end
end
if #attn_done > 0 then w_list(c, 'SREM', attn_key, attn_done) end

-- Out of the in-flight list: in one LTRIM when the acked ids are its head (the usual case),
-- else one by one.
if head then
  if nj > 0 then w(c, 'LTRIM', inflight, nj, -1) end
else
  table.sort(removed)
  local front = true
  for k, at in ipairs(removed) do
    if at ~= k then front = false end
  end
  if front then
    if #removed > 0 then w(c, 'LTRIM', inflight, #removed, -1) end
  else
    for _, at in ipairs(removed) do w(c, 'LREM', inflight, 1, list[at]) end
  end
end
commit(c)
return out
