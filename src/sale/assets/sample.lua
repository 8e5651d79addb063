-- popup-operator: TimeSeries sampling of the queue streams (native engine, and idle-gap filler
-- for the triggers engine, whose JavaScript library applies the same rule).
--
-- Writes one sample per queue when an interval boundary has passed since the last sample, at the
-- boundary's timestamp, so several callers in the same interval write exactly once:
--   ts:len:<stream>     = XLEN <stream>
--   ts:enqueue:<stream> = entries added to <stream> since the previous sample (XINFO entries-added)
--
-- KEYS[1] = popup:ts:last (boundary of the last sample, ms)
-- KEYS[2] = popup:ts:added (hash stream -> entries-added at the last sample)
-- KEYS[3..] = triples: stream, ts:len:<stream>, ts:enqueue:<stream>
-- ARGV[1] = interval in ms
-- Returns 1 when samples were written, 0 when this interval was already sampled.
local interval = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local boundary = now - (now % interval)
local last = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
if boundary <= last then
  return 0
end
redis.call('SET', KEYS[1], boundary)
for i = 3, #KEYS, 3 do
  local stream, lenKey, enqKey = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local len, added = 0, 0
  if redis.call('EXISTS', stream) == 1 then
    len = redis.call('XLEN', stream)
    local info = redis.call('XINFO', 'STREAM', stream)
    for j = 1, #info, 2 do
      if info[j] == 'entries-added' then
        added = tonumber(info[j + 1])
      end
    end
  end
  local prev = tonumber(redis.call('HGET', KEYS[2], stream) or '0') or 0
  local delta = added - prev
  if delta < 0 then
    -- the stream was deleted and created again: count from zero
    delta = added
  end
  redis.call('HSET', KEYS[2], stream, added)
  redis.call('TS.ADD', lenKey, boundary, len, 'ON_DUPLICATE', 'LAST')
  redis.call('TS.ADD', enqKey, boundary, delta, 'ON_DUPLICATE', 'LAST')
end
return 1
