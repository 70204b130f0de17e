-- Fragment (included by accept.lua and fire_join.lua): appends plan.audit to the audit log (KEYS[2])
-- and the event's stream (KEYS[3]) under the same id. An entry that is a table ({a = n}) stands for
-- the n-th action's record, chosen by _write_actions.lua.
for _, rec in ipairs(plan.audit) do
  if type(rec) == 'table' then rec = chosen[rec.a] end
  local id = redis.call('XADD', KEYS[2], 'MINID', '~', plan.minid, '*', 'r', rec)
  redis.call('XADD', KEYS[3], id, 'r', rec)
end
