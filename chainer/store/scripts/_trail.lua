-- Fragment: trail(key, id, rec) files the audit record just appended to the log under `id` in an event's
-- trail, the list of its records' ids in the log (chainer:audit:event:<id>, Store.event_audit). An event
-- stored before 0.2 has a stream there holding its records themselves: it gets the record, as it did then.
local function trail(key, id, rec)
  local pushed = redis.pcall('RPUSH', key, id)
  if type(pushed) == 'table' and pushed.err then redis.call('XADD', key, id, 'r', rec) end
end
