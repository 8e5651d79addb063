//! `native` engine: our own worker (`popup-operator process`).
//!
//! - one atomic Lua script (`assets/native_apply.lua`, the operator's function `popup_decide`, see
//!   [`super::functions`]: the worker may only call it) takes the oldest orders of `queue:orders`
//!   (up to [`ORDERS_PER_CALL`], in whole batches of `batchSize`), decides them and removes them,
//!   so one round trip decides hundreds of orders and no order is ever held by a worker: nothing
//!   to acknowledge, claim or redo when a worker dies, however many workers share the queue;
//! - when the script finds the queue empty, `XREAD BLOCK` waits for the next order;
//! - a sampler task running `sample.lua` at every interval boundary (one writer per interval even
//!   with several replicas, because the script checks and advances `popup:ts:last` atomically);
//! - a heartbeat key `popup:worker:<consumer>` with a TTL;
//! - graceful shutdown: the script call in flight is finished, then the loop exits.

use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::functions::{self, Caller};
use super::{
    ENGINE_ERROR, ENGINE_ERROR_TTL, EngineError, EngineHealth, EngineKind, PRODUCT, ProcessingSettings, QUEUE_COMPLETE,
    QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_REJECTED, RedisConn, Result, WORKER_HEARTBEAT_PREFIX, sample_with,
};

/// The decision script, loaded by the operator as [`functions::DECIDE`].
pub const APPLY_LUA: &str = include_str!("assets/native_apply.lua");

/// About how many orders one script call takes (rounded down to whole batches, at least one):
/// enough that the round trip is a small part of the call, few enough that Redis is not held
/// for more than a few milliseconds at a time.
pub const ORDERS_PER_CALL: u32 = 512;

/// What a worker needs of its Redis, checked before it starts: RedisTimeSeries (its sampler writes
/// `ts:*`); the scripts it calls the operator loads (`load`).
pub async fn require_modules(conn: &mut impl RedisConn, addr: &str) -> Result<()> {
    let mods = super::module_list(conn).await?;
    super::require_timeseries(addr, &mods)
}

/// Orders decided by one script call or one worker run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchResult {
    pub completed: u64,
    pub rejected: u64,
}

impl BatchResult {
    pub fn decided(&self) -> u64 {
        self.completed + self.rejected
    }
}

impl std::ops::AddAssign for BatchResult {
    fn add_assign(&mut self, o: Self) {
        self.completed += o.completed;
        self.rejected += o.rejected;
    }
}

/// Totals of one worker run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    /// Batches of `batchSize` orders decided (the last of a call may be partial).
    pub batches: u64,
    /// Script calls that decided at least one order.
    pub calls: u64,
    pub orders: BatchResult,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub consumer: String,
    pub settings: ProcessingSettings,
    /// XREAD BLOCK time while the queue is empty (bounds shutdown latency).
    pub block: Duration,
    /// Heartbeat key TTL.
    pub heartbeat_ttl: Duration,
    /// Run the TimeSeries sampler task.
    pub sample: bool,
}

impl WorkerConfig {
    pub fn new(consumer: impl Into<String>, settings: ProcessingSettings) -> Self {
        WorkerConfig {
            consumer: consumer.into(),
            settings,
            block: Duration::from_millis(500),
            heartbeat_ttl: Duration::from_secs(5),
            sample: true,
        }
    }

    /// Orders per script call: whole batches, about [`ORDERS_PER_CALL`], at least one batch.
    pub fn orders_per_call(&self) -> u32 {
        let batch = self.settings.batch();
        batch * (ORDERS_PER_CALL / batch).max(1)
    }
}

/// A native worker bound to one connection.
pub struct Worker {
    conn: ConnectionManager,
    cfg: WorkerConfig,
    caller: Caller,
}

impl Worker {
    pub fn new(conn: ConnectionManager, cfg: WorkerConfig) -> Self {
        Worker { conn, cfg, caller: Caller::new() }
    }

    pub fn consumer(&self) -> &str {
        &self.cfg.consumer
    }

    /// One script call: take up to [`WorkerConfig::orders_per_call`] of the oldest orders, decide
    /// and remove them atomically. Returns what was decided (nothing when the queue is empty).
    /// [`EngineError::ScriptMissing`] until the operator has loaded the function.
    pub async fn decide_waiting(&mut self) -> Result<BatchResult> {
        let keys = [PRODUCT, QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_COMPLETE, QUEUE_REJECTED];
        let args = [self.cfg.orders_per_call().to_string()];
        let (completed, rejected): (u64, u64) =
            self.caller.call(&mut self.conn, &functions::DECIDE, &keys, &args).await?;
        Ok(BatchResult { completed, rejected })
    }

    /// Wait up to `block` until `queue:orders` holds an entry (at once when it already does).
    /// Reading from id 0-0 rather than `$` cannot miss an order added just before the call.
    pub async fn wait_for_orders(&mut self) -> Result<()> {
        let _: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(self.cfg.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(QUEUE_ORDERS)
            .arg("0-0")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| EngineError::command("XREAD BLOCK queue:orders", e))?;
        Ok(())
    }

