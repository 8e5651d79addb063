# popup-operator gears engine (RedisGears 1, Python): the queues' TimeSeries, with the sampling rule
# of sample.lua (native) and the triggers library: one sample per queue per interval, stamped with the
# interval's boundary:
#   ts:len:<stream>     = XLEN <stream>
#   ts:enqueue:<stream> = entries added to <stream> since the previous sample
# The seed's timeseries.py read every queue:* stream with a StreamReader, which on RedisGears 1 takes
# entries out of the one consumer group all readers of a stream share (it stole orders from the
# completion reader) and sees only the entries still there when it fires (customers and orders are
# deleted once decided). So nothing here reads a stream: a KeysReader counts each XADD as it happens
# (mode 'sync': inside the XADD itself), and Redis 6.2 has no `entries-added` to ask instead.
# When no entry arrives, a key that expires at the next boundary is the clock.
# settings: interval_ms=__INTERVAL_MS__
import time

INTERVAL_MS = __INTERVAL_MS__
QUEUES = ('queue:customers', 'queue:orders', 'queue:complete', 'queue:rejected')
LAST = 'popup:ts:last'
COUNTS = 'popup:ts:count'
CLOCK = 'popup:ts:clock'
# Until this time (ms, the clock TIME reads: the script runs inside Redis) the current interval is
# known to be sampled: most XADDs need no Redis command but their count.
sampled_until = [0]


def sample():
    t = execute('TIME')
    now = int(t[0]) * 1000 + int(t[1]) // 1000
    boundary = now - now % INTERVAL_MS
    sampled_until[0] = boundary + INTERVAL_MS
    # Rewind the clock to the next boundary (also after `simulate --reset` deleted it).
    execute('SET', CLOCK, boundary, 'PX', boundary + INTERVAL_MS - now)
    last = execute('GET', LAST)
    if last is not None and int(last) >= boundary:
        return
    # Reads first: a queue of the wrong type fails here, before anything is written.
    lengths = [execute('XLEN', q) for q in QUEUES]
    counts = execute('HGETALL', COUNTS) or []
    added = dict((counts[i], counts[i + 1]) for i in range(0, len(counts) - 1, 2))
    execute('SET', LAST, boundary)
    execute('DEL', COUNTS)
    for q, length in zip(QUEUES, lengths):
        execute('TS.ADD', 'ts:len:' + q, boundary, length, 'ON_DUPLICATE', 'LAST')
        execute('TS.ADD', 'ts:enqueue:' + q, boundary, added.get(q, 0), 'ON_DUPLICATE', 'LAST')


def on_xadd(x):
    try:
        if time.time() * 1000 >= sampled_until[0]:
            sample()
    finally:
        # After the sample: an entry added after the boundary belongs to the next interval.
        if x['key'] in QUEUES:
            execute('HINCRBY', COUNTS, x['key'], 1)


def on_clock(x):
    sample()


GB('KeysReader', desc='__DESC__').foreach(on_xadd).register(
    prefix='queue:*', eventTypes=['xadd'], readValue=False, mode='sync')
GB('KeysReader', desc='__DESC__').foreach(on_clock).register(
    prefix=CLOCK, eventTypes=['expired'], readValue=False, mode='sync')
