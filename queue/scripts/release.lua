-- release: hand jobs back unrun (a device failure, a reconciliation after reconnect, a claim
-- whose reply was lost), fenced: each id of this worker's in-flight list goes back to the front
-- of its queue with the attempt refunded and a `requeued` event.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token; must equal P:worker:<worker>
-- ARGV[4] now_ms        unix epoch milliseconds
-- ARGV[5] result_ttl_s  TTL of the group keys touched
-- ARGV[6..] ids         the jobs handed back ("*" alone: every job of the in-flight list; "!"
--                       then ids: every job of the list except those, the ones the worker holds:
--                       the reconciliation after a reconnect)
-- Returns the number of jobs released (ids not in the in-flight list are skipped), or an error
-- reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local c = context(P, ARGV[4], ARGV[5])

local refused = lease_refused(P, worker, token)
if refused then return refused end

local kjob = c.kjob
local inflight = P .. ':' .. KEY.INFLIGHT .. ':' .. worker
local list = redis.call('LRANGE', inflight, 0, -1)
local held = {}
for _, id in ipairs(list) do held[id] = true end
local ids = {}
if ARGV[6] == '*' and #ARGV == 6 then
  ids = list
elseif ARGV[6] == '!' then
  local keep = {}
  for i = 7, #ARGV do keep[ARGV[i]] = true end
  for _, id in ipairs(list) do
    if not keep[id] then ids[#ids + 1] = id end
  end
else
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
end

local count, released = 0, {}
-- Backwards, so the pushes to the front keep the given order.
for i = #ids, 1, -1 do
  local id = ids[i]
  if held[id] then
    held[id] = nil
    w(c, 'LREM', inflight, 1, id)
    local r = job_fields(c, id, 'attempts', 'off', 'epoch', 'group', 'model', 'tenant', 'watch',
                         'state')
    local model = r and nonempty(r[5])
    if model then
      local attempt = tonumber(r[1]) or 0
      -- Refunded; a fast run's claim never counted it (docs/protocol.md "Fast runs").
      if attempt > 0 and r[8] ~= 'queued' then attempt = attempt - 1 end
      released[#released + 1] = id
      local f = {attempts = attempt, off = r[2], epoch = r[3], group = r[4], watch = r[7]}
      local _, off, ep = job_event(c, id, f, 'requeued', 'queued')
      w(c, 'HSET', kjob .. id, 'state', 'queued', 'attempts', attempt, 'off', off, 'epoch', ep,
        'updated_ms', c.now)
      w(c, 'HDEL', kjob .. id, 'worker')
      queue_push(c, model, nonempty(r[6]) or DEFAULT.TENANT, id, true)
      stat(c, 'requeued', 1)
      local group = nonempty(r[4])
      if group then
        group_job(c, group, 'running', 'queued',
                  {id = id, type = 'requeued', state = 'queued', attempt = attempt})
      end
      count = count + 1
    end
  end
end
-- Adopted fast runs handed back leave the ack's set.
if #released > 0 then w_list(c, 'SREM', P .. ':' .. KEY.ATTN .. ':' .. worker, released) end
commit(c)
return count
