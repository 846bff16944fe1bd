-- claim: move up to N jobs (and at most max_bytes of job documents) from the worker's model
-- queues into its in-flight list (atomic). Due retries of a model are taken first; then the
-- models share the batch (each pass gives every model with work an equal share, in the order
-- given) and a model's tenants share its part round-robin (P:ring:<model> rotates so the next
-- claim starts with the tenant after the last one served).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         the worker's fencing token; must equal P:worker:<worker>
-- ARGV[4] n             maximum number of jobs to claim
-- ARGV[5] max_bytes     maximum bytes of job documents (the first job is taken whatever its size)
-- ARGV[6] now_ms        unix epoch milliseconds
-- ARGV[7] result_ttl_s  TTL of the records of jobs finished here (job_not_found, canceled)
-- ARGV[8..] models      the models the worker serves
-- Returns a flat array of jobs in claim order, each in one of two forms (docs/protocol.md
-- "Fetched claims"): fetched, [model_index, id] (an integer first: the model is ARGV[7 +
-- model_index]), a fresh plain job whose claim read nothing: it runs fast at attempt 1, its
-- offset 1, its epoch and enqueue time in its document key's header; or read, [model, id,
-- attempt, enqueued_ms, off, epoch] (enqueued_ms as the digits stored; off and epoch are ""
-- unless the job runs fast: then they are its last event's, and the worker builds its record,
-- "Fast runs"), for a job in P:slow or a due retry. The worker reads every claimed job's
-- document with one MGET of their P:doc:<id> (no script moves a document). Or an error reply
-- starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local n = num(4) or 0
local max_bytes = num(5) or DEFAULT.MAX_CLAIM_BYTES
local c = context(P, ARGV[6], ARGV[7])

local refused = lease_refused(P, worker, token)
if refused then return refused end

local kjob = c.kjob
local out, ids = {}, {}
local taken, bytes, full = 0, 0, false

-- The slow runs taken unwatched (a retry), for the one HSET each that commit() runs after the
-- call's PUBLISHes: kept in flat arrays, since a table per write and unpack() cost about as much
-- as the HSET itself. A fast run writes nothing.
local run_keys, run_attempts = {}, {}
-- A fast run's epoch may be of an older data generation: the worker sends the generation of its
-- records with the ack, which re-makes them when it is not Redis's (docs/protocol.md).

-- Attempt numbers as strings: Lua turns a number into a string with "%.14g" (slow); a number
-- under 10 is nearly always what a claim writes.
local DIGITS = {'1', '2', '3', '4', '5', '6', '7', '8', '9'}

