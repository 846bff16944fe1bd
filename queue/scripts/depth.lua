-- depth: how much work waits in Redis for each model, read-only, for the workers' metrics
-- (segq_queue_depth, which autoscalers use: every tenant's queue counts, not one list). A
-- model's tenants with queued jobs are exactly its ring (the enqueue/claim invariant), so the
-- model's depth is the sum of those queues' lengths (a job canceled while queued leaves a
-- tombstone id there until the claim skips it: counted until then); P:delayed:<model> holds
-- retries waiting for their time. Cost: one LLEN per tenant with queued work.
-- KEYS: none (numkeys 0); every key is derived from the prefix (names from schema.def).
-- ARGV[1] prefix
-- ARGV[2..] model       the models to report, in the order of the reply
-- Returns [dead, queued_1, delayed_1, queued_2, delayed_2, ...], models in ARGV order; dead is
-- the number of dead letters kept (P:dead).
local P = ARGV[1]
local out = {redis.call('ZCARD', P .. ':' .. KEY.DEAD)}
for i = 2, #ARGV do
  local m = ARGV[i]
  local n = 0
  for _, tenant in ipairs(redis.call('LRANGE', P .. ':' .. KEY.RING .. ':' .. m, 0, -1)) do
    n = n + redis.call('LLEN', P .. ':' .. KEY.QUEUE .. ':' .. m .. ':' .. tenant)
  end
  out[#out + 1] = n
  out[#out + 1] = redis.call('ZCARD', P .. ':' .. KEY.DELAYED .. ':' .. m)
end
return out
