-- enqueue: queue one job (atomic). Used by the C tools (sq_queue_enqueue_sync) and the Python client.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix        key prefix, e.g. "segq"
-- ARGV[2] id            job id (id alphabet)
-- ARGV[3] model         model name
-- ARGV[4] tenant        tenant ("" means "default")
-- ARGV[5] group         group id, "" for none
-- ARGV[6] priority      integer; > 0 puts the job at the front of its tenant queue
-- ARGV[7] payload       the job document (msgpack), stored at P:job:<id>
-- ARGV[8] now_ms        unix epoch milliseconds
-- ARGV[9] result_ttl_s  TTL of result/status/events/reply/group keys
-- Returns 1 queued; 0 already pending (nothing done); 2 already has a result (nothing done);
--         3 rejected at once with an `unknown_model` error result (workers registered in
--           P:models:served and none serves this model): the result, status `failed`, the
--           event and the reply token are written exactly as for a failed job.
local P, id, model, tenant, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local priority = tonumber(ARGV[6]) or 0
local payload = ARGV[7]
local now = tonumber(ARGV[8])
local ttl = tonumber(ARGV[9])
if tenant == '' then tenant = 'default' end

local skey = P .. ':status:' .. id
local ctx = {P = P, now = now, ttl = ttl}
-- emit's group argument: nil for none.
local egroup = nil
if group ~= '' then egroup = group end

-- Idempotent on id: an existing result or a pending job means nothing is done.
if redis.call('EXISTS', P .. ':result:' .. id) == 1 then return 2 end
local state = redis.call('HGET', skey, 'state')
if (state and state ~= 'done' and state ~= 'failed') or
   redis.call('EXISTS', P .. ':job:' .. id) == 1 then
  return 0
end
-- A finished job whose result is gone is queued afresh: its old status and events go.
redis.call('DEL', skey, P .. ':events:' .. id, P .. ':reply:' .. id)

redis.call('HSET', skey, 'state', 'queued', 'attempts', 0, 'model', model, 'tenant', tenant,
           'group', group, 'enqueued_ms', now, 'updated_ms', now)
redis.call('SADD', P .. ':models', model)
redis.call('HINCRBY', P .. ':stats', 'enqueued', 1)
if group ~= '' then
  local gkey = P .. ':group:' .. group
  redis.call('HINCRBY', gkey, 'total', 1)
  redis.call('HINCRBY', gkey, 'queued', 1)
end

-- Fail fast when workers have registered their models and none serves this one.
local served = P .. ':models:served'
if redis.call('SCARD', served) > 0 and redis.call('SISMEMBER', served, model) == 0 then
  local msg = 'no worker serves model ' .. model
  redis.call('SET', P .. ':result:' .. id, cmsgpack.pack({v = 1, id = id, status = 'error',
             error = {code = 'unknown_model', message = msg}, model = model,
             width = 0, height = 0, attempt = 0}), 'EX', ttl)
  redis.call('HSET', skey, 'state', 'failed', 'error', 'unknown_model', 'updated_ms', now)
  redis.call('HINCRBY', P .. ':stats', 'failed', 1)
  if group ~= '' then
    local gkey = P .. ':group:' .. group
    redis.call('HINCRBY', gkey, 'queued', -1)
    redis.call('HINCRBY', gkey, 'failed', 1)
  end
  emit(ctx, id, egroup, {state = 'failed', attempt = 0, error = 'unknown_model'})
  redis.call('EXPIRE', skey, ttl)
  redis.call('EXPIRE', P .. ':events:' .. id, ttl)
  local rkey = P .. ':reply:' .. id
  redis.call('RPUSH', rkey, 'failed')
  redis.call('EXPIRE', rkey, ttl)
  return 3
end

redis.call('SET', P .. ':job:' .. id, payload)
emit(ctx, id, egroup, {state = 'queued', attempt = 0})

-- Invariant: a tenant is in the model's ring iff its queue is non-empty.
local q = P .. ':q:' .. model .. ':' .. tenant
if redis.call('LLEN', q) == 0 then
  redis.call('RPUSH', P .. ':ring:' .. model, tenant)
end
if priority > 0 then
  redis.call('LPUSH', q, id)
else
  redis.call('RPUSH', q, id)
end
local wake = P .. ':wake:' .. model
redis.call('RPUSH', wake, '1')
redis.call('LTRIM', wake, -64, -1)
return 1
