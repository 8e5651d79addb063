//! Load generator: the seed's `pop-up-store.js` in Rust, fast enough to flood an engine.
//!
//! `SET product <stock>`; a new customer every random 0–`max_arrival` ms (or at a fixed `rate`
//! per second): `XADD queue:customers * id <n>`; each customer orders once, random
//! 0–`max_order_delay` ms later: `XADD queue:orders * id <n> customer <customer entry id>`.
//! Stops after `customers` customers (0 = when `product` reaches 0), then optionally waits until
//! every order it sent was decided (completed or rejected).
//!
//! Writes go out in batches: whatever is due when the sender wakes (the customers whose arrival
//! time has come, the orders whose delay is over) becomes one batch, and up to [`WINDOW`] batches
//! are in flight on one multiplexed connection. Arrival times follow a schedule fixed at the start
//! (customer `k` at `k / rate`, or after the previous one plus a random gap), so a slow write
//! delays a customer but never thins the crowd: the next batch carries everyone whose time came.
//!
//! Two entry points: [`run`] on a connection the caller owns (a pipeline of plain `XADD`s per
//! batch; fails at the first Redis error), and [`run_resilient`], which the `simulate` command
//! uses: it reconnects and retries writes for a bounded time when Redis goes away, without
//! sending a customer or an order twice.
//!
//! Both drive the same run: `state::RunState` decides each step with no Redis in it (which customers
//! and orders go out in the next batch, what a batch's outcome or a reading of the sale changes, when
//! the sending is over, the progress and summary numbers); `Simulation` below writes the batches,
//! reads the sale and waits for whichever comes first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use serde::Serialize;
use tokio::task::{JoinError, JoinHandle};

use super::{
    EngineError, PRODUCT, QUEUE_CUSTOMERS, QUEUE_ORDERS, RedisConn, Result, SaleSnapshot, connect_manager, read_sale,
};
use super::{functions, marker};

mod state;
use state::{Outcome, RunState, Timing};

/// How to run the sale.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Units of product (`SET product <stock>`). 0 sends no customers.
    pub stock: i64,
    /// Customers to send; 0 = until `product` reaches 0.
    pub customers: u64,
    /// Random arrival gap upper bound (ignored when `rate` is set).
    pub max_arrival: Duration,
    /// Random delay between a customer's arrival and their order.
    pub max_order_delay: Duration,
    /// Fixed arrival rate (customers per second) instead of random gaps.
    pub rate: Option<f64>,
    /// Delete the sale's keys (queues, product, ts:*, popup:*) before starting.
    pub reset: bool,
    /// Join the sale the operator started with this id (its marker, `popup:sale`) instead of setting
    /// up one: no reset, no `SET product` (the stock is the marker's), and customers are written only
    /// while Redis holds that sale.
    pub join: Option<String>,
    /// After sending, wait up to this long until every order sent was completed or rejected.
    pub wait_complete: Option<Duration>,
    /// Stop sending new customers after this long (safety net for `customers = 0`). A pending
    /// arrival gap or order delay that would end later is cut at this deadline.
    pub max_duration: Option<Duration>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            stock: 100,
            customers: 0,
            max_arrival: Duration::from_millis(100),
            max_order_delay: Duration::from_millis(1000),
            rate: None,
            reset: false,
            join: None,
            wait_complete: None,
            max_duration: None,
        }
    }
}

/// How [`run_resilient`] rides out Redis going away.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// Keep retrying a failed command this long (counted from its first failure) before giving
    /// up. Zero stops at the first failure.
    pub retry_for: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience { retry_for: Duration::from_secs(30) }
    }
}

/// Progress, reported about five times a second.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Progress {
    /// Customers written so far.
    pub customers: u64,
    /// Orders written so far.
    pub orders: u64,
    pub product: Option<i64>,
    pub completed: u64,
    pub rejected: u64,
    /// Since the first customer could arrive.
    pub elapsed_millis: u64,
    /// Still writing customers or orders; false while waiting for the orders to be decided.
    pub sending: bool,
}

/// The final numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSummary {
    pub stock: i64,
    /// Customers written to `queue:customers`.
    pub customers: u64,
    /// Orders written to `queue:orders` (at most one per customer).
    pub orders: u64,
    /// Customers whose order was not written because the run stopped early (0 when it finished).
    pub orders_not_sent: u64,
    /// Orders completed during this run (growth of `queue:complete`).
    pub completed: u64,
    /// Orders rejected during this run (growth of `queue:rejected`).
    pub rejected: u64,
    pub product_left: Option<i64>,
    /// Every order sent was decided (only meaningful with `wait_complete`).
    pub all_processed: bool,
    /// The whole run, including the wait for decisions.
    pub duration_secs: f64,
    /// Customers per second actually sent: `customers / arrivalSecs`.
    pub customers_per_sec: f64,
    /// The asked `rate`, if any.
    pub target_rate: Option<f64>,
    /// The lowest arrival rate measured over one window (a second or more) while sending at `rate`.
    pub lowest_rate: Option<f64>,
    /// Some window's rate fell more than 5% short of `rate`.
    pub behind_rate: bool,
    /// Times the connection to Redis failed and the run carried on after it came back.
    pub reconnects: u64,
    /// Why the run stopped early; `None` when it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds from the start until the arrivals ended (the last customer written, the deadline,
    /// the stock sold out, or a stop).
    pub arrival_secs: f64,
    /// Seconds from the start until every customer and order was written (orders trail their
    /// customers by up to `max_order_delay`).
    pub send_secs: f64,
}

