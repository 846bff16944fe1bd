-- watch: mark jobs watched (their channel publishes every event from now on) and say where
-- each stands, for clients that wait on many jobs (Client.wait_many); one reader of one job
-- uses recover, which marks it too.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2..] ids
-- Returns one code per id: 1 live (now watched), 2 finished (its record holds the result),
-- 0 unknown (never enqueued, expired, or lost).
local P = ARGV[1]
local c = context(P, 0, 0)
local kjob = c.kjob
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = kjob .. id
  local t = redis.call('TYPE', key).ok
  if t == 'hash' then
    local r = redis.call('HMGET', key, 'watch', 'state', 'attempts')
    if r[1] ~= '1' then
      w(c, 'HSET', key, 'watch', 1)
      -- A fast run publishes nothing unless its ack knows (docs/protocol.md "Fast runs").
      local wk = r[2] == 'queued' and running_on(c, id)
      if wk then
        adopt(c, id, wk, r[3])
      elseif r[2] == 'queued' then
        -- Its claim must read it, to publish `started` (docs/protocol.md "Fetched claims").
        w(c, 'SADD', P .. ':' .. KEY.SLOW, id)
      end
    end
    out[#out + 1] = 1
  elseif t == 'string' then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
commit(c)
return out
