#!js api_version=1.0 name=popup
// popup-operator triggers engine (RedisGears 2 "triggers and functions", redis-stack 7.x).
// settings: batch=__BATCH__ interval_ms=__INTERVAL_MS__
//
// The rules are the ones of docs/engines.md, identical to the native Lua script and the gears
// Python script. A stream trigger callback runs atomically, so each order is decided atomically.
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
const SERVED = 'popup:customers:served';
const SAMPLE_LAST = 'popup:ts:last';
const SAMPLE_ADDED = 'popup:ts:added';
const ENGINE_ERROR = 'popup:engine:error';
const ERROR_TTL_MS = __ERROR_TTL_MS__;
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

// Keys of the wrong type would make a write fail halfway: refuse before any write.
function checkTypes(client) {
  const expected = [[PRODUCT, 'string'], [CUSTOMERS, 'stream'], [ORDERS, 'stream'], [COMPLETE, 'stream'],
    [REJECTED, 'stream'], [SERVED, 'set']];
  for (const [key, type] of expected) {
    const t = asString(client.call('TYPE', key));
    if (t !== 'none' && t !== type) {
      throw new Error('popup: key ' + key + ' holds a ' + t + ', not a ' + type +
        '; no order was decided (delete or rename that key)');
    }
  }
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
    if (Number(client.call('SISMEMBER', SERVED, id)) === 1) return ['rejected', 'duplicate', id];
    return ['rejected', 'unknown-customer', id];
  }
  const stock = stockOf(client.call('GET', PRODUCT));
  if (stock === null || stock <= 0n) return ['sold-out', 'sold-out', id];
  return ['completed', null, id];
}

// Decide one order (the steps of native_apply.lua). Returns the outcome.
function decide(client, order) {
  checkTypes(client);
  const entries = client.callRaw('XRANGE', ORDERS, order, order);
  if (entries.length === 0) return 'skipped';
  const [outcome, reason, customer] = judge(client, entries[0][1]);
  if (outcome === 'completed') {
    // The stock first: if anything failed after it, the sale could undersell but never oversell.
    client.call('DECR', PRODUCT);
    client.call('SADD', SERVED, customer);
    client.call('XDEL', CUSTOMERS, customer);
    client.call('XADD', COMPLETE, '*', 'order', order, 'customer', customer);
  } else {
    if (outcome === 'sold-out') {
      client.call('SADD', SERVED, customer);
      client.call('XDEL', CUSTOMERS, customer);
    }
    client.call('XADD', REJECTED, '*', 'order', order, 'customer', customer, 'reason', reason);
  }
  client.call('XDEL', ORDERS, order);
  return outcome === 'completed' ? 'completed' : 'rejected';
}

// A failed decision wrote nothing and leaves the order in queue:orders; say why where health checks
// look (`popup-operator sale --engine triggers`, the store's status), then let Gears record it too.
function decideOrRecord(client, order) {
  try {
    return decide(client, order);
  } catch (e) {
    client.call('SET', ENGINE_ERROR, 'triggers: order ' + order + ': ' + String(e), 'PX', String(ERROR_TTL_MS));
    throw e;
  }
}

// Same rule as sample.lua: one sample per queue per interval boundary, at the boundary time.
function maybeSample(client) {
  const t = client.call('TIME');
  const now = Number(asString(t[0])) * 1000 + Math.floor(Number(asString(t[1])) / 1000);
  const boundary = now - (now % INTERVAL_MS);
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

// Orders: decide each new entry of queue:orders. The prefix is literal; skip e.g. queue:orders2.
redis.registerStreamTrigger('popup_complete', ORDERS, function (client, data) {
  if (asString(data.stream_name) !== ORDERS) return;
  const order = data.id[0].toString() + '-' + data.id[1].toString();
  // Orders left behind by an earlier failure (e.g. a key of the wrong type, since fixed) come first:
  // the trigger never calls back for them again.
  for (const left of client.call('XRANGE', ORDERS, '-', '(' + order, 'COUNT', '10')) {
    decideOrRecord(client, asString(left[0]));
  }
  decideOrRecord(client, order);
}, { isStreamTrimmed: false, window: 1 });

// Metrics: every entry added to any queue: stream gives the sampler a chance to run.
redis.registerStreamTrigger('popup_metrics', 'queue:', function (client, data) {
  maybeSample(client);
}, { isStreamTrimmed: false, window: 1 });