/// Delete every key of the sale (`marker::sale_keys`): what `--reset` does by hand. The operator
/// starts its sales with `marker::start`, which also sets the stock and the marker, in one transaction.
pub async fn reset(conn: &mut impl RedisConn) -> Result<()> {
    let keys = super::marker::sale_keys(conn).await?;
    for chunk in keys.chunks(500) {
        let _: Value =
            redis::cmd("DEL").arg(chunk).query_async(conn).await.map_err(|e| EngineError::command("DEL (reset)", e))?;
    }
    Ok(())
}

/// Where the run's warnings go (Redis lost or back, a rate it cannot hold, the deadline). Called
/// from several tasks, hence `Send + Sync`.
pub type Warn = Arc<dyn Fn(&str) + Send + Sync>;

/// The default [`Warn`]: a `tracing` warning.
pub fn log_warning(message: &str) {
    tracing::warn!("{message}");
}

/// Run the sale on `conn`. The first Redis error ends the run with that error (use
/// [`run_resilient`] to survive a Redis restart). `progress` is called about five times a second.
pub async fn run<C: RedisConn + Clone + Sync + 'static>(
    conn: &mut C,
    cfg: &SimulatorConfig,
    progress: impl FnMut(&Progress),
) -> Result<SimulationSummary> {
    let link = Link::new(conn.clone(), "Redis".into(), None, cfg.join.clone(), Arc::new(log_warning));
    let summary = simulate(link, cfg, progress).await?;
    match summary.error {
        Some(e) => Err(EngineError::Other(e)),
        None => Ok(summary),
    }
}

/// Run the sale on a reconnecting connection to `url`. When Redis goes away mid-run, every
/// command is retried (with backoff) until Redis answers again or `resilience.retry_for` has
/// passed; customers and orders are written idempotently, so a write whose reply was lost is not
/// repeated. When Redis comes back without `product` (it restarted without persistence: the
/// sale's data is gone), no further customer or order is written. Warnings go to `warn`.
///
/// Errors before the first customer (connecting, `--reset`, `SET product`) are returned as `Err`;
/// a run that stops later returns `Ok` with [`SimulationSummary::error`] set and the counts of
/// what was written.
pub async fn run_resilient(
    url: &str,
    password: Option<&str>,
    cfg: &SimulatorConfig,
    resilience: &Resilience,
    progress: impl FnMut(&Progress),
    warn: Warn,
) -> Result<SimulationSummary> {
    // A Job's pod may start before Redis is reachable from it; a person who typed a wrong address wants
    // to hear it at once.
    let first_wait = if cfg.join.is_some() { resilience.retry_for } else { Duration::ZERO };
    let (conn, addr) = first_connection(url, password, first_wait, &warn).await?;
    let link = Link::new(conn, addr, Some(resilience.retry_for), cfg.join.clone(), warn);
    simulate(link, cfg, progress).await
}

