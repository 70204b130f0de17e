-- Fragment: hset(key, flat, chunk, stale) writes the name/value pairs of `flat` into the hash `key` with no
-- stored value longer than `chunk` bytes (keys.HASH_CHUNK), so that the hash keeps Redis's compact listpack
-- encoding: one value over hash-max-listpack-value (64 bytes by default) turns the whole hash into a
-- hashtable, about twice the memory. A longer value is stored in pieces: `name` holds its first `chunk`
-- bytes, `name~1`, `name~2` … the rest (codec.decode_hash joins them). With `stale`, the pieces left by a
-- longer earlier value of a field are deleted.
local function hset(key, flat, chunk, stale)
  local args = {}
  for i = 1, #flat, 2 do
    local name, value = flat[i], tostring(flat[i + 1])
    local pieces = 1
    if #value <= chunk then
      args[#args + 1] = name
      args[#args + 1] = value
    else
      pieces = 0
      for at = 1, #value, chunk do
        args[#args + 1] = pieces == 0 and name or (name .. '~' .. pieces)
        args[#args + 1] = string.sub(value, at, at + chunk - 1)
        pieces = pieces + 1
      end
    end
    if stale then
      while redis.call('HDEL', key, name .. '~' .. pieces) == 1 do pieces = pieces + 1 end
    end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end
