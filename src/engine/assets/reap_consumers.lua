-- popup-operator native engine: remove consumers that are gone from the workers' group.
--
-- A consumer is gone when its heartbeat key (popup:worker:<name>) has expired. It is removed only
-- when it owns no pending entry: XGROUP DELCONSUMER drops a consumer's pending entries with it, so
-- those are claimed by a live worker first (XAUTOCLAIM) and the consumer goes on a later round.
-- The check and the removal are in one script, so nothing can become pending in between.
--
-- KEYS: 1 queue:orders
-- ARGV: 1 group, 2 heartbeat key prefix, 3 consumer to keep (the caller; "" to consider all)
-- Returns the names removed.
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name ~= ARGV[3] and pending == 0 and redis.call('EXISTS', ARGV[2] .. name) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    table.insert(removed, name)
  end
end
return removed
