# popup-operator gears engine (RedisGears 1, Python): complete orders.
# The seed's complete.py plus the contract's rules (docs/engines.md), identical to the native Lua
# script and the triggers JavaScript library:
#   * an order already decided (entry id in popup:orders:done) is skipped (at-least-once reader);
#   * a customer whose order was already decided -> rejected, reason "duplicate";
#   * product <= 0 (or missing) -> rejected, reason "sold-out"; product never goes below zero;
#   * otherwise: XADD queue:complete, XDEL the customer's entry, DECR product.
# The order itself leaves queue:orders through trimStream=True.
# Unlike the seed (batch=3 only), the reader also fires after __FLUSH_MS__ ms, so the last orders of a
# sale are processed even when fewer than a batch are waiting.
# settings: batch=__BATCH__
import re

SERVED = 'popup:customers:served'
DONE = 'popup:orders:done'
STREAM_ID = re.compile(r'^\d+(-\d+)?$')


def is_stream_id(s):
    return s is not None and STREAM_ID.match(s) is not None


def reject(order, customer, reason):
    execute('XADD', 'queue:rejected', '*', 'order', order,
            'customer', customer, 'reason', reason)
    if is_stream_id(customer):
        execute('XDEL', 'queue:customers', customer)


# Complete order
def complete(x):
    order = x['id']
    customer = x['value'].get('customer', '')
    with atomic():
        if int(execute('SADD', DONE, order)) == 0:
            return x
        if not is_stream_id(customer):
            reject(order, customer, 'invalid')
        elif int(execute('SADD', SERVED, customer)) == 0:
            reject(order, customer, 'duplicate')
        else:
            stock = execute('GET', 'product')
            try:
                stock = int(stock)
            except (TypeError, ValueError):
                stock = 0
            if stock > 0:
                execute('XADD', 'queue:complete', '*', 'order', order,
                        'customer', customer)
                execute('XDEL', 'queue:customers', customer)
                execute('DECR', 'product')
            else:
                reject(order, customer, 'sold-out')
    return x


# Stream Reader for Orders queue
gb = GearsBuilder('StreamReader', desc='__DESC__')
gb.map(complete)
gb.register(prefix='queue:orders', batch=__BATCH__, duration=__FLUSH_MS__, trimStream=True)
