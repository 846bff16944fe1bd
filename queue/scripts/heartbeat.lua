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

redis.call('SET', lease, token, 'PX', ttl_ms)
for _, cmd in ipairs(writes) do redis.call(unpack(cmd)) end
if #ARGV >= 6 then
  redis.call('SADD', P .. ':' .. KEY.SERVED, unpack(ARGV, 6))
end
if cur then return CODE.HEARTBEAT_RENEWED end
return CODE.HEARTBEAT_ACQUIRED
