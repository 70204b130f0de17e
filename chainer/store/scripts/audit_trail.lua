-- Every audit record of one event, oldest first (Store.event_audit), as XRANGE answers: {id, {'r', record}}.
-- KEYS: 1 the event's trail (a list of its records' ids in the log; a stream of the records themselves for
--       an event stored before 0.2), 2 the audit log.
-- Ids whose record the log no longer holds (trimmed by time) are left out.
if redis.call('TYPE', KEYS[1]).ok == 'stream' then return redis.call('XRANGE', KEYS[1], '-', '+') end
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local entry = redis.call('XRANGE', KEYS[2], id, id)
  if entry[1] then table.insert(out, entry[1]) end
end
return out
