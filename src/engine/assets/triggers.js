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
const DONE = 'popup:orders:done';
const SAMPLE_LAST = 'popup:ts:last';
const SAMPLE_ADDED = 'popup:ts:added';

function isStreamId(s) {
  return /^\d+(-\d+)?$/.test(s);
}

function asString(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (v instanceof ArrayBuffer) return String.fromCharCode.apply(null, new Uint8Array(v));
  return String(v);
}

function reject(client, order, customer, reason) {
  client.call('XADD', REJECTED, '*', 'order', order, 'customer', customer, 'reason', reason);
  if (isStreamId(customer)) client.call('XDEL', CUSTOMERS, customer);
}

// Decide one order (the same steps as native_apply.lua).
function decide(client, order, customer) {
  if (Number(client.call('SADD', DONE, order)) === 0) {
    client.call('XDEL', ORDERS, order);
    return 'skipped';
  }
  let outcome;
  if (!isStreamId(customer)) {
    reject(client, order, customer, 'invalid');
    outcome = 'rejected';
  } else if (Number(client.call('SADD', SERVED, customer)) === 0) {
    reject(client, order, customer, 'duplicate');
    outcome = 'rejected';
  } else {
    const stock = Number(asString(client.call('GET', PRODUCT)) || '0') || 0;
    if (stock > 0) {
      client.call('XADD', COMPLETE, '*', 'order', order, 'customer', customer);
      client.call('XDEL', CUSTOMERS, customer);
      client.call('DECR', PRODUCT);
      outcome = 'completed';
    } else {
      reject(client, order, customer, 'sold-out');
      outcome = 'rejected';
    }
  }
  client.call('XDEL', ORDERS, order);
  return outcome;
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
  let customer = '';
  for (const pair of data.record) {
    if (asString(pair[0]) === 'customer') customer = asString(pair[1]);
  }
  decide(client, order, customer);
}, { isStreamTrimmed: false, window: 1 });

// Metrics: every entry added to any queue: stream gives the sampler a chance to run.
redis.registerStreamTrigger('popup_metrics', 'queue:', function (client, data) {
  maybeSample(client);
}, { isStreamTrimmed: false, window: 1 });