/// The first connection, retried like every later command for up to `retry_for` while Redis refuses
/// or does not answer: a Job's pod may start before Redis is reachable from it (a NetworkPolicy engine
/// admits a new pod's address a moment after it starts; Redis may be restarting). A wrong password or
/// URL fails at once.
pub async fn first_connection(
    url: &str,
    password: Option<&str>,
    retry_for: Duration,
    warn: &Warn,
) -> Result<(redis::aio::ConnectionManager, String)> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        match connect_manager(url, password).await {
            Err(EngineError::Connect { addr, source }) if started.elapsed() < retry_for => {
                if !std::mem::replace(&mut warned, true) {
                    warn(&format!(
                        "cannot reach Redis at {addr} yet ({source}); retrying for up to {}s",
                        retry_for.as_secs()
                    ));
                }
                tokio::time::sleep(backoff.min(retry_for.saturating_sub(started.elapsed()))).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

// ---- batches ---------------------------------------------------------------------------------------

/// Most customers, and separately most orders, in one batch: big enough that a round trip carries
/// a lot, small enough that one script call keeps Redis busy for only a few milliseconds.
const BATCH: usize = 500;
/// Batches in flight at once. Also the number of replies the run's log keeps (see
/// [`SEND_BATCH_LUA`]): batch `b` is only sent once batch `b - WINDOW` was acknowledged, which the
/// in-order queue of batches in flight guarantees.
pub const WINDOW: usize = 4;
/// Shortest sleep while waiting for the next arrival or order: at a high fixed rate a tick carries
/// many customers instead of each customer costing a timer wake-up.
const MIN_TICK: Duration = Duration::from_millis(2);
/// How often the sale is read for progress (and, with `customers = 0`, for the stock left).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Most orders waiting for their delay (plus customers in flight, whose orders will wait too):
/// beyond this, arrivals pause until orders go out, so hour-long order delays at full speed cannot
/// eat the memory (each waiting order takes about 80 bytes).
const MAX_WAITING_ORDERS: usize = 1_000_000;
/// After the deadline, customers at a fixed rate who arrived before it but still wait for a free
/// slot in the window go out for at most this long: a rate the simulator holds sends exactly the
/// customers due, one it cannot hold stops this late.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// A crashed simulator's log hash disappears after this.
const SENT_LOG_TTL_MS: u64 = 24 * 3600 * 1000;

/// Writes one batch exactly once, even when retried: the first call adds the customers and the
/// orders and records the customers' entry ids in the run's log hash under the batch number; a
/// retry finds them there and returns them without writing. Script effects are applied and
/// persisted as a unit, so the log entry and the stream entries are either all there or all
/// gone. Writes nothing and returns nil when `product` is missing, i.e. the sale is not there any
/// more.
///
/// The log stays small: the client sends batch `b` only after every batch up to `b - window` was
/// acknowledged, so writing `b` raises the log's `acked` mark to `b - window` and deletes the
/// entries up to it (batches can reach Redis out of order, hence "up to"). The log thus holds at
/// most `window` entries and the mark. A batch at or below the mark was written and
/// acknowledged; a copy of it that reaches Redis late (sent on a connection the client already
/// gave up) is refused instead of written again.
///
/// Which sale: a run that joined the operator's sale writes only while its join key
/// (`popup:sale:<id>`) exists, so it never writes into a Redis that lost the sale, nor into the next
/// sale started after it; a run of its own (`--reset`, by hand) only while `product` exists.
/// KEYS: queue:customers, queue:orders, log hash.
/// ARGV: batch number, window, log TTL (ms; 0: none), first customer number, number of customers, the
/// join key (joined) or `product`, then one (order number, customer entry id) pair per order. The
/// sale's key is an argument, not a declared key: Redis 7 checks declared keys for writing, and the
/// simulator's user may only read it.
/// Returns the customers' entry ids, separated by spaces.
pub const SEND_BATCH_LUA: &str = r"
local log, batch = KEYS[3], ARGV[1]
local sent = redis.call('HGET', log, batch)
if sent then return sent end
local acked = tonumber(redis.call('HGET', log, 'acked') or '0')
if tonumber(batch) <= acked then
  return redis.error_reply('ERR simulator batch ' .. batch .. ' was written and acknowledged already')
end
if redis.call('EXISTS', ARGV[6]) == 0 then return false end
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = {}
for i = 0, count - 1 do
  ids[i + 1] = redis.call('XADD', KEYS[1], '*', 'id', string.format('%d', first + i))
end
for i = 7, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'customer', ARGV[i + 1])
end
local reply = table.concat(ids, ' ')
redis.call('HSET', log, batch, reply)
local done = tonumber(batch) - tonumber(ARGV[2])
if done > acked then
  local gone = {}
  for b = acked + 1, done do gone[#gone + 1] = string.format('%d', b) end
  redis.call('HDEL', log, unpack(gone))
  redis.call('HSET', log, 'acked', string.format('%d', done))
end
if ARGV[3] ~= '0' then redis.call('PEXPIRE', log, ARGV[3]) end
return reply
";

/// What one batch carries: customers `first ..= first + customers - 1` and some orders.
struct Batch {
    number: u64,
    first: u64,
    customers: u64,
    /// (customer number, customer entry id)
    orders: Vec<(u64, String)>,
}

/// The connection plus what is needed to retry on it; cheap to clone into batch tasks.
#[derive(Clone)]
struct Link<C> {
    conn: C,
    shared: Arc<LinkShared>,
}

struct LinkShared {
    addr: String,
    /// `None`: no retries, a pipeline of plain XADDs (the behaviour of [`run`]).
    retry_for: Option<Duration>,
    /// Key of this run's log hash (resilient mode).
    sent_log: String,
    /// The operator's sale this run joined (`SimulatorConfig::join`).
    join: Option<String>,
    /// How a joined run calls the batch script the operator loaded (`functions::SEND_BATCH`); a run of
    /// its own loads the script itself (`script`).
    caller: functions::Caller,
    script: redis::Script,
    down: AtomicBool,
    reconnects: AtomicU64,
    warn: Warn,
}

fn retryable(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    e.kind() != redis::ErrorKind::AuthenticationFailed
        && matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}

fn retryable_engine_error(e: &EngineError) -> bool {
    matches!(e, EngineError::Command { source, .. } if retryable(source))
}

/// Turns an [`EngineError`] back into the Redis error it wraps, so `retrying` can judge it.
fn as_redis_error(what: &'static str, e: EngineError) -> redis::RedisError {
    match e {
        EngineError::Command { source, .. } => source,
        other => redis::RedisError::from((redis::ErrorKind::Client, what, other.to_string())),
    }
}

/// Splits the script's reply into the customers' entry ids.
fn customer_ids(reply: &str, expected: u64) -> std::result::Result<Vec<String>, String> {
    let ids: Vec<String> = reply.split_ascii_whitespace().map(str::to_string).collect();
    if ids.len() as u64 != expected {
        return Err(format!("a batch of {expected} customers came back with {} entry ids", ids.len()));
    }
    Ok(ids)
}

impl<C: RedisConn + Clone + Sync + 'static> Link<C> {
    fn new(conn: C, addr: String, retry_for: Option<Duration>, join: Option<String>, warn: Warn) -> Self {
        let run_id: u64 = rand::rng().random();
        Link {
            conn,
            shared: Arc::new(LinkShared {
                addr,
                retry_for,
                sent_log: format!("popup:simulator:{run_id:016x}"),
                join,
                caller: functions::Caller::new(),
                script: redis::Script::new(SEND_BATCH_LUA),
                down: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
                warn,
            }),
        }
    }

    fn resilient(&self) -> bool {
        self.shared.retry_for.is_some()
    }

    fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    fn warn(&self, message: &str) {
        (self.shared.warn)(message);
    }

    /// Run `attempt` (on a fresh clone of the connection each time) until it succeeds, retrying
    /// connection-type failures with backoff for up to `retry_for`.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let s = &self.shared;
        let mut first_failure: Option<Instant> = None;
        let mut backoff = Duration::from_millis(20);
        loop {
            match attempt(self.conn.clone()).await {
                Ok(v) => {
                    if first_failure.is_some() && s.down.swap(false, Ordering::Relaxed) {
                        s.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.warn(&format!("Redis at {} answers again; carrying on", s.addr));
                    }
                    return Ok(v);
                }
                Err(e) => {
                    let Some(limit) = s.retry_for.filter(|_| retryable(&e)) else {
                        let what = if s.retry_for.is_some() { format!("{what} on {}", s.addr) } else { what.into() };
                        return Err(EngineError::command(what, e));
                    };
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    if !s.down.swap(true, Ordering::Relaxed) {
                        let what = if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain) {
                            "waiting for"
                        } else {
                            "lost"
                        };
                        self.warn(&format!(
                            "{what} Redis at {} ({e}); retrying for up to {}s",
                            s.addr,
                            limit.as_secs()
                        ));
                    }
                    if since.elapsed() >= limit {
                        return Err(EngineError::Other(format!(
                            "Redis at {} did not answer for {}s ({what}: {e}); is it running? \
                             (--reconnect-seconds sets how long to wait)",
                            s.addr,
                            limit.as_secs()
                        )));
                    }
                    tokio::time::sleep(backoff.min(limit.saturating_sub(since.elapsed()))).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn cmd<T: redis::FromRedisValue + Send + 'static>(&self, what: &str, cmd: redis::Cmd) -> Result<T> {
        self.retrying(what, |mut c| {
            let cmd = cmd.clone();
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// Write a batch. `Ok(Some(ids))`: written, with the customers' entry ids in order;
    /// `Ok(None)`: the sale is gone (resilient mode only), nothing was written.
    async fn send(&self, batch: Batch) -> Result<Option<Vec<String>>> {
        let s = &self.shared;
        if !self.resilient() {
            let mut pipe = redis::pipe();
            for n in batch.first..batch.first + batch.customers {
                pipe.cmd("XADD").arg(QUEUE_CUSTOMERS).arg("*").arg("id").arg(n);
            }
            for (n, customer) in &batch.orders {
                pipe.cmd("XADD").arg(QUEUE_ORDERS).arg("*").arg("id").arg(*n).arg("customer").arg(customer);
            }
            let mut c = self.conn.clone();
            let mut ids: Vec<String> =
                pipe.query_async(&mut c).await.map_err(|e| EngineError::command("XADD queue:customers/orders", e))?;
            ids.truncate(batch.customers as usize);
            return Ok(Some(ids));
        }
        let sale_key = s.join.as_deref().map_or_else(|| PRODUCT.to_string(), marker::join_key);
        // A joined run's log goes with the sale (the next start deletes it): its user may not expire keys.
        let ttl = if s.join.is_some() { 0 } else { SENT_LOG_TTL_MS };
        let keys = [QUEUE_CUSTOMERS, QUEUE_ORDERS, s.sent_log.as_str()];
        let mut args: Vec<String> = vec![
            batch.number.to_string(),
            WINDOW.to_string(),
            ttl.to_string(),
            batch.first.to_string(),
            batch.customers.to_string(),
            sale_key,
        ];
        for (n, customer) in &batch.orders {
            args.extend([n.to_string(), customer.clone()]);
        }
        let (keys, args) = (&keys, &args);
        let reply: Option<String> = self
            .retrying("writing customers and orders", |mut c| async move {
                if s.join.is_none() {
                    let mut inv = s.script.prepare_invoke();
                    for k in keys {
                        inv.key(*k);
                    }
                    inv.arg(args);
                    return inv.invoke_async(&mut c).await;
                }
                s.caller.call(&mut c, &functions::SEND_BATCH, keys, args).await.map_err(|e| match e {
                    // Redis restarted and the operator has not loaded the script again yet: wait for it.
                    EngineError::ScriptMissing { .. } => redis::RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
                        "the operator has not loaded the simulator's script yet",
                        e.to_string(),
                    )),
                    other => as_redis_error("writing customers and orders", other),
                })
            })
            .await?;
        match reply {
            None => Ok(None),
            Some(text) => customer_ids(&text, batch.customers)
                .map(Some)
                .map_err(|detail| EngineError::Protocol { command: "the simulator's batch script".into(), detail }),
        }
    }

    /// Delete this run's log: every batch was acknowledged, nothing will be retried. A joined run
    /// leaves it to the next start of a sale (its user may not delete keys).
    async fn drop_log(&self) {
        if self.resilient() && self.shared.join.is_none() {
            let mut c = self.conn.clone();
            let _: redis::RedisResult<Value> = redis::cmd("DEL").arg(&self.shared.sent_log).query_async(&mut c).await;
        }
    }

    async fn decided(&self) -> Result<(u64, u64, Option<i64>)> {
        let s = self
            .retrying("reading the sale", |mut c| async move {
                read_sale(&mut c).await.map_err(|e| as_redis_error("reading the sale", e))
            })
            .await?;
        Ok((s.completed, s.rejected, s.product))
    }

    fn lost_sale(&self) -> String {
        match &self.shared.join {
            Some(id) => format!(
                "Redis at {} no longer holds sale {id}: it restarted without its data, or another sale was \
                 started; this sale's stock, queues and results are gone from it; stopped sending",
                self.shared.addr
            ),
            None => format!(
                "Redis at {} came back without the `product` key: it restarted without persistence (or the \
                 sale was reset) and the sale's stock, queues and results are gone; stopped sending",
                self.shared.addr
            ),
        }
    }

    /// The stock of the operator's sale `id`, read from its marker; an error naming what Redis holds
    /// instead when it is not there.
    async fn joined_stock(&self, id: &str) -> Result<i64> {
        let held = self
            .retrying("reading the sale", |mut c| async move {
                marker::joined_stock(&mut c, id).await.map_err(|e| as_redis_error("reading the sale", e))
            })
            .await?;
        held.ok_or_else(|| EngineError::Other(no_sale(&self.shared.addr, id)))
    }
}

/// Why a run cannot join sale `id`.
pub fn no_sale(addr: &str, id: &str) -> String {
    format!(
        "Redis at {addr} does not hold sale {id} (no {} key): it lost its data, a newer sale was started, or \
         the sale was never started; nothing was sent",
        marker::join_key(id)
    )
}

// ---- the schedule ------------------------------------------------------------------------------------

/// When customers arrive: fixed from the start, independent of how long writes take.
struct Arrivals {
    start: tokio::time::Instant,
    deadline: Option<tokio::time::Instant>,
    /// `--customers`, if set.
    limit: Option<u64>,
    /// Most customers that will ever arrive (the limit, and at a fixed rate the deadline).
    cap: Option<u64>,
    /// Customers handed out so far.
    issued: u64,
    pace: Pace,
}

enum Pace {
    /// Customer `k` (from 0) arrives at `k / rate` seconds.
    Rate(f64),
    /// The next customer arrives at `next`; each gap is random in 0..=`max_gap_ms`.
    Random { max_gap_ms: u64, next: tokio::time::Instant },
}

impl Arrivals {
    fn new(cfg: &SimulatorConfig, start: tokio::time::Instant) -> Self {
        let deadline = cfg.max_duration.map(|d| start + d);
        let limit = (cfg.customers > 0).then_some(cfg.customers);
        let (pace, cap) = match cfg.rate.filter(|r| r.is_finite() && *r > 0.0) {
            Some(rate) => {
                // customers k with k / rate < max_duration
                let by_deadline = cfg.max_duration.map(|d| (d.as_secs_f64() * rate).ceil() as u64);
                let cap = match (limit, by_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (Pace::Rate(rate), cap)
            }
            None => {
                let max_gap_ms = cfg.max_arrival.as_millis() as u64;
                (Pace::Random { max_gap_ms, next: start + random_millis(max_gap_ms) }, limit)
            }
        };
        Arrivals { start, deadline, limit, cap, issued: 0, pace }
    }

    /// `--customers` were all handed out.
    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.issued >= l)
    }

    fn all_issued(&self) -> bool {
        self.cap.is_some_and(|c| self.issued >= c)
    }

    /// When the next customer arrives; `None` when nobody will arrive before the deadline.
    fn next_at(&self) -> Option<tokio::time::Instant> {
        if self.all_issued() {
            return None;
        }
        let at = match self.pace {
            Pace::Rate(rate) => {
                self.start + Duration::try_from_secs_f64(self.issued as f64 / rate).unwrap_or(Duration::MAX / 4)
            }
            Pace::Random { next, .. } => next,
        };
        match self.deadline {
            Some(d) if at >= d => None,
            _ => Some(at),
        }
    }

    /// Nobody else will arrive: all were sent, or the deadline passed (at a fixed rate: and the
    /// customers due before it were sent, or the grace after it is over too).
    fn over(&self, now: tokio::time::Instant) -> bool {
        if self.all_issued() {
            return true;
        }
        let Some(d) = self.deadline else { return false };
        match self.pace {
            Pace::Rate(_) => now >= d && (self.next_at().is_none() || now >= d + DEADLINE_GRACE),
            Pace::Random { .. } => now >= d,
        }
    }

    /// Hand out the customers who have arrived by `now`, at most `max`; returns how many.
    fn take(&mut self, now: tokio::time::Instant, max: u64) -> u64 {
        match &mut self.pace {
            Pace::Rate(rate) => {
                let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
                // customers k with k / rate <= elapsed; `as` saturates on overflow
                let mut due = ((elapsed * *rate).floor() as u64).saturating_add(1);
                if let Some(cap) = self.cap {
                    due = due.min(cap);
                }
                let n = due.saturating_sub(self.issued).min(max);
                self.issued += n;
                n
            }
            Pace::Random { .. } => {
                let mut n = 0;
                while n < max && self.next_at().is_some_and(|at| at <= now) {
                    n += 1;
                    self.issued += 1;
                    if let Pace::Random { max_gap_ms, next } = &mut self.pace {
                        *next += random_millis(*max_gap_ms);
                    }
                }
                n
            }
        }
    }
}

/// Waits until `at`, or forever without it.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn random_millis(max: u64) -> Duration {
    if max == 0 { Duration::ZERO } else { Duration::from_millis(rand::rng().random_range(0..=max)) }
}

/// Measures the arrival rate over windows of at least a second (and at least a few arrivals) and
/// warns once when the simulator cannot hold the asked rate: two windows in a row more than 5%
/// short of it (one short window followed by a catch-up is a stall, e.g. the machine was busy), or
/// the whole arrival phase short of it (runs shorter than two windows).
struct RateWatch {
    target: f64,
    window: Duration,
    start: Instant,
    count: u64,
    reconnects: u64,
    lowest: Option<f64>,
    /// The last window was short.
    short: bool,
    behind: bool,
}

impl RateWatch {
    fn new(target: f64, reconnects: u64) -> Self {
        let window = Duration::from_secs_f64((5.0 / target).max(1.0));
        RateWatch {
            target,
            window,
            start: Instant::now(),
            count: 0,
            reconnects,
            lowest: None,
            short: false,
            behind: false,
        }
    }

    /// `count` customers were written. Returns the warning to give, once.
    fn arrived(&mut self, count: u64, reconnects: u64) -> Option<String> {
        if reconnects != self.reconnects {
            // a window spanning an outage says nothing about the simulator's capacity
            *self = RateWatch { lowest: self.lowest, behind: self.behind, ..RateWatch::new(self.target, reconnects) };
            return None;
        }
        self.count += count;
        let elapsed = self.start.elapsed();
        if elapsed < self.window {
            return None;
        }
        let achieved = self.count as f64 / elapsed.as_secs_f64();
        self.lowest = Some(self.lowest.map_or(achieved, |l| l.min(achieved)));
        self.start = Instant::now();
        self.count = 0;
        let short = achieved < 0.95 * self.target;
        let twice = short && std::mem::replace(&mut self.short, short);
        self.short = short;
        if twice { self.fall_behind(achieved, elapsed.as_secs_f64(), "the last") } else { None }
    }

    /// The arrivals are over: `customers` in `secs`. Judged only without reconnects (an outage
    /// says nothing about the simulator's capacity).
    fn finish(&mut self, customers: u64, secs: f64, reconnects: u64) -> Option<String> {
        let achieved = customers as f64 / secs;
        if reconnects > 0 || secs <= 0.0 || achieved >= 0.95 * self.target {
            return None;
        }
        self.lowest = Some(self.lowest.map_or(achieved, |l| l.min(achieved)));
        self.fall_behind(achieved, secs, "")
    }

    fn fall_behind(&mut self, achieved: f64, secs: f64, over: &str) -> Option<String> {
        if std::mem::replace(&mut self.behind, true) {
            return None;
        }
        let over = if over.is_empty() { String::new() } else { format!("{over} ") };
        Some(format!("cannot hold --rate {}: sent {achieved:.0} customers/s over {over}{secs:.1}s", self.target))
    }
}

// ---- the run ------------------------------------------------------------------------------------------

/// What the driver waits on for a batch: the task writing it.
type BatchTask = JoinHandle<Result<Option<Vec<String>>>>;

/// A run on Redis: the link, the state between steps, the reading of the sale under way and the
/// caller's progress callback.
struct Simulation<'a, C, P> {
    link: Link<C>,
    cfg: &'a SimulatorConfig,
    state: RunState<BatchTask>,
    reading: Option<JoinHandle<Result<SaleSnapshot>>>,
    progress: P,
}

