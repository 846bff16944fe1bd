-- heartbeat: renew (or re-acquire) the worker's lease, register the models it serves, and
-- validate the data generation of the event epochs (docs/protocol.md "Epochs").
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token
-- ARGV[4] lease_ttl_ms  lease TTL in milliseconds
-- ARGV[5] now_ms        unix epoch milliseconds
-- ARGV[6..] models      the models this worker serves (added to P:models:served, which enqueue
--                       uses to reject jobs for models nobody serves)
-- Returns 1 renewed; 2 the lease had expired or was absent and is now re-acquired (the worker
-- may have been swept); 0 another token holds the lease (nothing changed).
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms = num(4)
local lease = P .. ':' .. KEY.LEASE .. ':' .. worker

local cur = redis.call('GET', lease)
if cur and cur ~= token then return CODE.HEARTBEAT_OTHER end

-- The dataset may have been rolled back or replaced when the Redis process serving it is not
-- the one that last validated it (a restart, a failover): start a new data generation then.
-- INFO may be denied by an ACL: then only a lost P:epoch starts one.
local info = redis.pcall('INFO', 'server')
local run = type(info) == 'string' and string.match(info, 'run_id:(%w+)') or nil
local ekey = P .. ':' .. KEY.EPOCH
local e = redis.call('HMGET', ekey, 'gen', 'run')
local writes = {}
if run and e[2] ~= run then
  if e[1] and e[2] then
    writes[#writes + 1] = {'HSET', ekey, 'gen', new_gen(), 'run', run}
  else
    writes[#writes + 1] = {'HSET', ekey, 'run', run}
    if not e[1] then writes[#writes + 1] = {'HSET', ekey, 'gen', new_gen()} end
  end
elseif not e[1] then
  writes[#writes + 1] = {'HSET', ekey, 'gen', new_gen()}
end

-- A model served for the first time may have jobs that were queued before any worker had
-- registered (enqueue gave them and the model's keys a TTL): they are kept from now on.
local served = P .. ':' .. KEY.SERVED
if #ARGV >= 6 then
  local known = redis.call('SMISMEMBER', served, unpack(ARGV, 6))
  for i = 6, #ARGV do
    if known[i - 5] == 0 then
      local model = ARGV[i]
      local ring = P .. ':' .. KEY.RING .. ':' .. model
      writes[#writes + 1] = {'PERSIST', ring}
      writes[#writes + 1] = {'PERSIST', P .. ':' .. KEY.WAKE .. ':' .. model}
      for _, t in ipairs(redis.call('LRANGE', ring, 0, -1)) do
        local q = P .. ':' .. KEY.QUEUE .. ':' .. model .. ':' .. t
        writes[#writes + 1] = {'PERSIST', q}
        for _, id in ipairs(redis.call('LRANGE', q, 0, -1)) do
          local job = P .. ':' .. KEY.JOB .. ':' .. id
          -- Only live jobs: a finished record keeps its TTL.
          if redis.call('TYPE', job).ok == 'hash' then
            writes[#writes + 1] = {'PERSIST', job}
            writes[#writes + 1] = {'PERSIST', P .. ':' .. KEY.DOC .. ':' .. id}
          end
        end
      end
    end
  end
end

redis.call('SET', lease, token, 'PX', ttl_ms)
for _, cmd in ipairs(writes) do redis.call(unpack(cmd)) end
if #ARGV >= 6 then
  redis.call('SADD', served, unpack(ARGV, 6))
end
if cur then return CODE.HEARTBEAT_RENEWED end
return CODE.HEARTBEAT_ACQUIRED
