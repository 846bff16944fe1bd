-- heartbeat: renew (or re-acquire) the worker's lease and register the models it serves.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         fencing token
-- ARGV[4] lease_ttl_ms  lease TTL in milliseconds
-- ARGV[5..] models      the models this worker serves (added to P:models:served, which enqueue
--                       uses to reject jobs for models nobody serves)
-- Returns 1 renewed; 2 the lease had expired or was absent and is now re-acquired (the worker
-- may have been swept); 0 another token holds the lease (nothing changed).
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms = tonumber(ARGV[4])
local lease = P .. ':worker:' .. worker

local cur = redis.call('GET', lease)
if cur and cur ~= token then return 0 end
redis.call('SET', lease, token, 'PX', ttl_ms)
if #ARGV >= 5 then
  redis.call('SADD', P .. ':models:served', unpack(ARGV, 5))
end
if cur then return 1 end
return 2
