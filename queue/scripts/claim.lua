-- claim: move up to N jobs from the worker's model queues into its in-flight list (atomic).
-- Tenants of a model are served round-robin (P:ring:<model> is rotated once per job taken), and
-- the worker's models are taken in turn, one job each per pass.
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] worker        worker id
-- ARGV[3] token         the worker's fencing token; must equal P:worker:<worker>
-- ARGV[4] n             maximum number of jobs to claim
-- ARGV[5] now_ms        unix epoch milliseconds
-- ARGV[6] result_ttl_s  TTL for the keys of jobs dead-lettered here
-- ARGV[7..] models      the models the worker serves
-- Returns a flat array [model, id, payload, attempt, enqueued_ms, ...] (5 entries per job), or
-- an error reply starting with "LEASE" if the lease is absent or holds another token.
local P, worker, token = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local ctx = {P = P, now = now, ttl = ttl}

if redis.call('GET', P .. ':worker:' .. worker) ~= token then
  return redis.error_reply('LEASE lease of worker ' .. worker .. ' is lost')
end

local inflight = P .. ':inflight:' .. worker
redis.call('SADD', P .. ':workers', worker)

-- Takes the next id of model (round-robin over its tenants) into in-flight; nil if none left.
local function take(model)
  local ring = P .. ':ring:' .. model
  while true do
    local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    if not tenant then return nil end
    local q = P .. ':q:' .. model .. ':' .. tenant
    local id = redis.call('LMOVE', q, inflight, 'LEFT', 'RIGHT')
    if redis.call('LLEN', q) == 0 then
      redis.call('LREM', ring, 0, tenant)
    end
    if id then return id, tenant end
  end
end

local out = {}
local taken = 0
local active = {}
for i = 7, #ARGV do active[#active + 1] = ARGV[i] end

while taken < n and #active > 0 do
  local still = {}
  for _, model in ipairs(active) do
    if taken >= n then break end
    local id, tenant = take(model)
    if id then
      still[#still + 1] = model
      if redis.call('EXISTS', P .. ':result:' .. id) == 1 then
        -- Duplicate delivery of a finished job: drop it, never recompute.
        redis.call('LREM', inflight, -1, id)
      else
        local payload = redis.call('GET', P .. ':job:' .. id)
        if not payload then
          redis.call('LREM', inflight, -1, id)
          -- A queued id without a payload can never run: error result and dead-letter.
          local st = redis.call('HMGET', P .. ':status:' .. id, 'group', 'attempts')
          local group = st[1]
          if group == false or group == '' then group = nil end
          dead_letter(ctx, id, {worker = worker, model = model, group = group,
                                attempt = tonumber(st[2]) or 0, code = 'job_not_found',
                                message = 'the job payload is missing',
                                status = {'model', model, 'worker', worker}})
        else
          local skey = P .. ':status:' .. id
          local attempt = redis.call('HINCRBY', skey, 'attempts', 1)
          redis.call('HSET', skey, 'state', 'started', 'worker', worker, 'model', model,
                     'tenant', tenant, 'updated_ms', now)
          local st = redis.call('HMGET', skey, 'group', 'enqueued_ms')
          local group = st[1]
          if group == false or group == '' then group = nil end
          emit(ctx, id, group, {state = 'started', worker = worker, attempt = attempt})
          out[#out + 1] = model
          out[#out + 1] = id
          out[#out + 1] = payload
          out[#out + 1] = attempt
          out[#out + 1] = tonumber(st[2]) or 0
          taken = taken + 1
        end
      end
    end
  end
  active = still
end
return out
