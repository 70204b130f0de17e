-- Fragment (included by accept.lua and fire_join.lua): writes plan.actions, each a ledger, an arq job
-- (queue KEYS[4], open set KEYS[5]) unless one of its budgets is spent, and its audit record into
-- `chosen` (queued: the record ARGV[act.record]; or skipped with the budget's reason). Expects `plan`,
-- `chosen`, `queued`, `k` (the index of the last key before the first action's keys) and hset (_hset.lua)
-- to be defined.
-- Each action's keys: its ledger, its arq job key, then one key per budget.
for a, act in ipairs(plan.actions) do
  local lk, jk = KEYS[k + 1], KEYS[k + 2]
  k = k + 2
  local spent = nil
  for b, budget in ipairs(act.budget) do
    local used = tonumber(redis.call('GET', KEYS[k + b]) or '0')
    if spent == nil and used >= budget[1] then spent = budget[3] end
  end
  if spent == nil then
    for b, budget in ipairs(act.budget) do
      if redis.call('INCR', KEYS[k + b]) == 1 then redis.call('PEXPIRE', KEYS[k + b], budget[2]) end
    end
    hset(lk, act.ledger, plan.chunk, false)
    if act.job_id ~= '' then
      redis.call('SET', jk, act.job, 'PX', plan.job_ttl)
      redis.call('ZADD', KEYS[4], act.score, act.job_id)
      redis.call('ZADD', KEYS[5], act.score, act.action_id)
      queued = queued + 1
    end
    chosen[a] = ARGV[act.record]
  else
    hset(lk, act.ledger, plan.chunk, false)
    hset(lk, {'state', 'skipped', 'job_id', '', 'last_error', spent}, plan.chunk, true)
    local skip = cjson.decode(act.skip)
    skip.reason = spent
    chosen[a] = cjson.encode(skip)
  end
  redis.call('PEXPIRE', lk, plan.ttl)
  k = k + #act.budget
end
