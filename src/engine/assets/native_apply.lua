-- popup-operator native engine: decide a batch of orders atomically.
--
-- The same rules as the gears and triggers engines (docs/engines.md):
--   * an order already decided (its entry id is in popup:orders:done) is skipped: redelivery of a
--     batch after a worker crash never applies anything twice;
--   * a customer whose order was already decided -> rejected, reason "duplicate";
--   * product <= 0 (or missing) -> rejected, reason "sold-out"; product never goes below zero;
--   * otherwise: XADD queue:complete, XDEL the customer's entry, DECR product.
-- Every decided order is XACKed (consumer group ARGV[1], when not empty) and XDELed from queue:orders.
--
-- KEYS: 1 product, 2 queue:customers, 3 queue:orders, 4 queue:complete, 5 queue:rejected,
--       6 popup:customers:served, 7 popup:orders:done
-- ARGV: 1 group, then pairs (order entry id, customer entry id or "")
-- Returns {completed, rejected, skipped}.
local group = ARGV[1]
local completed, rejected, skipped = 0, 0, 0

local function is_stream_id(s)
  return string.match(s, '^%d+%-%d+$') ~= nil or string.match(s, '^%d+$') ~= nil
end

local function reject(order, customer, reason)
  redis.call('XADD', KEYS[5], '*', 'order', order, 'customer', customer, 'reason', reason)
  if is_stream_id(customer) then
    redis.call('XDEL', KEYS[2], customer)
  end
  rejected = rejected + 1
end

for i = 2, #ARGV, 2 do
  local order, customer = ARGV[i], ARGV[i + 1]
  if redis.call('SADD', KEYS[7], order) == 0 then
    skipped = skipped + 1
  elseif not is_stream_id(customer) then
    reject(order, customer, 'invalid')
  elseif redis.call('SADD', KEYS[6], customer) == 0 then
    reject(order, customer, 'duplicate')
  else
    local stock = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
    if stock > 0 then
      redis.call('XADD', KEYS[4], '*', 'order', order, 'customer', customer)
      redis.call('XDEL', KEYS[2], customer)
      redis.call('DECR', KEYS[1])
      completed = completed + 1
    else
      reject(order, customer, 'sold-out')
    end
  end
  if group ~= '' then
    redis.call('XACK', KEYS[3], group, order)
  end
  redis.call('XDEL', KEYS[3], order)
end
return {completed, rejected, skipped}
