-- Append audit records (Store.append_audit).
-- KEYS: 1 audit log, and optionally 2 the event's audit stream (same ids, its expiry renewed).
-- ARGV[1]: JSON {audit = [record JSON, ...], minid = trim bound, ttl = event stream expiry in ms}.
-- Returns the stream ids.
local p = cjson.decode(ARGV[1])
local ids = {}
for _, rec in ipairs(p.audit) do
  local id = redis.call('XADD', KEYS[1], 'MINID', '~', p.minid, '*', 'r', rec)
  if #KEYS > 1 then redis.call('XADD', KEYS[2], id, 'r', rec) end
  table.insert(ids, id)
end
if #KEYS > 1 then redis.call('PEXPIRE', KEYS[2], p.ttl) end
return ids
