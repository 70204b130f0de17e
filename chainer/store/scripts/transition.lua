-- Compare-and-set on an action ledger's state (Store.transition), then the field writes, audit
-- records, dead-letter and open-set bookkeeping and (for replays and retries) a new arq job.
-- KEYS: 1 ledger, 2 audit log, 3 event trail, 4 dlq, 5 arq job key, 6 arq queue, 7 open set, 8 the wake
--       list.
-- ARGV[1]: the change as JSON (Store.transition); ARGV[2..]: its audit records.
-- Returns {'ok', previous state}, {'conflict', actual state} or {'missing', ''}.
local p = cjson.decode(ARGV[1])
--#include _trail.lua
--#include _hset.lua
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if #p.from > 0 then
  local ok = false
  for _, s in ipairs(p.from) do if s == state then ok = true end end
  if not ok then return {'conflict', state} end
end
hset(KEYS[1], p.set, p.chunk, true)
for i = 1, #p.incr, 2 do redis.call('HINCRBY', KEYS[1], p.incr[i], p.incr[i + 1]) end
for i = 2, #ARGV do
  local id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[i])
  trail(KEYS[3], id, ARGV[i])
end
if p.dlq == 'add' then redis.call('ZADD', KEYS[4], p.now, p.action_id)
elseif p.dlq == 'remove' then redis.call('ZREM', KEYS[4], p.action_id) end
if p.open == 'add' then redis.call('ZADD', KEYS[7], p.now, p.action_id)
elseif p.open == 'remove' then redis.call('ZREM', KEYS[7], p.action_id) end
if p.job_id ~= '' then
  redis.call('SET', KEYS[5], p.job, 'PX', p.job_ttl)
  redis.call('ZADD', KEYS[6], p.score, p.job_id)
end
local woke, wake, wake_max = p.job_id ~= '' and p.score <= p.now, p.wake or 0, p.wake_max or 0
--#include _wake.lua
return {'ok', state}