    /// Record a failed step where `sale` and the operator look (`popup:engine:error`, 5 min TTL).
    /// Only errors Redis answered with count: a dropped connection is not the engine's fault, nor a
    /// function the operator has not loaded yet (a stalled queue shows if it never does).
    async fn record_error(&mut self, e: &EngineError) {
        if let EngineError::Command { source, .. } = e
            && (source.is_io_error() || source.is_connection_dropped() || source.is_timeout())
        {
            return;
        }
        if matches!(e, EngineError::ScriptMissing { .. }) {
            return;
        }
        let _: redis::RedisResult<Value> = redis::cmd("SET")
            .arg(ENGINE_ERROR)
            .arg(format!("native worker {}: {e}", self.cfg.consumer))
            .arg("PX")
            .arg(ENGINE_ERROR_TTL.as_millis() as u64)
            .query_async(&mut self.conn)
            .await;
    }

    /// `SET popup:worker:<consumer> <json> PX ttl`.
    pub async fn heartbeat(&mut self, stats: &WorkerStats) -> Result<()> {
        let body = serde_json::json!({
            "consumer": self.cfg.consumer,
            "pid": std::process::id(),
            "batches": stats.batches,
            "completed": stats.orders.completed,
            "rejected": stats.orders.rejected,
        })
        .to_string();
        let _: Value = redis::cmd("SET")
            .arg(format!("{WORKER_HEARTBEAT_PREFIX}{}", self.cfg.consumer))
            .arg(body)
            .arg("PX")
            .arg(self.cfg.heartbeat_ttl.as_millis() as u64)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| EngineError::command("SET popup:worker:<consumer>", e))?;
        Ok(())
    }

    /// Process orders until `shutdown` becomes true; then finish the call in flight and return.
    /// Redis errors are logged, recorded and retried with a back-off.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<WorkerStats> {
        let sampler =
            self.cfg.sample.then(|| tokio::spawn(sampler_loop(self.conn.clone(), self.cfg.settings, shutdown.clone())));
        let mut stats = WorkerStats::default();
        let heartbeat_every = (self.cfg.heartbeat_ttl / 3).max(Duration::from_millis(100));
        let batch = u64::from(self.cfg.settings.batch());
        let full = u64::from(self.cfg.orders_per_call());
        let mut last_heartbeat: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let mut waiting_for_functions = false;
        tracing::info!(consumer = %self.cfg.consumer, batch, per_call = full, "native worker started");
        while !*shutdown.borrow_and_update() {
            let step: Result<()> = async {
                if last_heartbeat.is_none_or(|t| t.elapsed() >= heartbeat_every) {
                    self.heartbeat(&stats).await?;
                    last_heartbeat = Some(Instant::now());
                }
                let r = self.decide_waiting().await?;
                let n = r.decided();
                if n > 0 {
                    stats.calls += 1;
                    stats.batches += n.div_ceil(batch);
                    stats.orders += r;
                }
                // A full take means more may be waiting: go again at once. Otherwise the queue was
                // empty when the script ran; block until an order arrives.
                if n < full {
                    self.wait_for_orders().await?;
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if std::mem::take(&mut waiting_for_functions) {
                        tracing::info!("the processor's functions are loaded; deciding orders again");
                    }
                }
                Err(e @ EngineError::ScriptMissing { .. }) => {
                    // Redis restarted without it: the operator loads it on its next reconcile. Wait,
                    // checking once a second; the processor cannot load it itself.
                    if !std::mem::replace(&mut waiting_for_functions, true) {
                        tracing::warn!(error = %e, "waiting for the operator to load the processor's functions");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "worker step failed; retrying in {backoff:?}");
                    self.record_error(&e).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let _: redis::RedisResult<Value> = redis::cmd("DEL")
            .arg(format!("{WORKER_HEARTBEAT_PREFIX}{}", self.cfg.consumer))
            .query_async(&mut self.conn)
            .await;
        if let Some(s) = sampler {
            s.abort();
        }
        tracing::info!(consumer = %self.cfg.consumer, ?stats, "native worker stopped");
        Ok(stats)
    }
}

/// Sample at every interval boundary (just after it) until shutdown.
pub async fn sampler_loop(
    mut conn: impl RedisConn + 'static,
    settings: ProcessingSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = settings.interval_ms();
    let caller = Caller::new();
    loop {
        if let Err(e) = sample_with(&caller, &mut conn, &settings).await {
            tracing::warn!(error = %e, "TimeSeries sampling failed");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let wait = interval - now % interval + 20;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

pub(crate) async fn health(conn: &mut impl RedisConn) -> Result<EngineHealth> {
    let mut workers = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{WORKER_HEARTBEAT_PREFIX}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command("SCAN popup:worker:*", e))?;
        workers.extend(keys.into_iter().filter_map(|k| k.strip_prefix(WORKER_HEARTBEAT_PREFIX).map(str::to_string)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    workers.sort();
    let healthy = !workers.is_empty();
    Ok(EngineHealth {
        kind: EngineKind::Native,
        healthy,
        summary: if healthy {
            format!("{} native worker(s) alive: {}", workers.len(), workers.join(", "))
        } else {
            "no native worker heartbeat (popup:worker:*); is the popup-operator process Deployment running?".into()
        },
        parts: workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_takes_whole_batches() {
        let cfg = |batch_size| WorkerConfig::new("t", ProcessingSettings { batch_size, ..Default::default() });
        assert_eq!(cfg(3).orders_per_call(), 510);
        assert_eq!(cfg(50).orders_per_call(), 500);
        assert_eq!(cfg(1).orders_per_call(), ORDERS_PER_CALL);
        // a batch larger than a call is still taken whole
        assert_eq!(cfg(10_000).orders_per_call(), 10_000);
    }
}
