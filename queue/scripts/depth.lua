-- depth: how much work waits in Redis for each model, read-only, for the workers' metrics
-- (segq_queue_depth, which autoscalers use: every tenant's queue counts, not one list). A
-- model's tenants with queued jobs are exactly its ring (the enqueue/claim invariant), so the
-- model's depth is the sum of those queues' lengths; P:delayed:<model> holds retries waiting for
-- their time. Cost: one LLEN per tenant with queued work.
-- KEYS: none (numkeys 0); every key is derived from the prefix.
-- ARGV[1] prefix
-- ARGV[2..] model       the models to report, in the order of the reply
-- Returns [dead, queued_1, delayed_1, queued_2, delayed_2, ...], models in ARGV order; dead is
-- the size of P:dead (a list or a sorted set, depending on the layout version).
local P = ARGV[1]
local out = {}
local dk = P .. ':dead'
local dtype = redis.call('TYPE', dk).ok
if dtype == 'zset' then
  out[1] = redis.call('ZCARD', dk)
elseif dtype == 'list' then
  out[1] = redis.call('LLEN', dk)
else
  out[1] = 0
end
for i = 2, #ARGV do
  local m = ARGV[i]
  local n = 0
  for _, tenant in ipairs(redis.call('LRANGE', P .. ':ring:' .. m, 0, -1)) do
    n = n + redis.call('LLEN', P .. ':q:' .. m .. ':' .. tenant)
  end
  out[#out + 1] = n
  local dl = P .. ':delayed:' .. m
  out[#out + 1] = redis.call('TYPE', dl).ok == 'zset' and redis.call('ZCARD', dl) or 0
end
return out
