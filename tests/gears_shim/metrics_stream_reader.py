# Test fixture: the queue metrics as the seed's timeseries.py did them, and popup-operator's gears
# engine until it was run on a real RedisGears 1 (registered in the session popup-timeseries). A
# StreamReader on every queue:* stream: on RedisGears 1 it reads through the same consumer group as
# the completion reader and takes the orders it finds unread when it fires. tests/gears_runtime.rs
# shows that on both runtimes, and that loading the current scripts over it decides those orders.
# settings: interval_ms=__INTERVAL_MS__


def record(x):
    execute('TS.ADD', 'ts:len:' + x['key'], '*', execute('XLEN', x['key']), 'ON_DUPLICATE', 'LAST')
    execute('TS.ADD', 'ts:enqueue:' + x['key'], '*', x['value'], 'ON_DUPLICATE', 'LAST')


gb = GearsBuilder('StreamReader', desc='popup-timeseries sha=before')
gb.countby(lambda x: x['key']).map(record)
gb.register(prefix='queue:*', duration=__INTERVAL_MS__, batch=10000, trimStream=False)