/// What woke the sending loop.
enum Event {
    Batch(std::result::Result<Result<Option<Vec<String>>>, JoinError>),
    Reading(std::result::Result<Result<SaleSnapshot>, JoinError>),
    Timer,
}

async fn simulate<C: RedisConn + Clone + Sync + 'static>(
    link: Link<C>,
    cfg: &SimulatorConfig,
    progress: impl FnMut(&Progress),
) -> Result<SimulationSummary> {
    let (stock, base) = set_up(&link, cfg).await?;
    let start = tokio::time::Instant::now();
    let state = RunState::new(cfg, stock, base, link.resilient(), link.lost_sale(), link.reconnects(), start);
    let mut run = Simulation { link, cfg, state, reading: None, progress };
    let timing = run.send_all().await;
    let all_processed = run.wait_for_decisions().await;
    Ok(run.finish(timing, all_processed).await)
}

/// Before the first customer: the stock (the joined sale's, or this run's after an optional reset)
/// and the decided counts the run's own are counted from. A run of its own sets `product` here.
async fn set_up<C: RedisConn + Clone + Sync + 'static>(
    link: &Link<C>,
    cfg: &SimulatorConfig,
) -> Result<(i64, (u64, u64))> {
    let stock = match &cfg.join {
        Some(id) => link.joined_stock(id).await?,
        None => {
            if cfg.reset {
                link.retrying(
                    "reset",
                    |mut c| async move { reset(&mut c).await.map_err(|e| as_redis_error("reset", e)) },
                )
                .await?;
            }
            cfg.stock
        }
    };
    let (completed, rejected, _) = link.decided().await?;
    if cfg.join.is_none() {
        let _: Value = link.cmd("SET product", redis::cmd("SET").arg(PRODUCT).arg(stock).clone()).await?;
    }
    Ok((stock, (completed, rejected)))
}