-- Takes fresh plain job id of the model at index mi into in-flight, reading nothing: its
-- document counts as FETCHED_DOC_MAX bytes, its bound. Returns 'taken' or 'full'.
local FETCHED = DEFAULT.FETCHED_DOC_MAX
local function take_fetched(mi, id)
  if taken > 0 and bytes + FETCHED > max_bytes then return 'full' end
  taken, bytes = taken + 1, bytes + FETCHED
  ids[#ids + 1] = id
  local k = #out
  out[k + 1], out[k + 2] = mi, id
  return 'taken'
end

-- P:slow, the queued ids whose claim reads the job: looked up only when it exists.
local kslow = P .. ':' .. KEY.SLOW
local any_slow = redis.call('EXISTS', kslow) == 1
local slow_done = {}

-- Takes job id of model into in-flight, reading the job. Returns 'taken'; 'dropped' (finished already: a
-- duplicate delivery or a job canceled while queued; or no such job; or its group was
-- canceled, which finishes it now), or 'full' (over max_bytes; left where it is). retry: id
-- comes from the delayed set (state `retrying`); a job in a queue is always `queued`.
local function take(model, id, retry)
  -- job_fields, inlined (called for every job).
  local r = redis.pcall('HMGET', kjob .. id, 'state', 'attempts', 'off', 'epoch', 'group',
                        'enqueued_ms', 'watch', 'size')
  if r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return 'dropped' end
    error(r)
  end
  -- The document's size (max_bytes), not the document: 0 when the job is missing (a job
  -- queued by a version before `size` has its document's key measured).
  local size = r[1] and (tonumber(r[8]) or redis.call('STRLEN', c.kdoc .. id)) or 0
  if size == 0 and r[1] then size = migrate_doc(c, id) end
  local group = nonempty(r[5])
  local watched = r[7] == '1'
  local f = nil
  if size == 0 or group or watched then
    f = {attempts = r[2], off = r[3], epoch = r[4], group = group, model = model, watch = r[7]}
  end
  if size == 0 then
    -- A queued id without a job (or its document) can never run: an error record, and a dead
    -- letter.
    finish(c, id, f, {state = 'failed', code = ERR.job_not_found, worker = worker,
                      message = 'the job is missing', dead = true})
    return 'dropped'
  end
  if taken > 0 and bytes + size > max_bytes then return 'full' end
  if group and group_get(c, group).cancel then
    finish(c, id, f, {state = 'canceled', code = ERR.canceled, from = 'queued',
                      message = 'the group ' .. group .. ' was canceled'})
    return 'dropped'
  end
  -- A lean hash has no attempts before the first run: no number to parse.
  local attempt = r[2] and (tonumber(r[2]) or 0) + 1 or 1
  local off, ep = '', ''
  if watched then
    f.attempts = attempt
    local _, off, ep = job_event(c, id, f, 'started', 'running', {worker = worker})
    w(c, 'HSET', kjob .. id, 'state', 'running', 'worker', worker, 'attempts', attempt,
      'off', off, 'epoch', ep, 'updated_ms', c.now)
  elseif not group and not retry and r[4] then
    off, ep = r[3], r[4]
  else
    -- Not an event: the snapshot's state changes, its time stays the last event's.
    local k = #run_keys + 1
    run_keys[k], run_attempts[k] = kjob .. id, DIGITS[attempt] or string.format('%d', attempt)
  end
  if group then
    group_job(c, group, 'queued', 'running',
              {id = id, type = 'started', state = 'running', attempt = attempt, worker = worker})
  end
  taken, bytes = taken + 1, bytes + size
  ids[#ids + 1] = id
  local k = #out
  out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5], out[k + 6] =
    model, id, attempt, r[6] or '0', off, ep
  return 'taken'
end

-- Per model: its ring, the cursor (next tenant to serve), per tenant how many ids were
-- consumed and whether its queue ran out.
local state = {}

local model_index = {}
local function model_state(model)
  local s = state[model]
  if s then return s end
  s = {ring = redis.call('LRANGE', c.kring .. model, 0, -1), cur = 1, pos = {}, out = {},
       changed = false, mi = model_index[model]}
  state[model] = s
  return s
end

-- Takes up to want jobs of model from its tenants, round-robin. Returns the number taken and
-- whether the model may have more.
local function take_model(model, want)
  local s = model_state(model)
  local ring, got = s.ring, 0
  local nring = #ring
  while got < want and not full do
    local active = 0
    for _, t in ipairs(ring) do
      if not s.out[t] then active = active + 1 end
    end
    if active == 0 then break end
    local share = math.ceil((want - got) / active)
    for _ = 1, nring do
      if got >= want or full then break end
      local t = ring[s.cur]
      s.cur = s.cur % nring + 1
      if not s.out[t] then
        local q = c.kq .. model .. ':' .. t
        local p = s.pos[t] or 0
        local k = math.min(share, want - got)
        -- One id more than needed tells whether the queue runs out.
        local list = redis.call('LRANGE', q, p, p + k)
        local slow = any_slow and #list > 0 and redis.call('SMISMEMBER', kslow, unpack(list))
        local used = 0
        for j = 1, math.min(k, #list) do
          local res
          if slow and slow[j] == 1 then
            res = take(model, list[j])
            if res ~= 'full' then slow_done[#slow_done + 1] = list[j] end
          else
            res = take_fetched(s.mi, list[j])
          end
          if res == 'full' then
            full = true
            break
          end
          used = used + 1
          if res == 'taken' then got = got + 1 end
        end
        s.pos[t] = p + used
        s.changed = true
        if not full and #list <= k then s.out[t] = true end
      end
    end
  end
  for _, t in ipairs(ring) do
    if not s.out[t] then return got, true end
  end
  return got, false
end

local models = {}
for i = 8, #ARGV do
  models[#models + 1] = ARGV[i]
  model_index[ARGV[i]] = model_index[ARGV[i]] or i - 7
end

-- Due retries first: they have waited already.
for _, model in ipairs(models) do
  if taken >= n or full then break end
  local dkey = c.kdelayed .. model
  local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', c.now, 'LIMIT', 0, n - taken)
  for _, id in ipairs(due) do
    if take(model, id, true) == 'full' then
      full = true
      break
    end
    w(c, 'ZREM', dkey, id)
  end
end

local active = models
while taken < n and #active > 0 and not full do
  local share = math.ceil((n - taken) / #active)
  local still = {}
  for _, model in ipairs(active) do
    if taken >= n or full then break end
    local _, more = take_model(model, math.min(share, n - taken))
    if more then still[#still + 1] = model end
  end
  active = still
end

-- The queues lose what was consumed; each ring restarts at its cursor, without the tenants
-- whose queue ran out.
for model, s in pairs(state) do
  if s.changed then
    for t, p in pairs(s.pos) do
      if p > 0 then w(c, 'LTRIM', c.kq .. model .. ':' .. t, p, -1) end
    end
    local ring, nring, order = s.ring, #s.ring, {}
    for k = 0, nring - 1 do
      local t = ring[(s.cur - 1 + k) % nring + 1]
      if not s.out[t] then order[#order + 1] = t end
    end
    local same = #order == nring
    for k = 1, #order do
      if order[k] ~= ring[k] then same = false end
    end
    if not same then
      w(c, 'DEL', c.kring .. model)
      w_list(c, 'RPUSH', c.kring .. model, order)
    end
  end
end
-- A model whose queues ran dry keeps no wake-up tokens: they would wake idle workers (this
-- one after its next empty claim) for work that is gone. The next enqueue pushes a fresh one.
for _, model in ipairs(models) do
  local s = state[model]
  local dry = s == nil and #model_state(model).ring == 0
  if s and not full and taken < n then
    dry = true
    for _, t in ipairs(s.ring) do
      if not s.out[t] then dry = false end
    end
  end
  if dry then w(c, 'DEL', P .. ':' .. KEY.WAKE .. ':' .. model) end
end
if #slow_done > 0 then w_list(c, 'SREM', kslow, slow_done) end
if #ids > 0 then
  w_list(c, 'RPUSH', P .. ':' .. KEY.INFLIGHT .. ':' .. worker, ids)
  w(c, 'SADD', P .. ':' .. KEY.WORKERS, worker)
end
if #run_keys > 0 then c.late_acl = {{'HSET', run_keys[1]}} end
c.late = function()
  for i = 1, #run_keys do
    redis.call('HSET', run_keys[i], 'state', 'running', 'worker', worker, 'attempts',
               run_attempts[i])
  end
end
commit(c)
return out
