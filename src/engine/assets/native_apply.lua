-- popup-operator native engine: decide a batch of orders atomically.
--
-- The rule set of docs/engines.md ("Deciding an order"), the same in the gears and triggers
-- engines. Safe by construction: everything about an order is checked with reads first; the
-- writes come after and cannot fail on anything the order contains.
--
-- KEYS: 1 product, 2 queue:customers, 3 queue:orders, 4 queue:complete, 5 queue:rejected,
--       6 popup:customers:served
-- ARGV: 1 consumer group ("" for none), then order entry ids (the script reads the entries itself,
--       so the fields it judges are exactly the bytes in Redis).
-- Returns {completed, rejected, skipped}; skipped = no longer in queue:orders (already decided).
local group = ARGV[1]
local completed, rejected, skipped = 0, 0, 0

-- Keys of the wrong type would make a write fail halfway: refuse the whole batch before any write.
local expected = {
  { KEYS[1], 'string' }, { KEYS[2], 'stream' }, { KEYS[3], 'stream' }, { KEYS[4], 'stream' },
  { KEYS[5], 'stream' }, { KEYS[6], 'set' },
}
for _, e in ipairs(expected) do
  local t = redis.call('TYPE', e[1])['ok']
  if t ~= 'none' and t ~= e[2] then
    return redis.error_reply('popup: key ' .. e[1] .. ' holds a ' .. t .. ', not a ' .. e[2] ..
      '; no order was decided (delete or rename that key)')
  end
end

-- A decimal without sign, spaces or leading zeros, at most `max` (same digit count compared as text).
local function canonical_uint(s, max)
  if s == '0' then return true end
  if not string.match(s, '^[1-9]%d*$') or #s > #max then return false end
  return #s < #max or s <= max
end

-- "<ms>-<seq>", both unsigned 64-bit: exactly the ids Redis stores, so XRANGE id id finds the
-- entry or nothing (an incomplete id like "7" would match a whole millisecond).
local U64 = '18446744073709551615'
local function is_stream_id(s)
  local ms, seq = string.match(s, '^(%d+)%-(%d+)$')
  return ms ~= nil and canonical_uint(ms, U64) and canonical_uint(seq, U64)
end

-- Units left as Redis DECR reads them; nil when missing or not an integer.
local I64 = '9223372036854775807'
local function stock_of(v)
  if not v then return nil end
  local digits = string.match(v, '^%-?(%d+)$')
  if not digits or not canonical_uint(digits, I64) or v == '-0' then return nil end
  return tonumber(v)
end

-- What a rejection records as the customer: the value when short printable ASCII, else its size.
local function shown(customer)
  if #customer <= 64 and not string.find(customer, '[^\32-\126]') then return customer end
  return '<' .. #customer .. ' bytes>'
end

-- Decide one order: returns the outcome and, when rejected, the reason and the customer shown.
local function judge(fields)
  local customer, n = nil, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'customer' then
      customer, n = fields[i + 1], n + 1
    end
  end
  if n ~= 1 then return 'rejected', 'invalid', (n == 0 and '' or '<' .. n .. ' customer fields>') end
  if not is_stream_id(customer) then return 'rejected', 'invalid', shown(customer) end
  if #redis.call('XRANGE', KEYS[2], customer, customer) == 0 then
    if redis.call('SISMEMBER', KEYS[6], customer) == 1 then
      return 'rejected', 'duplicate', customer
    end
    return 'rejected', 'unknown-customer', customer
  end
  local stock = stock_of(redis.call('GET', KEYS[1]))
  if stock == nil or stock <= 0 then return 'sold-out', 'sold-out', customer end
  return 'completed', nil, customer
end

for i = 2, #ARGV do
  local order = ARGV[i]
  local entry = redis.call('XRANGE', KEYS[3], order, order)[1]
  if entry == nil then
    skipped = skipped + 1
  else
    local outcome, reason, customer = judge(entry[2])
    if outcome == 'completed' then
      -- The stock first: if anything failed after it, the sale could undersell but never oversell.
      redis.call('DECR', KEYS[1])
      redis.call('SADD', KEYS[6], customer)
      redis.call('XDEL', KEYS[2], customer)
      redis.call('XADD', KEYS[4], '*', 'order', order, 'customer', customer)
      completed = completed + 1
    else
      if outcome == 'sold-out' then
        -- A waiting customer who got an answer is served: out of the queue, no second order.
        redis.call('SADD', KEYS[6], customer)
        redis.call('XDEL', KEYS[2], customer)
      end
      redis.call('XADD', KEYS[5], '*', 'order', order, 'customer', customer, 'reason', reason)
      rejected = rejected + 1
    end
    redis.call('XDEL', KEYS[3], order)
  end
  if group ~= '' then
    redis.call('XACK', KEYS[3], group, order)
  end
end
return { completed, rejected, skipped }