impl<C: RedisConn + Clone + Sync + 'static, P: FnMut(&Progress)> Simulation<'_, C, P> {
    /// Send customers and orders until nothing is left to send or the run stops.
    async fn send_all(&mut self) -> Timing {
        loop {
            let now = tokio::time::Instant::now();
            self.state.end_arrivals_if_stopped(Instant::now());
            let link = &self.link;
            self.state.send_due(now, |batch| {
                let l = link.clone();
                tokio::spawn(async move { l.send(batch).await })
            });
            if let Some(warning) = self.state.close_arrivals(now, Instant::now()) {
                self.link.warn(warning);
            }
            if self.state.sending_over() {
                break;
            }
            let wake = self.state.wake(now, self.reading.is_some());
            match self.next_event(wake).await {
                Event::Batch(done) => self.batch_done(done),
                Event::Reading(read) => self.sale_read(read),
                Event::Timer => {}
            }
            self.read_if_due();
        }
        if let Some(r) = self.reading.take() {
            r.abort();
        }
        let (timing, warning) = self.state.end_sending(self.link.reconnects());
        if let Some(message) = warning {
            self.link.warn(&message);
        }
        timing
    }

    /// The oldest batch ending comes first, then a reading of the sale, then the timer.
    async fn next_event(&mut self, wake: Option<tokio::time::Instant>) -> Event {
        let oldest = self.state.oldest_task();
        let reading = self.reading.as_mut();
        let (batch_pending, reading_pending) = (oldest.is_some(), reading.is_some());
        tokio::select! {
            biased;
            done = async { oldest.expect("checked some").await }, if batch_pending => Event::Batch(done),
            read = async { reading.expect("checked some").await }, if reading_pending => Event::Reading(read),
            _ = sleep_until(wake) => Event::Timer,
        }
    }

