-- Fragment (included by accept.lua, fire_join.lua and transition.lua before they return): when the
-- script queued a job that is due now (`woke`), push a token on the wake list KEYS[wake] (capped at
-- wake_max tokens) so that an idle worker blocked on it starts the job at once (chainer.wake).
-- Expects `woke`, `wake` (the wake list's index in KEYS, 0 for none) and `wake_max`.
if woke and wake > 0 then
  redis.call('LPUSH', KEYS[wake], '1')
  redis.call('LTRIM', KEYS[wake], 0, wake_max - 1)
end
