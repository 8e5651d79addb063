//! The key names of the sale contract (`docs/engines.md`): their single source in code.

use std::time::Duration;

/// String counter: units left. Set to the stock when a sale starts (`marker::start`; `simulate --reset` by hand).
pub const PRODUCT: &str = "product";
/// Stream of arrived customers, field `id`. An entry is removed once the customer's order is decided.
pub const QUEUE_CUSTOMERS: &str = "queue:customers";
/// Stream of orders, fields `id` and `customer` (= the customer's entry id in `queue:customers`).
pub const QUEUE_ORDERS: &str = "queue:orders";
/// Stream of completed orders, fields `order` (= order entry id) and `customer`.
pub const QUEUE_COMPLETE: &str = "queue:complete";
/// Stream of rejected orders, fields `order`, `customer`, `reason` (`sold-out`, `duplicate`,
/// `unknown-customer`, `invalid`).
pub const QUEUE_REJECTED: &str = "queue:rejected";
/// The streams that get TimeSeries samples (`ts:len:<stream>`, `ts:enqueue:<stream>`).
pub const QUEUES: [&str; 4] = [QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_COMPLETE, QUEUE_REJECTED];
/// Prefix of every queue stream.
pub const QUEUE_PREFIX: &str = "queue:";
/// Prefix of the stream-length series: `ts:len:queue:orders`.
pub const TS_LEN_PREFIX: &str = "ts:len:";
/// Prefix of the entries-added-per-interval series: `ts:enqueue:queue:orders`.
pub const TS_ENQUEUE_PREFIX: &str = "ts:enqueue:";
/// The last failure of an engine to decide an order (string with a TTL of [`ENGINE_ERROR_TTL`]):
/// written by every engine, read by [`engine_health`](super::engine_health).
pub const ENGINE_ERROR: &str = "popup:engine:error";
/// How long a recorded engine failure keeps the engine unhealthy.
pub const ENGINE_ERROR_TTL: Duration = Duration::from_secs(300);
/// An order waiting longer than this means the engine is not deciding orders.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);
/// Timestamp (ms, interval boundary) of the last TimeSeries sample written by any engine.
pub const SAMPLE_LAST: &str = "popup:ts:last";
/// Hash stream -> `entries-added` at the last sample, to compute `ts:enqueue:*` deltas.
pub const SAMPLE_ADDED: &str = "popup:ts:added";
/// gears engine: entries added to each queue since the last sample (hash; Redis 6.2 has no
/// `entries-added` to ask instead).
pub const SAMPLE_COUNTS: &str = "popup:ts:count";
/// gears engine: a key that expires at the next sample boundary and so wakes the metrics script
/// when no entry arrives.
pub const SAMPLE_CLOCK: &str = "popup:ts:clock";
/// gears engine: a key that expires every second and so wakes the sweep of orders the reader missed.
pub const GEARS_SWEEP: &str = "popup:gears:sweep";
/// Heartbeat key prefix of native workers: `popup:worker:<consumer>` with a TTL.
pub const WORKER_HEARTBEAT_PREFIX: &str = "popup:worker:";
/// Rejection reasons.
pub const REASON_SOLD_OUT: &str = "sold-out";
pub const REASON_DUPLICATE: &str = "duplicate";
pub const REASON_UNKNOWN_CUSTOMER: &str = "unknown-customer";
pub const REASON_INVALID: &str = "invalid";

/// `ts:len:<stream>`
pub fn ts_len_key(stream: &str) -> String {
    format!("{TS_LEN_PREFIX}{stream}")
}

/// `ts:enqueue:<stream>`
pub fn ts_enqueue_key(stream: &str) -> String {
    format!("{TS_ENQUEUE_PREFIX}{stream}")
}