    fn batch_done(&mut self, done: std::result::Result<Result<Option<Vec<String>>>, JoinError>) {
        let outcome = match done {
            Ok(Ok(Some(ids))) => Outcome::Written(ids),
            Ok(Ok(None)) => Outcome::SaleGone,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Failed(format!("a batch task failed: {e}")),
        };
        if let Some(message) = self.state.batch_done(outcome, tokio::time::Instant::now(), self.link.reconnects()) {
            self.link.warn(&message);
        }
    }

    fn sale_read(&mut self, read: std::result::Result<Result<SaleSnapshot>, JoinError>) {
        self.reading = None;
        match read {
            Ok(Ok(sale)) => {
                self.state.sale_read(&sale, Instant::now());
                (self.progress)(&self.state.progress(true));
            }
            // Redis is away: the batches in flight find out and retry; progress waits
            Ok(Err(e)) if retryable_engine_error(&e) => {}
            Ok(Err(e)) => self.state.stop(e.to_string()),
            Err(e) => self.state.stop(format!("reading the sale failed: {e}")),
        }
    }

    /// Start reading the sale in the background when a reading is due.
    fn read_if_due(&mut self) {
        if self.state.reading_due(tokio::time::Instant::now(), self.reading.is_some()) {
            let mut c = self.link.conn.clone();
            self.reading = Some(tokio::spawn(async move { read_sale(&mut c).await }));
        }
    }

