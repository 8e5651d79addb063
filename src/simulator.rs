//! Load generator: the seed's `pop-up-store.js` in Rust.
//!
//! `SET product <stock>`; a new customer every random 0–`max_arrival` ms (or at a fixed `rate`
//! per second): `XADD queue:customers * id <n>`; each customer orders once, random
//! 0–`max_order_delay` ms later: `XADD queue:orders * id <n> customer <customer entry id>`.
//! Stops after `customers` customers (0 = when `product` reaches 0), then optionally waits until
//! every order it sent was decided (completed or rejected).
//!
//! Two entry points: [`run`] on a connection the caller owns (fails at the first Redis error), and
//! [`run_resilient`], which the `simulate` command uses: it reconnects and retries writes for a
//! bounded time when Redis goes away, without sending a customer or an order twice.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::engine::{
    EngineError, PRODUCT, QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUES, RedisConn, Result, WORKER_HEARTBEAT_PREFIX,
    connect_manager, read_sale, ts_enqueue_key, ts_len_key,
};

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

/// Progress reported about once a second.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub customers: u64,
    pub orders: u64,
    pub product: Option<i64>,
    pub completed: u64,
    pub rejected: u64,
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
    pub duration_secs: f64,
    /// Customers per second actually sent.
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
}

/// Delete every key of the sale: `product`, the queues, their TimeSeries and every `popup:*` key
/// (served customers, sampler state, …) except native workers' heartbeats, which belong to the
/// running workers rather than to the sale. Deleting `queue:orders` also removes the native
/// consumer group, which the workers re-create.
pub async fn reset(conn: &mut impl RedisConn) -> Result<()> {
    let mut keys: Vec<String> = vec![PRODUCT.into()];
    for q in QUEUES {
        keys.push(q.into());
        keys.push(ts_len_key(q));
        keys.push(ts_enqueue_key(q));
    }
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("popup:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command("SCAN popup:* (reset)", e))?;
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(WORKER_HEARTBEAT_PREFIX)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        let _: Value =
            redis::cmd("DEL").arg(chunk).query_async(conn).await.map_err(|e| EngineError::command("DEL (reset)", e))?;
    }
    Ok(())
}

/// Run the sale on `conn`. The first Redis error ends the run with that error (use
/// [`run_resilient`] to survive a Redis restart). `progress` is called about once a second.
pub async fn run<C: RedisConn + Clone + Sync + 'static>(
    conn: &mut C,
    cfg: &SimulatorConfig,
    progress: impl FnMut(&Progress),
) -> Result<SimulationSummary> {
    let link = Link::new(conn.clone(), "Redis".into(), None);
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
/// sale's data is gone), no further customer or order is written.
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
) -> Result<SimulationSummary> {
    let (conn, addr) = connect_manager(url, password).await?;
    let link = Link::new(conn, addr, Some(resilience.retry_for));
    simulate(link, cfg, progress).await
}

/// Writes a stream entry once, even when retried: the first call records the new entry's id in
/// the run's log hash under a field naming the customer or order, a retry finds it there and
/// returns it. Script effects are applied and persisted as a unit, so the log and the entry are
/// either both there or both gone. Writes nothing and returns nil when `product` is missing,
/// i.e. the sale is not there any more.
/// KEYS: stream, log hash, product. ARGV: log field, log TTL (ms), the entry's field/value pairs.
const SEND_ONCE_LUA: &str = r"
local sent = redis.call('HGET', KEYS[2], ARGV[1])
if sent then return sent end
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
";

/// A crashed simulator's log hash disappears after this.
const SENT_LOG_TTL_MS: u64 = 24 * 3600 * 1000;

/// The connection plus what is needed to retry on it; cheap to clone into order tasks.
#[derive(Clone)]
struct Link<C> {
    conn: C,
    shared: Arc<LinkShared>,
}

struct LinkShared {
    addr: String,
    /// `None`: no retries, plain XADD (the behaviour of [`run`]).
    retry_for: Option<Duration>,
    /// Key of this run's log hash (resilient mode).
    sent_log: String,
    script: redis::Script,
    /// Log fields whose write was acknowledged; removed from the hash in batches.
    acked: Mutex<Vec<String>>,
    down: AtomicBool,
    reconnects: AtomicU64,
}

