-- permcheck: may this Redis user run what segq needs? Runs every command the queue scripts use
-- (and the worker's or the client's own commands) with redis.pcall on probe keys, and reports
-- each one the ACL refuses. Works for any user that may run scripts (no ACL command needed).
-- Side effects: probe keys P:permcheck:<token>:* (deleted before returning, and given a 60 s TTL
-- in case DEL is refused); one empty message on P:ev:#permcheck and P:gev:#permcheck ('#' is
-- outside the id alphabet, so no job or group has these channels).
-- Every command in a `redis.call`/`redis.pcall` of a queue script must have a probe here
-- (tests/unit/test_queue_permcheck.c checks it).
-- KEYS: none (numkeys 0); every key is derived from the prefix (standalone Redis, not Cluster).
-- ARGV[1] prefix
-- ARGV[2] token   random [A-Za-z0-9]: names the probe keys
-- ARGV[3] role    "worker" or "client": adds that program's own commands to the probes
-- Returns a flat array: command, kind ("command", "keys" or "channels"), error text, ... for
-- each refusal (empty: everything is allowed).
local P, tok, role = ARGV[1], ARGV[2], ARGV[3]
local k = P .. ':permcheck:' .. tok
local s, h, l, l2, set, x = k .. ':s', k .. ':h', k .. ':l', k .. ':l2', k .. ':z', k .. ':x'
local zs = k .. ':zs'
local out = {}

local function probe(cmd, ...)
  local r = redis.pcall(cmd, ...)
  if type(r) ~= 'table' or not r.err then return end
  local e = r.err
  local kind
  if string.find(e, 'channel') then
    kind = 'channels'
  elseif string.find(e, 'key') then
    kind = 'keys'
  elseif string.find(e, 'NOPERM') or string.find(e, "can't run this command") then
    kind = 'command'
  end -- else not a permission problem (e.g. Redis 6.2 refuses blocking commands in scripts)
  if kind then
    out[#out + 1] = cmd
    out[#out + 1] = kind
    out[#out + 1] = e
  end
end

-- The queue scripts' commands (enqueue, claim, ack, heartbeat, sweep, unregister, prelude).
probe('SET', s, '1', 'PX', 60000)
probe('SETEX', s, 60, '1')
probe('GET', s)
probe('STRLEN', s)
probe('EXISTS', s)
probe('EXPIRE', s, 60)
probe('PERSIST', s)
probe('HSET', h, 'f', '1')
probe('HGET', h, 'f')
probe('HMGET', h, 'f')
probe('HINCRBY', h, 'n', 1)
probe('HDEL', h, 'f')
probe('RPUSH', l, 'a')
probe('LPUSH', l, 'b')
probe('LMOVE', l, l2, 'LEFT', 'RIGHT')
probe('LLEN', l)
probe('LRANGE', l, 0, -1)
probe('LPOS', l, 'a')
probe('LREM', l, 0, 'a')
probe('LTRIM', l, 0, -1)
probe('SADD', set, 'a')
probe('SREM', set, 'a')
probe('SMEMBERS', set)
probe('SCARD', set)
probe('SISMEMBER', set, 'a')
probe('SMISMEMBER', set, 'a')
probe('SRANDMEMBER', set, 1)
probe('XADD', x, 'MAXLEN', '~', 64, '*', 'e', '1')
probe('GETRANGE', s, 0, 0)
probe('TYPE', s)
probe('TIME')
probe('INFO', 'server')
probe('ZADD', zs, 1, 'a')
probe('ZSCORE', zs, 'a')
probe('ZRANGE', zs, 0, -1)
probe('ZREVRANGE', zs, 0, -1)
probe('ZRANGEBYSCORE', zs, '-inf', '+inf', 'LIMIT', 0, 1)
probe('ZREMRANGEBYRANK', zs, 0, -2)
probe('ZREM', zs, 'a')
probe('ZCARD', zs) -- depth (the worker's metrics) and the client's stats
probe('PUBLISH', P .. ':' .. KEY.JOB_CHANNEL .. ':#permcheck', '')
probe('PUBLISH', P .. ':' .. KEY.GROUP_CHANNEL .. ':#permcheck', '')
probe('PUBSUB', 'NUMSUB', P .. ':' .. KEY.JOB_CHANNEL .. ':#permcheck') -- enqueue: watched?
if role == 'worker' then
  probe('BRPOP', l2, 1) -- non-blocking inside a script; the worker's wait on the wake-up keys
elseif role == 'client' then
  probe('MGET', s, s)
  probe('HGETALL', h)
  probe('XRANGE', x, '-', '+', 'COUNT', 1)
  probe('PTTL', s)
end
for _, key in ipairs({s, h, l, l2, set, x, zs}) do redis.pcall('PEXPIRE', key, 60000) end
probe('DEL', s, h, l, l2, set, x, zs)
return out