    /// With `wait_complete`, wait until every order written was decided, reporting progress. Returns
    /// whether they all were (checked once even without waiting).
    async fn wait_for_decisions(&mut self) -> bool {
        let wait_started = Instant::now();
        let mut last_report = Instant::now();
        while !self.state.stopped() {
            match self.link.decided().await {
                Ok((completed, rejected, product)) => self.state.record(completed, rejected, product),
                Err(e) => {
                    self.state.stop(e.to_string());
                    break;
                }
            }
            if self.state.all_decided() {
                return true;
            }
            match self.cfg.wait_complete {
                Some(limit) if wait_started.elapsed() < limit => {
                    if last_report.elapsed() >= PROGRESS_EVERY {
                        last_report = Instant::now();
                        (self.progress)(&self.state.progress(false));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        false
    }

    /// A run that was not stopped leaves no log behind (nothing will be retried).
    async fn finish(self, timing: Timing, all_processed: bool) -> SimulationSummary {
        if !self.state.stopped() {
            self.link.drop_log().await;
        }
        self.state.summary(timing, all_processed, self.link.reconnects())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_serializes_camel_case() {
        let s = SimulationSummary {
            stock: 1,
            customers: 2,
            orders: 2,
            orders_not_sent: 0,
            completed: 1,
            rejected: 1,
            product_left: Some(0),
            all_processed: true,
            duration_secs: 0.5,
            customers_per_sec: 4.0,
            target_rate: Some(5.0),
            lowest_rate: Some(4.0),
            behind_rate: true,
            reconnects: 0,
            error: None,
            arrival_secs: 0.5,
            send_secs: 0.5,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["productLeft"], 0);
        assert_eq!(v["allProcessed"], true);
        assert_eq!(v["ordersNotSent"], 0);
        assert_eq!(v["behindRate"], true);
        assert_eq!(v["arrivalSecs"], 0.5);
        assert_eq!(v["sendSecs"], 0.5);
        assert!(v.get("error").is_none(), "no error key on success: {v}");
    }

    #[test]
    fn only_connection_failures_are_retried() {
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(retryable(&io));
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(retryable(&refused));
        let wrongtype = redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"));
        assert!(!retryable(&wrongtype));
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "WRONGPASS"));
        assert!(!retryable(&auth));
    }

    /// One window of `count` arrivals over `secs` seconds.
    fn window(w: &mut RateWatch, count: u64, secs: u64) -> Option<String> {
        w.start = Instant::now() - Duration::from_secs(secs);
        w.count = count - 1;
        w.arrived(1, w.reconnects)
    }

    #[test]
    fn rate_watch_flags_two_slow_windows_in_a_row_once() {
        let mut w = RateWatch::new(1000.0, 0);
        assert_eq!(window(&mut w, 100, 2), None, "one slow window can be a stall");
        assert!(!w.behind);
        let lowest = w.lowest.unwrap();
        assert!(lowest > 0.0 && lowest < 100.0, "{lowest}");
        let warning = window(&mut w, 100, 2).unwrap();
        assert!(warning.starts_with("cannot hold --rate 1000: sent 50 customers/s over the last 2.0s"), "{warning}");
        assert!(w.behind);
        assert_eq!(window(&mut w, 100, 2), None, "the warning is given once");
        assert_eq!(w.finish(100, 2.0, 0), None, "also at the end");
    }

    #[test]
    fn rate_watch_forgives_a_stall_it_catches_up_with() {
        let mut w = RateWatch::new(1000.0, 0);
        assert_eq!(window(&mut w, 800, 1), None);
        assert_eq!(window(&mut w, 1200, 1), None);
        assert_eq!(window(&mut w, 800, 1), None);
        assert!(!w.behind);
        assert_eq!(w.finish(2800, 2.9, 0), None, "2800 in 2.9 s is within 5% of 1000/s");
        assert!(w.lowest.is_some_and(|l| (l - 800.0).abs() < 10.0));
    }

    #[test]
    fn rate_watch_judges_a_short_run_as_a_whole() {
        let mut w = RateWatch::new(1_000_000.0, 0);
        let warning = w.finish(300_000, 1.2, 0).unwrap();
        assert_eq!(warning, "cannot hold --rate 1000000: sent 250000 customers/s over 1.2s");
        assert!(w.behind && w.lowest == Some(250_000.0));
        let mut w = RateWatch::new(1_000_000.0, 0);
        assert_eq!(w.finish(300_000, 1.2, 1), None, "not across an outage");
    }

    fn cfg(rate: Option<f64>, customers: u64, max_seconds: Option<u64>) -> SimulatorConfig {
        SimulatorConfig { rate, customers, max_duration: max_seconds.map(Duration::from_secs), ..Default::default() }
    }

    #[test]
    fn a_fixed_rate_hands_out_the_right_number_per_tick() {
        let start = tokio::time::Instant::now();
        let mut a = Arrivals::new(&cfg(Some(1000.0), 0, None), start);
        assert_eq!(a.take(start, 10_000), 1, "the first customer arrives at once");
        assert_eq!(a.take(start + Duration::from_millis(10), 10_000), 10, "then one per millisecond");
        assert_eq!(a.take(start + Duration::from_millis(10), 10_000), 0, "nobody twice");
        let next = a.next_at().unwrap() - start;
        assert!(next.abs_diff(Duration::from_millis(11)) < Duration::from_micros(1), "{next:?}");
        assert_eq!(a.take(start + Duration::from_secs(5), 1000), 1000, "a late tick is capped per batch");
        assert_eq!(a.take(start + Duration::from_secs(5), 10_000), 5001 - 1011, "and the rest follows");
        assert!(!a.over(start + Duration::from_secs(5)), "no end without a limit or deadline");
    }

    #[test]
    fn a_fixed_rate_stops_at_the_deadline_and_at_the_limit() {
        let start = tokio::time::Instant::now();
        // 2 s at 2000/s: customers 0..3999 arrive before the deadline, exactly 4000
        let mut a = Arrivals::new(&cfg(Some(2000.0), 0, Some(2)), start);
        let late = start + Duration::from_secs(60);
        assert!(!a.over(start + Duration::from_secs(1)));
        let mut sent = 0;
        // as the run does: take what is due, then ask whether the arrivals are over
        loop {
            sent += a.take(late, 1000);
            if a.over(late) {
                break;
            }
        }
        assert_eq!(sent, 1000, "60 s late, only one more batch goes out after the grace");
        let mut a = Arrivals::new(&cfg(Some(2000.0), 0, Some(2)), start);
        let just_after = start + Duration::from_millis(2001);
        let mut sent = 0;
        loop {
            sent += a.take(just_after, 1000);
            if a.over(just_after) {
                break;
            }
        }
        assert_eq!(sent, 4000);
        assert_eq!(a.next_at(), None);

        // a rate it cannot hold: at the deadline the backlog goes out during the grace, then stops
        let mut a = Arrivals::new(&cfg(Some(1_000_000.0), 0, Some(2)), start);
        let at_deadline = start + Duration::from_secs(2);
        assert_eq!(a.take(at_deadline, 1000), 1000);
        assert!(!a.over(at_deadline), "customers due before the deadline still go out");
        assert!(a.over(at_deadline + DEADLINE_GRACE), "but not for longer than the grace");

        let mut a = Arrivals::new(&cfg(Some(1_000_000.0), 2500, None), start);
        assert_eq!(a.take(late, 100_000), 2500, "--customers caps a full-speed run");
        assert!(a.over(start));
    }

    #[test]
    fn random_gaps_of_zero_send_everyone_at_once_and_long_gaps_wait_for_the_deadline() {
        let start = tokio::time::Instant::now();
        let zero = SimulatorConfig { max_arrival: Duration::ZERO, ..cfg(None, 3000, None) };
        let mut a = Arrivals::new(&zero, start);
        assert_eq!(a.take(start, 1000), 1000);
        assert_eq!(a.take(start, 5000), 2000);
        assert!(a.over(start));

        let hour = SimulatorConfig { max_arrival: Duration::from_secs(3600), ..cfg(None, 5, Some(1)) };
        let a = Arrivals::new(&hour, start);
        // even when the first gap ends after the deadline, the arrivals last until the deadline
        assert!(!a.over(start));
        assert!(a.over(start + Duration::from_secs(1)));

        // everyone at once and no --customers: the deadline ends it
        let zero = SimulatorConfig { max_arrival: Duration::ZERO, ..cfg(None, 0, Some(1)) };
        let mut a = Arrivals::new(&zero, start);
        assert_eq!(a.take(start, 1000), 1000);
        assert!(!a.over(start));
        assert!(a.over(start + Duration::from_secs(1)));
    }

    #[test]
    fn batch_replies_are_split_into_one_id_per_customer() {
        assert_eq!(customer_ids("1-0 1-1 2-0", 3).unwrap(), ["1-0", "1-1", "2-0"]);
        assert_eq!(customer_ids("", 0).unwrap(), Vec::<String>::new());
        assert!(customer_ids("1-0", 2).is_err());
    }
}
