-- popup-operator native engine: take the oldest orders waiting in queue:orders and decide them.
--
-- The rule set of docs/engines.md ("Deciding an order"), the same in the gears and triggers
-- engines. The script reads the orders itself, decides them and removes them in one atomic step,
-- so an order is decided exactly when it leaves queue:orders: however many workers call this and
-- whenever one of them dies, no order is decided twice and none is left half done.
--
-- KEYS: 1 product, 2 queue:customers, 3 queue:orders, 4 queue:complete, 5 queue:rejected
-- ARGV: 1 the most orders to take (the worker asks for whole batches)
-- Returns {completed, rejected}.

-- Keys of the wrong type would make a write fail halfway: refuse before any write. Once per call
-- covers every order of it.
local expected = {
  { KEYS[1], 'string' }, { KEYS[2], 'stream' }, { KEYS[3], 'stream' }, { KEYS[4], 'stream' },
  { KEYS[5], 'stream' },
}
local customers_exist = false
for i, e in ipairs(expected) do
  local t = redis.call('TYPE', e[1])['ok']
  if t ~= 'none' and t ~= e[2] then
    return redis.error_reply('popup: key ' .. e[1] .. ' holds a ' .. t .. ', not a ' .. e[2] ..
      '; no order was decided (delete or rename that key)')
  end
  if i == 2 then customers_exist = t ~= 'none' end
end

local orders = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', tonumber(ARGV[1]))
if #orders == 0 then return { 0, 0 } end

-- Decimal digits without leading zeros, at most `max` (same digit count compared as text).
local function canonical_digits(s, max)
  if #s > 1 and string.byte(s) == 48 then return false end
  return #s < #max or (#s == #max and s <= max)
end

-- "<ms>-<seq>", both unsigned 64-bit: exactly the ids Redis stores, so a lookup finds the entry or
-- nothing (Redis refuses "99999999999999999999-0" with an error and reads "7" as a whole range).
local U64 = '18446744073709551615'
local function is_stream_id(s)
  local ms, seq = string.match(s, '^(%d+)%-(%d+)$')
  return ms ~= nil and canonical_digits(ms, U64) and canonical_digits(seq, U64)
end

-- Units left as Redis DECR reads them; nil when missing or not an integer.
local I64 = '9223372036854775807'
local function stock_of(v)
  if not v then return nil end
  local digits = string.match(v, '^%-?(%d+)$')
  if not digits or not canonical_digits(digits, I64) or v == '-0' then return nil end
  return tonumber(v)
end

-- What a rejection records as the customer: the value when short printable ASCII, else its size.
local function shown(customer)
  if #customer <= 64 and not string.find(customer, '[^\32-\126]') then return customer end
  return '<' .. #customer .. ' bytes>'
end

-- a > b for canonical decimals: the longer one, or the same length and later as text.
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- True when no entry with this id was ever in queue:customers: Redis never makes 0-0, and every id
-- it ever made is at most the stream's last-generated-id (read once, only when a rejection asks).
local last_generated
local function never_arrived(id)
  if id == '0-0' or not customers_exist then return true end
  if last_generated == nil then
    local info = redis.call('XINFO', 'STREAM', KEYS[2])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last_generated = info[i + 1] end
    end
  end
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  local last_ms, last_seq = string.match(last_generated, '^(%d+)%-(%d+)$')
  if ms ~= last_ms then return greater(ms, last_ms) end
  return greater(seq, last_seq)
end

-- Orders mostly name the oldest waiting customers (they order in about the order they arrived):
-- read as many from the head of queue:customers, so those are found without a lookup each.
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', #orders)
local head_at, taken = {}, {}
for i = 1, #head do head_at[head[i][1]] = i end

-- Take a customer out of the queue; false when they are not waiting (any more).
local function take(customer)
  local at = head_at[customer]
  if at == nil then return redis.call('XDEL', KEYS[2], customer) == 1 end
  if taken[at] then return false end
  taken[at] = true
  return true
end

local stock = stock_of(redis.call('GET', KEYS[1]))
local left = (stock ~= nil and stock > 0) and stock or 0
-- Per order (same index as `orders`): the customer recorded and the reason (false: completed).
local customers, reasons = {}, {}
local sold = 0

for i = 1, #orders do
  local fields = orders[i][2]
  local customer, n = nil, 0
  for j = 1, #fields, 2 do
    if fields[j] == 'customer' then
      customer, n = fields[j + 1], n + 1
    end
  end
  local reason = false
  if n ~= 1 then
    reason, customer = 'invalid', (n == 0 and '' or '<' .. n .. ' customer fields>')
  elseif not is_stream_id(customer) then
    reason, customer = 'invalid', shown(customer)
  elseif not take(customer) then
    -- Not waiting: answered before (also earlier in this call), or never arrived.
    reason = never_arrived(customer) and 'unknown-customer' or 'duplicate'
  elseif left > 0 then
    -- Waiting, and now out of the queue: this is the customer's one answer.
    left, sold = left - 1, sold + 1
  else
    reason = 'sold-out'
  end
  customers[i], reasons[i] = customer, reason
end

-- The stock before any completion is recorded: if anything failed after it, the sale could
-- undersell but never oversell. (Nothing can: the types are checked, the stock is an integer of at
-- least `sold`, and once a script has written, Redis no longer refuses its writes for memory.)
-- One DECR per unit: the processor's user may only take units one at a time (no DECRBY, which
-- takes a negative amount as well, see docs/security.md).
for _ = 1, sold do redis.call('DECR', KEYS[1]) end
for i = 1, #orders do
  if reasons[i] then
    redis.call('XADD', KEYS[5], '*', 'order', orders[i][1], 'customer', customers[i], 'reason', reasons[i])
  else
    redis.call('XADD', KEYS[4], '*', 'order', orders[i][1], 'customer', customers[i])
  end
end

-- The orders taken and the head customers taken leave their queues by id (XDEL, up to 1000 ids a
-- command): the processor's user may delete entries it names, not trim a queue (XTRIM MAXLEN 0
-- would drop every waiting order at once).
local function delete_ids(key, ids)
  for first = 1, #ids, 1000 do
    redis.call('XDEL', key, unpack(ids, first, math.min(first + 999, #ids)))
  end
end
local order_ids = {}
for i = 1, #orders do order_ids[i] = orders[i][1] end
delete_ids(KEYS[3], order_ids)
local customer_ids = {}
for at = 1, #head do
  if taken[at] then customer_ids[#customer_ids + 1] = head[at][1] end
end
delete_ids(KEYS[2], customer_ids)
return { sold, #orders - sold }
