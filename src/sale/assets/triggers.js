#!js api_version=1.0 name=popup
// popup-operator triggers engine (RedisGears 2 "triggers and functions", redis-stack 7.x).
// settings: batch=__BATCH__ interval_ms=__INTERVAL_MS__
//
// The rules are the ones of docs/engines.md, identical to the native Lua script and the gears
// Python script. A stream trigger callback runs atomically, so each order is decided atomically:
// it reads what it needs, then writes, and nothing it writes can fail after its first write.
// Gears 2 has no batch reader and no timer: orders are decided one record at a time as they
// arrive (the batch setting is recorded above but has no effect), and TimeSeries samples are
// written by whichever trigger call first sees that an interval boundary has passed.

const INTERVAL_MS = __INTERVAL_MS__;
const PRODUCT = 'product';
const CUSTOMERS = 'queue:customers';
const ORDERS = 'queue:orders';
const COMPLETE = 'queue:complete';
const REJECTED = 'queue:rejected';
const QUEUES = [CUSTOMERS, ORDERS, COMPLETE, REJECTED];
const SAMPLE_LAST = 'popup:ts:last';
const SAMPLE_ADDED = 'popup:ts:added';
const ENGINE_ERROR = 'popup:engine:error';
const ERROR_TTL_MS = __ERROR_TTL_MS__;
// Orders left behind by an earlier failure that one callback decides along with its own.
const LEFTOVERS = 99;
const U64 = '18446744073709551615';
const I64 = '9223372036854775807';

function asString(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (v instanceof ArrayBuffer) return latin1(v);
  return String(v);
}

// Bytes as a string of the same length (one char per byte), so checks see exactly what Redis holds.
function latin1(buf) {
  const bytes = new Uint8Array(buf);
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

// A decimal without sign, spaces or leading zeros, at most `max`.
function canonicalUint(s, max) {
  if (s === '0') return true;
  if (!/^[1-9][0-9]*$/.test(s) || s.length > max.length) return false;
  return s.length < max.length || s <= max;
}

// "<ms>-<seq>", both unsigned 64-bit: exactly the ids Redis stores (see native_apply.lua).
function isStreamId(s) {
  const m = /^([0-9]+)-([0-9]+)$/.exec(s);
  return m !== null && canonicalUint(m[1], U64) && canonicalUint(m[2], U64);
}

// Units left as Redis DECR reads them; null when missing or not an integer.
function stockOf(v) {
  if (v === null || v === undefined) return null;
  const s = asString(v);
  const m = /^-?([0-9]+)$/.exec(s);
  if (m === null || !canonicalUint(m[1], I64) || s === '-0') return null;
  return BigInt(s);
}

function shown(customer) {
  if (customer.length <= 64 && /^[\x20-\x7e]*$/.test(customer)) return customer;
  return '<' + customer.length + ' bytes>';
}

// Canonical stream ids compared as numbers: a > b.
function idAfter(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am > bm || (am === bm && as > bs);
}

// No entry with this id was ever in queue:customers: Redis never makes 0-0, and every id it ever
// made is at most the stream's last-generated-id.
function neverArrived(client, id) {
  if (id === '0-0' || Number(client.call('EXISTS', CUSTOMERS)) === 0) return true;
  const info = client.call('XINFO', 'STREAM', CUSTOMERS);
  return idAfter(id, asString(info['last-generated-id']));
}

function wrongType(key, type, found) {
  return new Error('popup: key ' + key + ' holds a ' + found + ', not a ' + type +
    '; no order was decided (delete or rename that key)');
}

// Before writing to `key`: it is a stream or absent. (The keys a step also writes to, product and
// the two queues, it has read already, which fails on a wrong type before any write.)
function requireStream(client, key) {
  const t = asString(client.call('TYPE', key));
  if (t !== 'none' && t !== 'stream') throw wrongType(key, 'stream', t);
}

// A read failed: name the key of the wrong type if that is the cause (the usual one).
function explain(client, e) {
  const expected = [[PRODUCT, 'string'], [CUSTOMERS, 'stream'], [ORDERS, 'stream']];
  for (const [key, type] of expected) {
    const t = asString(client.call('TYPE', key));
    if (t !== 'none' && t !== type) return wrongType(key, type, t);
  }
  return e;
}

// Judge an order from its stored fields (reads only): [outcome, reason, customer shown].
function judge(client, fields) {
  let customer = null;
  let n = 0;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (asString(fields[i]) === 'customer') {
      customer = fields[i + 1];
      n++;
    }
  }
  if (n !== 1) return ['rejected', 'invalid', n === 0 ? '' : '<' + n + ' customer fields>'];
  // Long values cannot be ids; do not copy megabytes around just to reject them.
  if (customer.byteLength > 41) return ['rejected', 'invalid', '<' + customer.byteLength + ' bytes>'];
  const id = latin1(customer);
  if (!isStreamId(id)) return ['rejected', 'invalid', shown(id)];
  if (client.call('XRANGE', CUSTOMERS, id, id).length === 0) {
    return ['rejected', neverArrived(client, id) ? 'unknown-customer' : 'duplicate', id];
  }
  const stock = stockOf(client.call('GET', PRODUCT));
  if (stock === null || stock <= 0n) return ['sold-out', 'sold-out', id];
  return ['completed', null, id];
}

