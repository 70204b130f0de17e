-- Fragment: trail(key, id, rec) files the audit record just appended to the log under `id` in an event's
-- trail (chainer:audit:event:<id>, Store.event_audit): a string of its records' ids in the log, the first
-- in full (`<ms>-<seq>`) and each next one as `,<ms - the first's ms>-<seq>` (ids only grow), e.g.
-- `1796320521580-0,0-1,0-2,62-0`: about 7 bytes an id, and a string this short is one allocation (a list
-- of ids cost 280 bytes for five). audit_trail.lua reads it back. An event stored by an earlier version
-- has a list of full ids there, or (earlier still) a stream of the records themselves: each gets the
-- record as it did then.
local function trail(key, id, rec)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then
    redis.call('SET', key, id)
  elseif kind == 'string' then
    local ids = redis.call('GET', key)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    local delta = tonumber(ms) - tonumber(string.match(ids, '^(%d+)'))
    redis.call('SET', key, ids .. ',' .. string.format('%.0f', delta) .. '-' .. seq, 'KEEPTTL')
  elseif kind == 'list' then
    redis.call('RPUSH', key, id)
  else
    redis.call('XADD', key, id, 'r', rec)
  end
end
