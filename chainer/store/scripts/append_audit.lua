-- Append audit records (Store.append_audit).
-- KEYS: 1 audit log, and optionally 2 the event's trail (its expiry renewed).
-- ARGV[1]: JSON {ttl = trail expiry in ms}; ARGV[2..]: the records.
-- Returns the stream ids.
local p = cjson.decode(ARGV[1])
--#include _trail.lua
local ids = {}
for i = 2, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
  if #KEYS > 1 then trail(KEYS[2], id, ARGV[i]) end
  table.insert(ids, id)
end
if #KEYS > 1 then redis.call('PEXPIRE', KEYS[2], p.ttl) end
return ids