// Decide one order still in queue:orders (the steps of native_apply.lua): reads, then writes.
function decide(client, order, fields) {
  let verdict;
  try {
    verdict = judge(client, fields);
  } catch (e) {
    throw explain(client, e);
  }
  const [outcome, reason, customer] = verdict;
  requireStream(client, outcome === 'completed' ? COMPLETE : REJECTED);
  if (outcome === 'completed') {
    // The stock first: if anything failed after it, the sale could undersell but never oversell.
    client.call('DECR', PRODUCT);
    client.call('XADD', COMPLETE, '*', 'order', order, 'customer', customer);
  } else {
    client.call('XADD', REJECTED, '*', 'order', order, 'customer', customer, 'reason', reason);
  }
  if (outcome !== 'rejected') {
    // A waiting customer who got an answer is served: out of the queue, no second order.
    client.call('XDEL', CUSTOMERS, customer);
  }
  client.call('XDEL', ORDERS, order);
}

// Until this time (ms) the current interval is known to be sampled already. The library runs
// inside Redis, so Date.now() reads the clock TIME reads: most calls need not ask Redis anything.
let sampledUntil = 0;

// Same rule as sample.lua: one sample per queue per interval boundary, at the boundary time.
function maybeSample(client) {
  if (Date.now() < sampledUntil) return false;
  const t = client.call('TIME');
  const now = Number(asString(t[0])) * 1000 + Math.floor(Number(asString(t[1])) / 1000);
  const boundary = now - (now % INTERVAL_MS);
  // Sampled by this call or by an earlier one (here or in the native sampler): either way the next
  // sample is due at the next boundary.
  sampledUntil = boundary + INTERVAL_MS;
  const lastRaw = client.call('GET', SAMPLE_LAST);
  const last = lastRaw === null ? -1 : Number(asString(lastRaw));
  if (boundary <= last) return false;
  client.call('SET', SAMPLE_LAST, String(boundary));
  for (const stream of QUEUES) {
    let len = 0;
    let added = 0;
    if (Number(client.call('EXISTS', stream)) === 1) {
      len = Number(client.call('XLEN', stream));
      const info = client.call('XINFO', 'STREAM', stream);
      if (info && info['entries-added'] !== undefined) added = Number(info['entries-added']);
    }
    const prevRaw = client.call('HGET', SAMPLE_ADDED, stream);
    const prev = prevRaw === null ? 0 : Number(asString(prevRaw));
    let delta = added - prev;
    if (delta < 0) delta = added;
    client.call('HSET', SAMPLE_ADDED, stream, String(added));
    client.call('TS.ADD', 'ts:len:' + stream, String(boundary), String(len), 'ON_DUPLICATE', 'LAST');
    client.call('TS.ADD', 'ts:enqueue:' + stream, String(boundary), String(delta), 'ON_DUPLICATE', 'LAST');
  }
  return true;
}

// A failed step wrote nothing and leaves its order in queue:orders; say why where health checks look
// (`popup-operator sale --engine triggers`, the store's status), then let Gears record it too.
function recorded(client, order, e) {
  client.call('SET', ENGINE_ERROR, 'triggers: order ' + order + ': ' + String(e), 'PX', String(ERROR_TTL_MS));
  return e;
}

// Orders: decide each new entry of queue:orders. The prefix is literal; skip e.g. queue:orders2.
redis.registerStreamTrigger('popup_complete', ORDERS, function (client, data) {
  if (asString(data.stream_name) !== ORDERS) return;
  const order = data.id[0].toString() + '-' + data.id[1].toString();
  // The order is read back from the stream (gone: decided already) together with older ones still
  // there, left behind by an earlier failure: the trigger never calls back for those again.
  let waiting;
  try {
    waiting = client.callRaw('XRANGE', ORDERS, '-', order, 'COUNT', String(LEFTOVERS + 1));
  } catch (e) {
    throw recorded(client, order, explain(client, e));
  }
  for (const [id, fields] of waiting) {
    const left = latin1(id);
    try {
      decide(client, left, fields);
    } catch (e) {
      throw recorded(client, left, e);
    }
  }
}, { isStreamTrimmed: false, window: 1 });

// Metrics: every entry added to any queue: stream gives the sampler a chance to run.
redis.registerStreamTrigger('popup_metrics', 'queue:', function (client, data) {
  maybeSample(client);
}, { isStreamTrimmed: false, window: 1 });
