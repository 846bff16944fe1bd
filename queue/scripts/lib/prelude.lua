-- prelude: helpers shared by the queue scripts. Not a script itself: every script's effective
-- source is the generated schema constants (KEY, DEFAULT, CODE, ERR), this file, then the
-- script's own file (embed_scripts.cmake for C, segq.client.load_script for Python).
-- The discipline (docs/protocol.md "Fallible calls first"): reads happen at once; writes and
-- PUBLISHes are collected in the call's context and run by commit(): the ACL check first, then
-- PUBLISHes, then writes, so a script that fails (no channel rights, a command the account
-- lacks, a key of the wrong type) has changed nothing.

-- The call's context: key prefixes, the clock, TTLs, and what commit() will write.
local function context(P, now, ttl)
  local c = {P = P, now = tonumber(now), ttl = tonumber(ttl) or DEFAULT.RESULT_TTL_S,
             dead_ttl = DEFAULT.DEAD_TTL_S}
  c.kjob = P .. ':' .. KEY.JOB .. ':'
  c.kdoc = P .. ':' .. KEY.DOC .. ':'
  c.kev = P .. ':' .. KEY.JOB_CHANNEL .. ':'
  c.kq = P .. ':' .. KEY.QUEUE .. ':'
  c.kring = P .. ':' .. KEY.RING .. ':'
  c.kdelayed = P .. ':' .. KEY.DELAYED .. ':'
  c.writes, c.pch, c.pmsg = {}, {}, {}
  c.rkey, c.rval, c.rttl = {}, {}, {} -- the records finish() writes (SET ... EX), in order
  c.rdoc = {} -- the documents' keys of the jobs finished (DEL, in one call)
  c.stats, c.groups, c.gorder, c.wakes, c.qlen = {}, {}, {}, {}, {}
  return c
end

