# popup-operator gears engine (RedisGears 1, Python): queue metrics, the seed's timeseries.py.
# For every queue:* stream, each time the reader fires (every interval, or after 10000 entries):
#   ts:len:<stream>     = XLEN <stream>
#   ts:enqueue:<stream> = entries read from <stream> in this batch
# settings: interval_ms=__INTERVAL_MS__


# Add Time-Series
def tsAdd(x):
    xlen = execute('XLEN', x['key'])
    execute('TS.ADD', 'ts:len:' + x['key'], '*', xlen, 'ON_DUPLICATE', 'LAST')
    execute('TS.ADD', 'ts:enqueue:' + x['key'], '*', x['value'], 'ON_DUPLICATE', 'LAST')


# Stream Reader for any Queue
gb = GearsBuilder('StreamReader', desc='__DESC__')
gb.countby(lambda x: x['key']).map(tsAdd)
gb.register(prefix='queue:*', duration=__INTERVAL_MS__, batch=10000, trimStream=False)
