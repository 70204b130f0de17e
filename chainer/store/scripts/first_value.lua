-- The value of the first of KEYS that exists, or nil (Store.first_value: lineage look-ups, most
-- specific key first, in one round trip).
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value then return value end
end
return false