-- Queues one write (a command and its arguments) for commit().
local function w(c, ...)
  c.writes[#c.writes + 1] = {...}
end

-- Queues `cmd key item...` for every item of list, in chunks (unpack has a stack limit).
local function w_list(c, cmd, key, list)
  for i = 1, #list, 1000 do
    w(c, cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Queues one PUBLISH for commit() (published before any write).
local function pub(c, channel, msg)
  local n = #c.pch + 1
  c.pch[n], c.pmsg[n] = channel, msg
end

local function stat(c, name, n)
  c.stats[name] = (c.stats[name] or 0) + n
end

-- A wake-up token for model's idle workers (one per model per call).
local function wake(c, model)
  c.wakes[model] = true
end

local function nonempty(s)
  if s == false or s == nil or s == '' then return nil end
  return s
end

-- ---- epochs (docs/protocol.md "Epochs") ----

-- A new data generation: the Redis server's clock in microseconds, hex.
local function new_gen()
  local t = redis.call('TIME')
  return string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
end

-- The data generation and epoch counter (P:epoch), read once per call; created when missing.
local function epochs(c)
  local e = c.ep
  if e then return e end
  local f = redis.call('HMGET', c.P .. ':' .. KEY.EPOCH, 'gen', 'n')
  e = {gen = f[1], n = tonumber(f[2]) or 0, dirty = false}
  if not e.gen then
    e.gen, e.dirty = new_gen(), true
  end
  e.genp = e.gen .. '.'
  c.ep = e
  return e
end

-- A fresh epoch: for a channel created now, or first written in this generation.
local function new_epoch(c)
  local e = epochs(c)
  e.n = e.n + 1
  e.dirty = true
  return e.genp .. e.n
end

-- The epoch a channel's next event carries: its own while it belongs to this generation.
local function channel_epoch(c, ep)
  if ep and string.find(ep, epochs(c).genp, 1, true) == 1 then return ep end
  return new_epoch(c)
end

-- ---- jobs ----

-- HMGET of a job's hash; nil when the job has finished (its key is a string record: WRONGTYPE).
-- An absent job gives a table of false values.
local function job_fields(c, id, ...)
  local r = redis.pcall('HMGET', c.kjob .. id, ...)
  if r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return nil end
    error(r)
  end
  return r
end

-- P:doc:<id>'s value: the header a fetched claim reads (docs/protocol.md "Fetched claims"),
-- then the job document.
local function doc_value(enqueued_ms, epoch, doc)
  return enqueued_ms .. ' ' .. epoch .. '\n' .. doc
end

-- The job document of a live job (its key P:doc:<id> without the header), or nil.
local function job_doc(c, id)
  local v = redis.call('GET', c.kdoc .. id)
  if not v then return nil end
  return string.sub(v, (string.find(v, '\n', 1, true) or 0) + 1)
end

-- A job queued by a version before P:doc keeps its document in its hash: moved to its key now
-- (a rolling upgrade: workers first, docs/protocol.md "Fetched claims"). Returns the document's
-- size, 0 when the hash has none.
local function migrate_doc(c, id)
  local r = redis.call('HMGET', c.kjob .. id, 'doc', 'enqueued_ms', 'epoch')
  if not r[1] then return 0 end
  w(c, 'SET', c.kdoc .. id, doc_value(r[2] or '0', r[3] or '', r[1]))
  w(c, 'HDEL', c.kjob .. id, 'doc')
  return #r[1]
end

-- ---- fast runs (docs/protocol.md "Fast runs") ----
-- An unwatched job outside any group, claimed from its queue, runs "fast": its claim writes
-- nothing to its hash (state stays 'queued', attempts count the runs before this one) and its
-- worker builds the record that its ack stores. It is running because its id is in a worker's
-- in-flight list. A script that changes such a job while it runs (cancel, watch, progress)
-- adopts it first: the hash takes the running form and the id goes into P:attn:<worker>, so
-- the ack takes the slow path, which reads the hash, for it.

-- The worker whose in-flight list holds id, or nil. LPOS per worker for the first few ids of
-- a call, then one index of every list (a watch of many ids).
local function running_on(c, id)
  local idx = c.ron_idx
  if idx then return idx[id] end
  local P = c.P
  local workers = c.ron_workers
  if not workers then
    workers = redis.call('SMEMBERS', P .. ':' .. KEY.WORKERS)
    c.ron_workers, c.ron_n = workers, 0
  end
  c.ron_n = c.ron_n + 1
  if c.ron_n <= 8 then
    for _, wk in ipairs(workers) do
      if redis.call('LPOS', P .. ':' .. KEY.INFLIGHT .. ':' .. wk, id) then return wk end
    end
    return nil
  end
  idx = {}
  for _, wk in ipairs(workers) do
    for _, x in ipairs(redis.call('LRANGE', P .. ':' .. KEY.INFLIGHT .. ':' .. wk, 0, -1)) do
      idx[x] = wk
    end
  end
  c.ron_idx = idx
  return idx[id]
end

-- Brings the fast run of id on worker wk to the running form (queued for commit()): state,
-- worker, the attempt it is; and marks it for its ack. Returns the attempt.
local function adopt(c, id, wk, attempts)
  local attempt = (tonumber(attempts) or 0) + 1
  w(c, 'HSET', c.kjob .. id, 'state', 'running', 'worker', wk, 'attempts', attempt)
  w(c, 'SADD', c.P .. ':' .. KEY.ATTN .. ':' .. wk, id)
  return attempt
end

-- ---- groups: counters and one event per call ----

-- The group's state, read once per call. Counters: total, queued (incl. retrying), running,
-- done, failed, canceled.
local function group_get(c, g)
  local s = c.groups[g]
  if s then return s end
  local f = redis.call('HMGET', c.P .. ':' .. KEY.GROUP .. ':' .. g, 'total', 'queued', 'running',
                       'done', 'failed', 'canceled', 'off', 'epoch', 'cancel')
  s = {exists = f[7] ~= false, total = tonumber(f[1]) or 0, queued = tonumber(f[2]) or 0,
       running = tonumber(f[3]) or 0, done = tonumber(f[4]) or 0, failed = tonumber(f[5]) or 0,
       canceled = tonumber(f[6]) or 0, off = tonumber(f[7]) or 0, epoch = nonempty(f[8]),
       cancel = f[9] == '1', jobs = {}, changed = false, type = 'jobs'}
  c.groups[g] = s
  c.gorder[#c.gorder + 1] = g
  return s
end

-- One job of group g moved from counter `from` to counter `to` (either may be nil), with its
-- entry in the group's event of this call (nil for none).
local function group_job(c, g, from, to, entry)
  local s = group_get(c, g)
  if from and s[from] > 0 then s[from] = s[from] - 1 end
  if to then s[to] = s[to] + 1 end
  if entry then s.jobs[#s.jobs + 1] = entry end
  s.changed = true
end

-- The counter a job state is counted under in its group.
local GROUP_COUNTER = {queued = 'queued', retrying = 'queued', running = 'running', done = 'done',
                       failed = 'failed', canceled = 'canceled'}

local function commit_groups(c)
  local P, ttl = c.P, c.ttl
  for _, g in ipairs(c.gorder) do
    local s = c.groups[g]
    if s.changed then
      local gkey = P .. ':' .. KEY.GROUP .. ':' .. g
      local hkey = P .. ':' .. KEY.GROUP_HISTORY .. ':' .. g
      -- A group (re)created now starts a new history: a stream left over by an earlier life
      -- (its hash expired first) must not hold higher ids than the new offsets.
      if not s.exists then w(c, 'DEL', hkey) end
      local ep = s.epoch
      if not s.exists then ep = new_epoch(c) else ep = channel_epoch(c, ep) end
      s.off = s.off + 1
      local ev = {v = 1, group = g, type = s.type, off = s.off, epoch = ep, ts_ms = c.now,
                  total = s.total, queued = s.queued, running = s.running, done = s.done,
                  failed = s.failed, canceled = s.canceled}
      if #s.jobs > 0 then ev.jobs = s.jobs end
      if s.cancel then ev.cancel = true end
      local packed = cmsgpack.pack(ev)
      pub(c, P .. ':' .. KEY.GROUP_CHANNEL .. ':' .. g, packed)
      w(c, 'HSET', gkey, 'total', s.total, 'queued', s.queued, 'running', s.running, 'done', s.done,
        'failed', s.failed, 'canceled', s.canceled, 'off', s.off, 'epoch', ep, 'updated_ms', c.now,
        'cancel', s.cancel and 1 or 0)
      w(c, 'XADD', hkey, 'MAXLEN', '~', DEFAULT.GROUP_HISTORY_MAX, s.off .. '-0', 'e', packed)
      w(c, 'EXPIRE', gkey, ttl)
      w(c, 'EXPIRE', hkey, ttl)
    end
  end
end

-- The ACL check of what commit() will run: a user may lack a command (`-ltrim`), a key pattern
-- or a channel, and Redis would refuse that call only when it comes, after earlier writes.
-- redis.acl_check_cmd (Redis >= 7) asks first, once per command and kind of key or channel (the
-- part after the prefix up to the next ':'; ACL patterns finer than that, one job id but not
-- another, are not foreseen). Key and channel are an ACL's only arguments here: no values pass.
local function acl_kind(P, name, key)
  local e = string.find(key, ':', #P + 2, true)
  if e then return name .. ' ' .. string.sub(key, 1, e) end
  return name .. ' ' .. key
end

local function acl_check(c)
  local check = redis.acl_check_cmd
  if not check then return end
  local P, seen = c.P, {}
  local function one(name, key, what)
    local k = acl_kind(P, name, key)
    if seen[k] then return end
    seen[k] = true
    if not check(name, key) then
      error({err = 'NOPERM segq: the account ' .. what .. ' (ACL); the script stopped before its ' ..
                   'first write, nothing changed'})
    end
  end
  for i = 1, #c.pch do one('PUBLISH', c.pch[i], "can't publish to the channel " .. c.pch[i]) end
  for _, cmd in ipairs(c.writes) do
    one(cmd[1], cmd[2], "can't run " .. cmd[1] .. ' on ' .. cmd[2])
  end
  -- Every record is c.kjob .. id: one key kind, asked once (a message per job costs a string).
  if #c.rkey > 0 then one('SET', c.rkey[1], "can't run SET on " .. c.rkey[1]) end
  if #c.rdoc > 0 then one('DEL', c.rdoc[1], "can't run DEL on " .. c.rdoc[1]) end
  -- c.late's bulk writes: one (command, key) of each kind they run.
  for _, cmd in ipairs(c.late_acl or {}) do
    one(cmd[1], cmd[2], "can't run " .. cmd[1] .. ' on ' .. cmd[2])
  end
end

-- Runs what the call collected: group events, counters, the epoch counter, then (once the ACL
-- check passed) every PUBLISH (the fallible calls), then every write in order.
local function commit(c)
  local P = c.P
  commit_groups(c)
  for name, n in pairs(c.stats) do
    if n ~= 0 then w(c, 'HINCRBY', P .. ':' .. KEY.STATS, name, n) end
  end
  for model in pairs(c.wakes) do
    local wk = P .. ':' .. KEY.WAKE .. ':' .. model
    w(c, 'RPUSH', wk, '1')
    w(c, 'LTRIM', wk, -DEFAULT.WAKE_MAX, -1)
    if c.wake_ttl then w(c, 'EXPIRE', wk, c.wake_ttl) end -- set by an enqueue before any worker
  end
  if c.dead_added then
    w(c, 'ZREMRANGEBYRANK', P .. ':' .. KEY.DEAD, 0, -DEFAULT.DEAD_MAX - 1)
  end
  local e = c.ep
  if e and e.dirty then w(c, 'HSET', P .. ':' .. KEY.EPOCH, 'gen', e.gen, 'n', e.n) end
  acl_check(c)
  for i = 1, #c.pch do redis.call('PUBLISH', c.pch[i], c.pmsg[i]) end
  for _, cmd in ipairs(c.writes) do redis.call(unpack(cmd)) end
  -- A script's own bulk writes (one per job, in flat arrays: see claim.lua).
  if c.late then c.late() end
  -- Records last: a record replaces its job's hash, which no write above touches after it.
  local rkey, rval, rttl = c.rkey, c.rval, c.rttl
  for i = 1, #rkey do redis.call('SET', rkey[i], rval[i], 'EX', rttl[i]) end
  local rdoc = c.rdoc
  for i = 1, #rdoc, 1000 do redis.call('DEL', unpack(rdoc, i, math.min(i + 999, #rdoc))) end
end

-- Queues the write of a new job's hash (enqueue, a dead letter queued again). Lean: a field
-- that has its default is left out (attempts 0, no group, the default tenant, unwatched, updated
-- when enqueued); every reader takes a missing field as that default. Fewer fields are fewer
-- allocations to make here and to free when the record replaces the hash (~10 % of an ack).
local function new_job(c, id, doc, off, ep, model, tenant, group, watch)
  -- The document in its own key, behind what a fetched claim needs (docs/protocol.md "Fetched
  -- claims"): the worker reads it with MGET, no script moves it, and the hash stays small
  -- (listpack: one free when the record replaces it).
  local now = string.format('%d', c.now)
  c.writes[#c.writes + 1] = {'SET', c.kdoc .. id, doc_value(now, ep, doc)}
  local t = {'HSET', c.kjob .. id, 'state', 'queued', 'off', off, 'epoch', ep,
             'model', model, 'enqueued_ms', now, 'size', #doc}
  if tenant ~= DEFAULT.TENANT then t[#t + 1], t[#t + 2] = 'tenant', tenant end
  if group then t[#t + 1], t[#t + 2] = 'group', group end
  if watch == '1' then t[#t + 1], t[#t + 2] = 'watch', '1' end
  c.writes[#c.writes + 1] = t
end

-- Pushes id onto its tenant queue of model (front if `front`), keeping the ring invariant (a
-- tenant is in the ring iff its queue is non-empty), and wakes the model's workers. Unless
-- `fetched` (a fresh job, unwatched, in no group, its document at most FETCHED_DOC_MAX bytes),
-- id joins P:slow: its claim reads the job (docs/protocol.md "Fetched claims").
local function queue_push(c, model, tenant, id, front, fetched)
  if not fetched then w(c, 'SADD', c.P .. ':' .. KEY.SLOW, id) end
  local q = c.kq .. model .. ':' .. tenant
  local n = c.qlen[q]
  if n == nil then n = redis.call('LLEN', q) end
  if n == 0 then w(c, 'RPUSH', c.kring .. model, tenant) end
  c.qlen[q] = n + 1
  if front then w(c, 'LPUSH', q, id) else w(c, 'RPUSH', q, id) end
  wake(c, model)
end

-- ---- msgpack by hand, for the one event written per job in bulk ----
-- A table and cmsgpack.pack cost about twice what concatenating the encoded pieces does (2.2
-- vs 1.0 us per event measured inside Redis), and the terminal event is written for every job.
-- Every string Lua makes is allocated and hashed: the pieces that stay the same from job to job
-- are made once per call (c.pk), and a job's record is one concatenation.

local char, spack = string.char, struct.pack

-- The header of a msgpack str of n bytes.
local function mp_hdr(n)
  if n < 32 then return char(0xa0 + n) end
  if n < 256 then return '\217' .. char(n) end
  return '\218' .. spack('>I2', n)
end

local function mp_str(s)
  return mp_hdr(#s) .. s
end

-- x: an integer >= 0 (offsets, attempts, milliseconds).
local function mp_uint(x)
  if x < 128 then return char(x) end
  if x < 256 then return '\204' .. char(x) end
  if x < 65536 then return '\205' .. spack('>I2', x) end
  if x < 4294967296 then return '\206' .. spack('>I4', x) end
  return '\207' .. spack('>I8', x)
end

-- The constant pieces of a terminal event of this call: {head, middle, tail} around the id, the
-- offset and epoch, and the attempt. Cached per (state, worker) when there is no group and no
-- error code (a plain `done`: nearly every job), else made for the job.
local function terminal_pieces(c, state, group, worker, code)
  local cache
  if not group and not code then
    local pk = c.pk
    if not pk then
      pk = {}
      c.pk = pk
    end
    cache = pk[state]
    if not cache then
      cache = {}
      pk[state] = cache
    end
    local p = cache[worker or '']
    if p then return p end
  end
  local n, extra = 8, ''
  if group then n, extra = n + 1, extra .. '\165group' .. mp_str(group) end
  if worker then n, extra = n + 1, extra .. '\166worker' .. mp_str(worker) end
  if code then n, extra = n + 1, extra .. '\165error' .. mp_str(code) end
  local st = mp_str(state)
  local p = {char(0x80 + n) .. '\161v\1\162id', '\164type' .. st .. '\165state' .. st .. '\163off',
             '\165ts_ms' .. mp_uint(c.now) .. '\167attempt', extra}
  if cache then cache[worker or ''] = p end
  return p
end

-- The terminal event {v, id, type, state, off, epoch, ts_ms, attempt[, group][, worker][, error]}
-- (type == state), as cmsgpack.pack of that table would encode it (key order aside), followed by
-- `after` (the rest of the record, or '').
local function pack_terminal(c, id, state, off, epoch, attempt, group, worker, code, after)
  local p = terminal_pieces(c, state, group, worker, code)
  return p[1] .. mp_hdr(#id) .. id .. p[2] .. mp_uint(off) .. '\165epoch' .. mp_hdr(#epoch) ..
         epoch .. p[3] .. mp_uint(attempt) .. p[4] .. after
end

-- The one terminal write (docs/protocol.md "One terminal write"). f: what is known of the job:
-- off (its last event's offset), epoch, attempts, group, model, tenant, watch ('1': publish on
-- the job channel; a job's channel publishes only while it is watched). how: state ('done', 'failed'
-- or 'canceled'), code (error code, nil for done), result (the result document; nil: an error
-- result is made from code and message), worker, from (the group counter the job leaves, nil
-- when it was never counted), dead (true: a dead letter; doc = the job document it keeps).
-- Writes the record (terminal event .. result [.. doc]), publishes the terminal event, counts it.
-- Keeps neither f nor how, so callers may reuse them from job to job.
local function finish(c, id, f, how)
  local state = how.state
  local attempt = tonumber(f.attempts) or 0
  local group = nonempty(f.group)
  local off, epoch = (tonumber(f.off) or 0) + 1, channel_epoch(c, nonempty(f.epoch))
  local result = how.result
  if not result then
    result = cmsgpack.pack({v = 1, id = id, status = 'error',
                            error = {code = how.code, message = how.message},
                            model = nonempty(f.model) or '', width = 0, height = 0,
                            attempt = attempt, worker = how.worker})
  end
  local watched = f.watch == '1'
  local packed, record
  if how.dead then
    -- What `dead requeue` needs to queue it again: the job document is the record's last
    -- doc_bytes (Lua's cmsgpack cannot skip the result's bin fields to find it).
    packed = cmsgpack.pack({v = 1, id = id, type = state, state = state, off = off, epoch = epoch,
                            ts_ms = c.now, attempt = attempt, group = group, worker = how.worker,
                            error = how.code, dead = true, model = nonempty(f.model),
                            tenant = nonempty(f.tenant), doc_bytes = how.doc and #how.doc or nil})
    record = packed .. result .. (how.doc or '')
  elseif watched then
    packed = pack_terminal(c, id, state, off, epoch, attempt, group, how.worker, how.code, '')
    record = packed .. result
  else
    -- Unwatched: the event is never published on its own, only written in front of the result.
    record = pack_terminal(c, id, state, off, epoch, attempt, group, how.worker, how.code, result)
  end
  -- The TTL as a string, made once per call (Lua's number-to-string is a "%.14g" printf).
  local ttl = c.ttl_s
  if not ttl then
    ttl = string.format('%d', c.ttl)
    c.ttl_s = ttl
  end
  if how.dead then
    ttl = string.format('%d', c.dead_ttl)
    w(c, 'ZADD', c.P .. ':' .. KEY.DEAD, c.now, id)
    c.dead_added = true
    stat(c, 'dead', 1)
  end
  local n = #c.rkey + 1
  c.rkey[n], c.rval[n], c.rttl[n] = c.kjob .. id, record, ttl
  c.rdoc[#c.rdoc + 1] = c.kdoc .. id
  if watched then pub(c, c.kev .. id, packed) end
  stat(c, state, 1)
  if group then
    group_job(c, group, how.from, state, {id = id, type = state, state = state, attempt = attempt,
                                          worker = how.worker, error = how.code})
  end
end

-- A live job's next non-terminal event: publishes it if the job is watched (f.watch), writes
-- nothing; returns (packed event, off, epoch) for the caller to store. f as for finish; extra:
-- fields to add.
local function job_event(c, id, f, typ, state, extra)
  local off = (tonumber(f.off) or 0) + 1
  local ep = channel_epoch(c, nonempty(f.epoch))
  local ev = {v = 1, id = id, type = typ, state = state, off = off, epoch = ep, ts_ms = c.now,
              attempt = tonumber(f.attempts) or 0, group = nonempty(f.group)}
  if extra then
    for k, v in pairs(extra) do ev[k] = v end
  end
  local packed = cmsgpack.pack(ev)
  if f.watch == '1' then pub(c, c.kev .. id, packed) end
  return packed, off, ep
end

-- The fencing check of claim, ack, progress and release: nil when token holds worker's lease.
local function lease_refused(P, worker, token)
  if redis.call('GET', P .. ':' .. KEY.LEASE .. ':' .. worker) ~= token then
    return redis.error_reply('LEASE lease of worker ' .. worker .. ' is lost')
  end
  return nil
end

-- ARGV[i] as a number (nil if absent or not a number).
local function num(i)
  return tonumber(ARGV[i])
end

