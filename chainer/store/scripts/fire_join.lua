-- Write a completed fan-in's actions once (Store.fire_join): the join hash's `done` field marks it.
-- KEYS: 1 join hash, 2 audit log, 3 event trail, 4 arq queue, 5 open set, 6 event hash, then each
--       action's keys (_write_actions.lua), and last the wake list (KEYS[plan.wake]).
-- ARGV[1]: the plan as JSON (Store.fire_join); ARGV[2..]: audit records, named in the plan by index.
-- Returns {'fired', event id, jobs queued}, or {'done', the event that fired it, 0} when already written.
local plan = cjson.decode(ARGV[1])
--#include _trail.lua
--#include _hset.lua
if redis.call('HEXISTS', KEYS[1], 'done') == 1 then return {'done', redis.call('HGET', KEYS[1], 'done'), 0} end
redis.call('HSET', KEYS[1], 'done', plan.event_id)
local chosen = {}
local queued = 0
local k = 6
--#include _write_actions.lua
--#include _write_audit.lua
redis.call('PEXPIRE', KEYS[3], plan.ttl)
if #plan.actions > 0 then
  local listed = redis.call('HGET', KEYS[6], 'actions')
  local ids = {}
  if listed then
    for id in string.gmatch(listed, '"([^"]+)"') do table.insert(ids, id) end
  end
  for _, act in ipairs(plan.actions) do table.insert(ids, act.action_id) end
  redis.call('HSET', KEYS[6], 'actions', cjson.encode(ids))
end
local woke, wake, wake_max = queued > 0, plan.wake or 0, plan.wake_max or 0
--#include _wake.lua
return {'fired', plan.event_id, queued}
