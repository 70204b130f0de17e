-- Fragment (included by accept.lua and fire_join.lua): appends plan.audit to the audit log (KEYS[2]) and
-- files each id in the event's trail (KEYS[3]; needs _trail.lua). An entry that is a number n stands for
-- the record ARGV[n]; one that is a table ({a = n}) for the n-th action's record, chosen by
-- _write_actions.lua.
for _, rec in ipairs(plan.audit) do
  if type(rec) == 'table' then rec = chosen[rec.a] else rec = ARGV[rec] end
  local id = redis.call('XADD', KEYS[2], '*', 'r', rec)
  trail(KEYS[3], id, rec)
end