fn retryable(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    e.kind() != redis::ErrorKind::AuthenticationFailed
        && matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}

impl<C: RedisConn + Clone + Sync + 'static> Link<C> {
    fn new(conn: C, addr: String, retry_for: Option<Duration>) -> Self {
        let run_id: u64 = rand::rng().random();
        Link {
            conn,
            shared: Arc::new(LinkShared {
                addr,
                retry_for,
                sent_log: format!("popup:simulator:{run_id:016x}"),
                script: redis::Script::new(SEND_ONCE_LUA),
                acked: Mutex::new(Vec::new()),
                down: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    fn resilient(&self) -> bool {
        self.shared.retry_for.is_some()
    }

    fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
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
                        tracing::warn!(addr = %s.addr, "Redis answers again; carrying on");
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
                        tracing::warn!(addr = %s.addr, error = %e, "lost Redis; retrying for up to {}s", limit.as_secs());
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

    /// Append an entry to `stream`; `log_field` names it for retries. `Ok(None)`: the sale is
    /// gone (resilient mode only), nothing was written.
    async fn send(&self, stream: &str, log_field: String, fields: &[(&str, String)]) -> Result<Option<String>> {
        let s = &self.shared;
        let what = format!("XADD {stream}");
        if !self.resilient() {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            for (k, v) in fields {
                cmd.arg(*k).arg(v);
            }
            return self.cmd(&what, cmd).await.map(Some);
        }
        let id: Option<String> = self
            .retrying(&what, |mut c| {
                let mut inv = s.script.prepare_invoke();
                inv.key(stream).key(&s.sent_log).key(PRODUCT).arg(&log_field).arg(SENT_LOG_TTL_MS);
                for (k, v) in fields {
                    inv.arg(*k).arg(v);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if id.is_some() {
            s.acked.lock().unwrap_or_else(|p| p.into_inner()).push(log_field);
        }
        Ok(id)
    }

    /// Drop acknowledged entries from the log (they will never be retried). Best effort: on
    /// failure they stay and are dropped with the whole log at the end or by its TTL.
    async fn trim_log(&self) {
        let fields = std::mem::take(&mut *self.shared.acked.lock().unwrap_or_else(|p| p.into_inner()));
        if fields.is_empty() {
            return;
        }
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Value> =
            redis::cmd("HDEL").arg(&self.shared.sent_log).arg(&fields).query_async(&mut c).await;
        if r.is_err() {
            self.shared.acked.lock().unwrap_or_else(|p| p.into_inner()).extend(fields);
        }
    }

    async fn drop_log(&self) {
        if self.resilient() {
            let mut c = self.conn.clone();
            let _: redis::RedisResult<Value> = redis::cmd("DEL").arg(&self.shared.sent_log).query_async(&mut c).await;
        }
    }

    async fn decided(&self) -> Result<(u64, u64, Option<i64>)> {
        let s = self
            .retrying("reading the sale", |mut c| async move {
                read_sale(&mut c).await.map_err(|e| match e {
                    EngineError::Command { source, .. } => source,
                    other => redis::RedisError::from((redis::ErrorKind::Client, "reading the sale", other.to_string())),
                })
            })
            .await?;
        Ok((s.completed, s.rejected, s.product))
    }

    fn lost_sale(&self) -> String {
        format!(
            "Redis at {} came back without the `product` key: it restarted without persistence (or the sale \
             was reset) and the sale's stock, queues and results are gone; stopped sending",
            self.shared.addr
        )
    }
}

/// Waits until `deadline`, or forever without one.
async fn deadline_passed(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Measures the arrival rate over windows of at least a second (and at least a few arrivals) and
/// warns once when a window falls more than 5% short of the asked rate.
struct RateWatch {
    target: f64,
    window: Duration,
    start: Instant,
    count: u64,
    reconnects: u64,
    lowest: Option<f64>,
    behind: bool,
}

impl RateWatch {
    fn new(target: f64, reconnects: u64) -> Self {
        let window = Duration::from_secs_f64((5.0 / target).max(1.0));
        RateWatch { target, window, start: Instant::now(), count: 0, reconnects, lowest: None, behind: false }
    }

    fn arrived(&mut self, reconnects: u64) {
        if reconnects != self.reconnects {
            // a window spanning an outage says nothing about the simulator's capacity
            *self = RateWatch { lowest: self.lowest, behind: self.behind, ..RateWatch::new(self.target, reconnects) };
            return;
        }
        self.count += 1;
        let elapsed = self.start.elapsed();
        if elapsed < self.window {
            return;
        }
        let achieved = self.count as f64 / elapsed.as_secs_f64();
        self.lowest = Some(self.lowest.map_or(achieved, |l| l.min(achieved)));
        if achieved < 0.95 * self.target && !self.behind {
            self.behind = true;
            tracing::warn!(
                "cannot hold --rate {}: sent {achieved:.0} customers/s over the last {:.1}s",
                self.target,
                elapsed.as_secs_f64()
            );
        }
        self.start = Instant::now();
        self.count = 0;
    }
}

async fn simulate<C: RedisConn + Clone + Sync + 'static>(
    link: Link<C>,
    cfg: &SimulatorConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<SimulationSummary> {
    if cfg.reset {
        link.retrying("reset", |mut c| async move {
            reset(&mut c).await.map_err(|e| match e {
                EngineError::Command { source, .. } => source,
                other => redis::RedisError::from((redis::ErrorKind::Client, "reset", other.to_string())),
            })
        })
        .await?;
    }
    let (base_completed, base_rejected, _) = link.decided().await?;
    let _: Value = link.cmd("SET product", redis::cmd("SET").arg(PRODUCT).arg(cfg.stock).clone()).await?;

    let started = Instant::now();
    let deadline = cfg.max_duration.map(|d| tokio::time::Instant::now() + d);
    let orders_sent = Arc::new(AtomicU64::new(0));
    let mut orders: JoinSet<Result<bool>> = JoinSet::new();
    let mut customers: u64 = 0;
    let mut stopped: Option<String> = None;
    let mut last_report = Instant::now();
    let mut last_stock_check = Instant::now();
    let mut ticker = cfg.rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut rate_watch = cfg.rate.filter(|_| ticker.is_some()).map(|r| RateWatch::new(r, link.reconnects()));
    let max_arrival_ms = cfg.max_arrival.as_millis() as u64;
    let max_delay_ms = cfg.max_order_delay.as_millis() as u64;
    let mut last = (0, 0, None);
    // Redis came back without the sale: what we last read about it is gone
    let mut lost = false;

    // no stock, no sale: nobody is sent
    while cfg.stock > 0 && stopped.is_none() {
        if cfg.customers > 0 && customers >= cfg.customers {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!("max duration reached; stopping the arrival of customers");
            break;
        }
        if cfg.customers == 0 && last_stock_check.elapsed() >= Duration::from_millis(200) {
            last_stock_check = Instant::now();
            let left: Option<i64> = match link.cmd("GET product", redis::cmd("GET").arg(PRODUCT).clone()).await {
                Ok(v) => v,
                Err(e) => {
                    stopped = Some(e.to_string());
                    break;
                }
            };
            match left {
                None if link.resilient() => {
                    stopped = Some(link.lost_sale());
                    lost = true;
                    break;
                }
                v if v.unwrap_or(0) <= 0 => break,
                _ => {}
            }
        }
        // the next arrival, but never past the deadline
        let arrived = match ticker.as_mut() {
            Some(t) => tokio::select! {
                _ = t.tick() => true,
                _ = deadline_passed(deadline) => false,
            },
            None => {
                let gap = rand::rng().random_range(0..=max_arrival_ms);
                let wake = tokio::time::Instant::now() + Duration::from_millis(gap);
                match deadline {
                    Some(d) if wake >= d => {
                        tokio::time::sleep_until(d).await;
                        false
                    }
                    _ => {
                        tokio::time::sleep_until(wake).await;
                        true
                    }
                }
            }
        };
        if !arrived {
            tracing::warn!("max duration reached; stopping the arrival of customers");
            break;
        }
        let n = customers + 1;
        let customer_id = match link.send(QUEUE_CUSTOMERS, format!("c{n}"), &[("id", n.to_string())]).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                stopped = Some(link.lost_sale());
                lost = true;
                break;
            }
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        };
        customers = n;
        if let Some(w) = rate_watch.as_mut() {
            w.arrived(link.reconnects());
        }
        let due = tokio::time::Instant::now() + Duration::from_millis(rand::rng().random_range(0..=max_delay_ms));
        // after the deadline, pending orders go out at once rather than keeping the run alive
        let due = deadline.map_or(due, |d| due.min(d));
        let olink = link.clone();
        let sent = orders_sent.clone();
        orders.spawn(async move {
            tokio::time::sleep_until(due).await;
            let fields = [("id", n.to_string()), ("customer", customer_id)];
            let written = olink.send(QUEUE_ORDERS, format!("o{n}"), &fields).await?.is_some();
            if written {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(written)
        });
        // reap finished order tasks so errors surface early
        while let Some(done) = orders.try_join_next() {
            if let Some((e, gone)) = order_failure(&link, done) {
                stopped = Some(e);
                lost |= gone;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            link.trim_log().await;
            match link.decided().await {
                Ok((c, r, p)) => {
                    last = (c.saturating_sub(base_completed), r.saturating_sub(base_rejected), p);
                    progress(&Progress {
                        customers,
                        orders: orders_sent.load(Ordering::Relaxed),
                        product: p,
                        completed: last.0,
                        rejected: last.1,
                    });
                }
                Err(e) => stopped = Some(e.to_string()),
            }
        }
    }
    if stopped.is_some() {
        // Redis is gone for good or the sale is lost: pending orders have nowhere to go
        orders.abort_all();
    }
    while let Some(done) = orders.join_next().await {
        if let Some((e, gone)) = order_failure(&link, done) {
            stopped.get_or_insert(e);
            lost |= gone;
            orders.abort_all();
        }
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let orders_sent = orders_sent.load(Ordering::Relaxed);

    let mut all_processed = false;
    let wait_started = Instant::now();
    while stopped.is_none() {
        match link.decided().await {
            Ok((c, r, p)) => last = (c.saturating_sub(base_completed), r.saturating_sub(base_rejected), p),
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        }
        if last.0 + last.1 >= orders_sent {
            all_processed = true;
            break;
        }
        match cfg.wait_complete {
            Some(limit) if wait_started.elapsed() < limit => {
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    progress(&Progress {
                        customers,
                        orders: orders_sent,
                        product: last.2,
                        completed: last.0,
                        rejected: last.1,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    if stopped.is_none() {
        link.drop_log().await;
    }
    let (completed, rejected, product_left) = if lost { (last.0, last.1, None) } else { last };
    Ok(SimulationSummary {
        stock: cfg.stock,
        customers,
        orders: orders_sent,
        orders_not_sent: customers.saturating_sub(orders_sent),
        completed,
        rejected,
        product_left,
        all_processed,
        duration_secs: started.elapsed().as_secs_f64(),
        customers_per_sec: if sent_secs > 0.0 { customers as f64 / sent_secs } else { 0.0 },
        target_rate: cfg.rate,
        lowest_rate: rate_watch.as_ref().and_then(|w| w.lowest),
        behind_rate: rate_watch.as_ref().is_some_and(|w| w.behind),
        reconnects: link.reconnects(),
        error: stopped,
    })
}

/// The reason to stop, if an order task failed (and whether it found the sale gone).
fn order_failure<C: RedisConn + Clone + Sync + 'static>(
    link: &Link<C>,
    done: std::result::Result<Result<bool>, tokio::task::JoinError>,
) -> Option<(String, bool)> {
    match done {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) => Some((link.lost_sale(), true)),
        Ok(Err(e)) => Some((e.to_string(), false)),
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some((format!("order task failed: {e}"), false)),
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
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["productLeft"], 0);
        assert_eq!(v["allProcessed"], true);
        assert_eq!(v["ordersNotSent"], 0);
        assert_eq!(v["behindRate"], true);
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

    #[test]
    fn rate_watch_flags_a_slow_window_once() {
        let mut w = RateWatch::new(1000.0, 0);
        w.start = Instant::now() - Duration::from_secs(2);
        w.count = 99;
        w.arrived(0); // 100 arrivals in 2 s against 1000/s
        assert!(w.behind);
        let lowest = w.lowest.unwrap();
        assert!(lowest > 0.0 && lowest < 100.0, "{lowest}");
    }
}
