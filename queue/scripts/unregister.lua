-- unregister: clean shutdown; drop the worker's lease (and its registration if nothing is in
-- flight, so the sweeper has nothing to do for it).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker   worker id
-- ARGV[3] token    fencing token; only the holder's lease is removed
-- Returns 1 removed; 0 the lease was absent or held by another token (nothing changed).
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local lease = P .. ':' .. KEY.LEASE .. ':' .. worker
if redis.call('GET', lease) ~= token then return 0 end
local empty = redis.call('LLEN', P .. ':' .. KEY.INFLIGHT .. ':' .. worker) == 0
redis.call('DEL', lease)
if empty then
  redis.call('DEL', P .. ':' .. KEY.ATTN .. ':' .. worker)
  redis.call('SREM', P .. ':' .. KEY.WORKERS, worker)
end
return 1
