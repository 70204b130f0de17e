-- Accept one event atomically (Store.accept): dedupe, lineage check, event hash, lineage child, ledgers,
-- budgets, arq jobs, fan-in join steps and audit records are written together, or nothing but a
-- duplicate's record is.
-- KEYS: 1 event hash, 2 audit log, 3 event trail, 4 arq queue, 5 open set, 6 the parent's children set,
--       7..6+nd the dedupe (seen) keys, then the nl lineage keys of the event (most specific first), then
--       each action's keys (_write_actions.lua), then each join's hash, fire job key and fired round's key, the
--       wake list
--       (KEYS[plan.wake]), and last (when plan.dup_key > 0) the trail of the event a duplicate belongs to.
-- ARGV[1]: the plan as JSON (Store.accept); ARGV[2]: the event's stored fields (compressed); ARGV[3..]:
--          audit records, which the plan names by their index in ARGV.
-- Returns {status, event id or lineage, jobs queued}; status is accepted, duplicate, elsewhere (a duplicate
-- of another event than the one named: the caller repeats the call with that event's trail declared) or
-- lineage (the first lineage key that exists holds another value than plan.lineage, the one the plan was
-- made with: nothing is written, the caller plans again with the chain returned, '' when none).
local plan = cjson.decode(ARGV[1])
local nd = plan.nd
--#include _trail.lua
--#include _hset.lua
for i = 1, nd do
  local existing = redis.call('GET', KEYS[6 + i])
  if existing then
    -- The duplicate is recorded on the accepted event's own trail, a declared key: this event's
    -- (a redelivery) or the one the caller named in dup_key; any other event is reported back first.
    local target = KEYS[3]
    if existing ~= plan.event_id then
      if plan.dup_key == 0 or existing ~= plan.dup_event then return {'elsewhere', existing, 0} end
      target = KEYS[plan.dup_key]
    end
    for j = 1, nd do redis.call('SET', KEYS[6 + j], existing, 'PX', plan.dedupe_ttl, 'NX') end
    local dup = cjson.decode(plan.dup)
    dup.event_id = existing
    local rec = cjson.encode(dup)
    local id = redis.call('XADD', KEYS[2], '*', 'r', rec)
    if redis.call('EXISTS', target) == 1 then trail(target, id, rec) end
    return {'duplicate', existing, 0}
  end
end
local found = ''
for i = 1, plan.nl do
  local value = redis.call('GET', KEYS[6 + nd + i])
  if value then
    found = value
    break
  end
end
if found ~= plan.lineage then return {'lineage', found, 0} end
for i = 1, nd do redis.call('SET', KEYS[6 + i], plan.event_id, 'PX', plan.dedupe_ttl) end
redis.call('HSET', KEYS[1], 'z', ARGV[2], unpack(plan.event))
redis.call('PEXPIRE', KEYS[1], plan.ttl)
if plan.parent ~= '' then
  redis.call('SADD', KEYS[6], plan.event_id)
  redis.call('PEXPIRE', KEYS[6], plan.ttl)
end
local chosen = {}
local queued = 0
local k = 6 + nd + plan.nl
--#include _write_actions.lua
local progress = {}
local fired_any = false
for _, jn in ipairs(plan.joins) do
  local jk, fk, rk = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  k = k + 3
  local fired = redis.call('HGET', jk, 'fired')
  if not fired then
    for _, i in ipairs(jn.resets) do redis.call('HDEL', jk, 'c' .. i) end
    for _, i in ipairs(jn.contributes) do redis.call('HSET', jk, 'c' .. i, plan.event_id) end
    if redis.call('HSETNX', jk, 'rule', jn.rule) == 1 then
      redis.call('HSET', jk, 'n', jn.clauses, 'on', jn.on, 'value', jn.value, 'started_ms', plan.now)
      redis.call('PEXPIRE', jk, jn.within)
    end
  end
  local satisfied = {}
  for i = 0, jn.clauses - 1 do
    if redis.call('HEXISTS', jk, 'c' .. i) == 1 then table.insert(satisfied, i) end
  end
  local rec = cjson.decode(jn.record)
  rec.complete = (#satisfied == jn.clauses)
  if fired then
    rec.already_fired_by = fired
  elseif rec.complete then
    redis.call('HSET', jk, 'fired', plan.event_id)
    -- A join that fires once per round (join_on: branch) moves this round aside for its job: the next event
    -- on the branch starts a new one.
    if jn.rounds then redis.call('RENAME', jk, rk) end
    redis.call('PEXPIRE', rk, plan.ttl)
    fired_any = true
    redis.call('SET', fk, jn.job, 'PX', plan.job_ttl)
    redis.call('ZADD', KEYS[4], plan.now, jn.job_id)
    rec.fired = true
  end
  rec.satisfied = '__satisfied__'
  local text = string.gsub(cjson.encode(rec), '"__satisfied__"', '[' .. table.concat(satisfied, ',') .. ']')
  table.insert(progress, text)
end
--#include _write_audit.lua
for _, rec in ipairs(progress) do
  local id = redis.call('XADD', KEYS[2], '*', 'r', rec)
  trail(KEYS[3], id, rec)
end
redis.call('PEXPIRE', KEYS[3], plan.ttl)
local woke, wake, wake_max = queued > 0 or fired_any, plan.wake or 0, plan.wake_max or 0
--#include _wake.lua
return {'accepted', plan.event_id, queued}
