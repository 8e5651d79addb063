# popup-operator gears engine (RedisGears 1, Python): decide orders.
# The seed's complete.py with the rule set of docs/engines.md ("Deciding an order"), the same as the
# native Lua script and the triggers JavaScript library. Safe by construction: inside one atomic
# block, everything about an order is checked with reads first; the writes come after and cannot
# fail on anything the order contains. The script reads the order entry itself (XRANGE), so it judges
# exactly the fields stored in Redis, and an order no longer in queue:orders was already decided.
# Unlike the seed (batch=3 only), the reader also fires after __FLUSH_MS__ ms, so the last orders of a
# sale are processed even when fewer than a batch are waiting. This must be the only StreamReader
# whose prefix matches queue:orders: RedisGears 1 reads a stream through one consumer group shared by
# every registration on it, so a second reader would take orders away from this one.
# settings: batch=__BATCH__
import re

PRODUCT = 'product'
CUSTOMERS = 'queue:customers'
ORDERS = 'queue:orders'
COMPLETE = 'queue:complete'
REJECTED = 'queue:rejected'
ENGINE_ERROR = 'popup:engine:error'
SWEEP = 'popup:gears:sweep'
SWEEP_EVERY_MS = __SWEEP_EVERY_MS__
SWEEP_AFTER_MS = __SWEEP_AFTER_MS__
U64 = '18446744073709551615'
I64 = '9223372036854775807'
DIGITS = re.compile(r'^[1-9][0-9]*\Z')
STREAM_ID = re.compile(r'^([0-9]+)-([0-9]+)\Z')
STOCK = re.compile(r'^-?([0-9]+)\Z')
PRINTABLE = re.compile(r'^[\x20-\x7e]*\Z')


def text(v):
    # One char per byte, whether RedisGears 1 hands a reply over as str (UTF-8) or, when it is not
    # UTF-8, as bytearray: the checks and lengths are byte-exact, as in the other engines.
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode('latin-1')
    return str(v).encode('utf-8').decode('latin-1')


def canonical_uint(s, top):
    # A decimal without sign, spaces or leading zeros, at most `top`.
    if s == '0':
        return True
    if not DIGITS.match(s) or len(s) > len(top):
        return False
    return len(s) < len(top) or s <= top


def is_stream_id(s):
    # "<ms>-<seq>", both unsigned 64-bit: exactly the ids Redis stores.
    m = STREAM_ID.match(s)
    return m is not None and canonical_uint(m.group(1), U64) and canonical_uint(m.group(2), U64)


def stock_of(v):
    # Units left as Redis DECR reads them; None when missing or not an integer.
    s = text(v)
    if s is None:
        return None
    m = STOCK.match(s)
    if m is None or not canonical_uint(m.group(1), I64) or s == '-0':
        return None
    return int(s)


def shown(customer):
    if len(customer) <= 64 and PRINTABLE.match(customer):
        return customer
    return '<%d bytes>' % len(customer)


def wrong_type(key, kind, found):
    return Exception('popup: key %s holds a %s, not a %s; no order was decided '
                     '(delete or rename that key)' % (key, found, kind))


def require_stream(key):
    # Before writing to `key`: a stream or absent. (The other keys a step writes, product and the two
    # queues, it has read already, which fails on a wrong type before any write.)
    t = text(execute('TYPE', key))
    if t != 'none' and t != 'stream':
        raise wrong_type(key, 'stream', t)


def explain(e):
    # A read failed: name the key of the wrong type if that is the cause (the usual one).
    for key, kind in ((PRODUCT, 'string'), (CUSTOMERS, 'stream'), (ORDERS, 'stream')):
        t = text(execute('TYPE', key))
        if t != 'none' and t != kind:
            return wrong_type(key, kind, t)
    return e


def id_after(a, b):
    # Canonical stream ids compared as numbers: a > b.
    return tuple(int(x) for x in a.split('-')) > tuple(int(x) for x in b.split('-'))


def never_arrived(customer):
    # No entry with this id was ever in queue:customers: Redis never makes 0-0, and every id it ever
    # made is at most the stream's last-generated-id.
    if customer == '0-0' or int(execute('EXISTS', CUSTOMERS)) == 0:
        return True
    info = execute('XINFO', 'STREAM', CUSTOMERS)
    fields = dict((text(info[i]), info[i + 1]) for i in range(0, len(info) - 1, 2))
    return id_after(customer, text(fields['last-generated-id']))


