-- Every audit record of one event, oldest first (Store.event_audit), as XRANGE answers: {id, {'r', record}}.
-- KEYS: 1 the event's trail (a string of its records' ids in the log, written by _trail.lua; a list of the
--       ids, or a stream of the records themselves, for an event stored by an earlier version), 2 the log.
-- Ids whose record the log no longer holds (trimmed by time) are left out.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'stream' then return redis.call('XRANGE', KEYS[1], '-', '+') end
local ids = {}
if kind == 'list' then
  ids = redis.call('LRANGE', KEYS[1], 0, -1)
elseif kind == 'string' then
  local first = nil
  for ms, seq in string.gmatch(redis.call('GET', KEYS[1]), '(%d+)-(%d+)') do
    if first == nil then
      first = tonumber(ms)
      ids[#ids + 1] = ms .. '-' .. seq
    else
      ids[#ids + 1] = string.format('%.0f', first + tonumber(ms)) .. '-' .. seq
    end
  end
end
local out = {}
for _, id in ipairs(ids) do
  local entry = redis.call('XRANGE', KEYS[2], id, id)
  if entry[1] then table.insert(out, entry[1]) end
end
return out
