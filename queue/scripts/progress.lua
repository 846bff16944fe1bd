-- progress: report work done inside running jobs (tiles of a tiled model), fenced. The worker
-- sends one call per batch at most every --progress-interval-ms.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of the group keys touched
-- ARGV[6..] per job: id, steps_done, steps_total
-- Returns the number of jobs updated (jobs not running on this worker are skipped), or an error
-- reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local c = context(P, ARGV[4], ARGV[5])

local refused = lease_refused(P, worker, token)
if refused then return refused end

-- This worker's in-flight ids, read when a fast run first reports.
local held = nil
local function mine(id)
  if not held then
    held = {}
    for _, x in ipairs(redis.call('LRANGE', P .. ':' .. KEY.INFLIGHT .. ':' .. worker, 0, -1)) do
      held[x] = true
    end
  end
  return held[id]
end

local count = 0
for i = 6, #ARGV - 2, 3 do
  local id, done, total = ARGV[i], tonumber(ARGV[i + 1]) or 0, tonumber(ARGV[i + 2]) or 0
  local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'state', 'worker', 'watch')
  local attempts = r and r[1]
  -- A fast run of this worker (docs/protocol.md "Fast runs") is adopted by its first progress.
  if r and r[5] == 'queued' and mine(id) then
    attempts, r[5], r[6] = adopt(c, id, worker, r[1]), 'running', worker
  end
  if r and r[5] == 'running' and r[6] == worker then
    local f = {attempts = attempts, off = r[2], epoch = r[3], group = r[4], watch = r[7]}
    local _, off, ep = job_event(c, id, f, 'progress', 'running',
                                 {worker = worker, steps_done = done, steps_total = total})
    w(c, 'HSET', c.kjob .. id, 'off', off, 'epoch', ep, 'steps_done', done, 'steps_total', total,
      'updated_ms', c.now)
    local group = nonempty(r[4])
    if group then
      group_job(c, group, nil, nil,
                {id = id, type = 'progress', state = 'running', attempt = tonumber(attempts) or 0,
                 worker = worker, steps_done = done, steps_total = total})
    end
    count = count + 1
  end
end
commit(c)
return count