def judge(fields):
    # (outcome, reason, customer shown) from the stored fields; reads only.
    values = [text(fields[i + 1]) for i in range(0, len(fields) - 1, 2) if text(fields[i]) == 'customer']
    if len(values) != 1:
        return 'rejected', 'invalid', '' if not values else '<%d customer fields>' % len(values)
    customer = values[0]
    if not is_stream_id(customer):
        return 'rejected', 'invalid', shown(customer)
    if not execute('XRANGE', CUSTOMERS, customer, customer):
        return 'rejected', 'unknown-customer' if never_arrived(customer) else 'duplicate', customer
    stock = stock_of(execute('GET', PRODUCT))
    if stock is None or stock <= 0:
        return 'sold-out', 'sold-out', customer
    return 'completed', None, customer


def decide(order):
    # Reads, then writes; nothing written can fail after the first write.
    try:
        entries = execute('XRANGE', ORDERS, order, order)
        if not entries:
            return 'skipped'
        outcome, reason, customer = judge(entries[0][1])
    except Exception as e:
        raise explain(e)
    require_stream(COMPLETE if outcome == 'completed' else REJECTED)
    if outcome == 'completed':
        # The stock first: if anything failed after it, the sale could undersell but never oversell.
        execute('DECR', PRODUCT)
        execute('XADD', COMPLETE, '*', 'order', order, 'customer', customer)
    else:
        execute('XADD', REJECTED, '*', 'order', order, 'customer', customer, 'reason', reason)
    if outcome != 'rejected':
        # A waiting customer who got an answer is served: out of the queue, no second order.
        execute('XDEL', CUSTOMERS, customer)
    execute('XDEL', ORDERS, order)
    return outcome


def decide_recorded(order):
    with atomic():
        try:
            decide(order)
        except Exception as e:
            # Nothing was written for this order; say why where health checks look, and let
            # RedisGears record the failure (lastError) too.
            execute('SET', ENGINE_ERROR, 'gears: order %s: %s' % (order, e), 'PX', '__ERROR_TTL_MS__')
            raise


# Complete order
def complete(x):
    decide_recorded(text(x['id']))
    # Keep the sweep below going (also after `simulate --reset` deleted its key).
    execute('SET', SWEEP, 1, 'PX', SWEEP_EVERY_MS, 'NX')
    return x


# The reader decides an order only when RedisGears reads it, and RedisGears reads when its own count of
# unread entries says so. That count falls short when a delivered entry was deleted before it was
# acknowledged (an execution cut by a restart: the order was decided, the acknowledgement lost), and
# then the last orders of a sale stay unread. So every SWEEP_EVERY_MS (a key that expires wakes it),
# orders older than SWEEP_AFTER_MS still in queue:orders are decided here. Deciding is idempotent: an
# order the reader decides meanwhile is found gone.
def sweep(x):
    execute('SET', SWEEP, 1, 'PX', SWEEP_EVERY_MS)
    t = execute('TIME')
    oldest_due = int(t[0]) * 1000 + int(t[1]) // 1000 - SWEEP_AFTER_MS
    for entry in execute('XRANGE', ORDERS, '-', str(oldest_due), 'COUNT', 100) or []:
        decide_recorded(text(entry[0]))


# Stream Reader for Orders queue. A failed batch is retried (every second) rather than skipped: with
# the default policy ('continue') RedisGears would acknowledge the batch's orders undecided.
# trimStream=False: each decided order leaves queue:orders inside its own atomic step above. RedisGears'
# own trimming is "XTRIM MAXLEN <the entries it believes unread>", a count that falls short after a
# restart with pending entries (and with a second reader on the stream), and then cuts undecided orders.
gb = GearsBuilder('StreamReader', desc='__DESC__')
gb.map(complete)
gb.register(prefix='queue:orders', batch=__BATCH__, duration=__FLUSH_MS__, trimStream=False,
            onFailedPolicy='retry', onFailedRetryInterval=1)
GB('KeysReader', desc='__DESC__').foreach(sweep).register(
    prefix=SWEEP, eventTypes=['expired'], readValue=False, mode='sync')
