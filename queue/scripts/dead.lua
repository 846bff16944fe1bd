-- dead: the dead letters (docs/protocol.md "Job controls"): list, requeue, purge. A dead
-- letter's record (P:job:<id>) is its terminal event, its error result and its job document.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] now_ms        unix epoch milliseconds
-- ARGV[3] result_ttl_s  TTL of the group keys touched
-- ARGV[4] op            "list", "requeue" or "purge"
-- ARGV[5..]             list: start, count (newest first); requeue: ids ("*" alone: all);
--                       purge: ids ("*" alone: all)
-- Returns: list: [id, dead_ms, ...] of dead letters whose record still exists; requeue: the
-- number of jobs queued again (each as a live job with attempts and deaths reset, its channel
-- continuing with a `requeued` event); purge: the number of dead letters removed (and their
-- records deleted).
local P, op = ARGV[1], ARGV[4]
local c = context(P, ARGV[2], ARGV[3])
local dead = P .. ':' .. KEY.DEAD

local function targets()
  if ARGV[5] == '*' and #ARGV == 5 then return redis.call('ZRANGE', dead, 0, -1) end
  local ids = {}
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
  return ids
end

if op == 'list' then
  local start, count = num(5) or 0, num(6) or 100
  if count < 1 then return {} end
  local r = redis.call('ZREVRANGE', dead, start, start + count - 1, 'WITHSCORES')
  local out = {}
  for i = 1, #r - 1, 2 do
    if redis.call('TYPE', c.kjob .. r[i]).ok == 'string' then
      out[#out + 1] = r[i]
      out[#out + 1] = tonumber(r[i + 1])
    end
  end
  return out
elseif op == 'requeue' then
  local count = 0
  for _, id in ipairs(targets()) do
    local key = c.kjob .. id
    if redis.call('ZSCORE', dead, id) and redis.call('TYPE', key).ok == 'string' then
      local rec = redis.call('GET', key)
      local _, ev = cmsgpack.unpack_one(rec)
      -- A dead letter's terminal event names its model and tenant and the size of the job
      -- document at the end of the record.
      local model = type(ev) == 'table' and ev.dead and nonempty(ev.model)
      local doc_bytes = model and tonumber(ev.doc_bytes) or 0
      if doc_bytes > 0 and doc_bytes < #rec then
        local doc = string.sub(rec, #rec - doc_bytes + 1)
        local tenant = nonempty(ev.tenant) or DEFAULT.TENANT
        local group = nonempty(ev.group)
        local f = {attempts = 0, off = ev.off, epoch = ev.epoch, group = group}
        -- Watched again only when a reader follows it (recover marks it).
        local _, off, ep = job_event(c, id, f, 'requeued', 'queued')
        w(c, 'DEL', key)
        new_job(c, id, doc, off, ep, model, tenant, group, '0')
        queue_push(c, model, tenant, id, false)
        w(c, 'ZREM', dead, id)
        stat(c, 'requeued', 1)
        if group then
          local s = group_get(c, group)
          if not s.exists then s.total = s.total + 1 end
          group_job(c, group, 'failed', 'queued', {id = id, type = 'requeued', state = 'queued',
                                                   attempt = 0})
        end
        count = count + 1
      end
    end
  end
  commit(c)
  return count
elseif op == 'purge' then
  local count = 0
  for _, id in ipairs(targets()) do
    if redis.call('ZSCORE', dead, id) then
      if redis.call('TYPE', c.kjob .. id).ok == 'string' then w(c, 'DEL', c.kjob .. id) end
      w(c, 'ZREM', dead, id)
      count = count + 1
    end
  end
  commit(c)
  return count
end
return redis.error_reply('ERR dead: op must be list, requeue or purge, got ' .. tostring(op))
