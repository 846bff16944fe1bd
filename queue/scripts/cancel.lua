-- cancel: cancel jobs or groups (docs/protocol.md "Job controls").
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] now_ms        unix epoch milliseconds
-- ARGV[3] result_ttl_s  TTL of the records written and of the group keys touched
-- ARGV[4] kind          "job" or "group"
-- ARGV[5..] ids         job ids or group ids
-- A queued or retrying job is finished now as `canceled` (its queue entry is skipped by the
-- claim); a running one gets cancel = 1 and a `canceling` event (its ack writes `canceled`); a
-- group gets cancel = 1 and a `canceling` group event (its queued jobs are finished as canceled
-- when the claim reaches them, running ones at their ack, later submits are rejected).
-- Returns one code per id (CODE.CANCEL_*): 1 canceled now (a group: marked), 2 cancel pending
-- (the job is running), 0 nothing to cancel (finished, unknown, or a group already canceled).
local P, kind = ARGV[1], ARGV[4]
local c = context(P, ARGV[2], ARGV[3])
local out = {}
if kind == 'group' then
  for i = 5, #ARGV do
    local s = group_get(c, ARGV[i])
    if not s.exists or s.cancel then
      out[#out + 1] = CODE.CANCEL_NONE
    else
      s.cancel, s.type, s.changed = true, 'canceling', true
      out[#out + 1] = CODE.CANCEL_DONE
    end
  end
elseif kind == 'job' then
  local done = {}
  for i = 5, #ARGV do
    local id = ARGV[i]
    local r = not done[id] and
              job_fields(c, id, 'state', 'attempts', 'off', 'epoch', 'group', 'model', 'cancel',
                         'watch')
    done[id] = true
    local state = r and nonempty(r[1])
    local f = r and {attempts = r[2], off = r[3], epoch = r[4], group = r[5], model = r[6],
                     watch = r[8]}
    -- A fast run (docs/protocol.md "Fast runs") is queued by its hash, running by its worker's
    -- in-flight list: adopted, it is canceled at its ack like any running job.
    local wk = state == 'queued' and running_on(c, id)
    if wk then
      state = 'running'
      f.attempts = adopt(c, id, wk, r[2])
    end
    if state == 'queued' or state == 'retrying' then
      if state == 'retrying' then w(c, 'ZREM', c.kdelayed .. (nonempty(r[6]) or ''), id) end
      finish(c, id, f, {state = 'canceled', code = ERR.canceled, from = 'queued',
                        message = 'canceled before it ran'})
      out[#out + 1] = CODE.CANCEL_DONE
    elseif state == 'running' then
      if r[7] ~= '1' then
        local _, off, ep = job_event(c, id, f, 'canceling', 'running')
        w(c, 'HSET', c.kjob .. id, 'cancel', 1, 'off', off, 'epoch', ep, 'updated_ms', c.now)
        local group = nonempty(r[5])
        if group then
          group_job(c, group, nil, nil, {id = id, type = 'canceling', state = 'running',
                                         attempt = tonumber(f.attempts) or 0})
        end
      end
      out[#out + 1] = CODE.CANCEL_PENDING
    else
      out[#out + 1] = CODE.CANCEL_NONE
    end
  end
else
  return redis.error_reply('ERR cancel: kind must be "job" or "group", got ' .. tostring(kind))
end
commit(c)
return out
