//! `native` engine: our own worker (`popup-operator process`).
//!
//! - consumer group [`NATIVE_GROUP`] on `queue:orders` (created at `0` with MKSTREAM, recreated
//!   when the stream was deleted);
//! - `XREADGROUP COUNT batch` (own pending entries first, then new ones; again after a failed
//!   step), each batch decided by one atomic Lua script (`assets/native_apply.lua`) that reads each
//!   order itself, skips orders no longer in the stream (decided already), and XACKs + XDELs them;
//! - `XAUTOCLAIM` of entries idle longer than `claim_idle` (from crashed or hung consumers), and
//!   removal of consumers without heartbeat that own nothing (`assets/reap_consumers.lua`);
//! - a sampler task running `sample.lua` at every interval boundary (one writer per interval even
//!   with several replicas, because the script checks and advances `popup:ts:last` atomically);
//! - a heartbeat key `popup:worker:<consumer>` with a TTL;
//! - graceful shutdown: the current batch is finished, then the loop exits.

use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::{
    ENGINE_ERROR, ENGINE_ERROR_TTL, EngineError, EngineHealth, EngineKind, NATIVE_GROUP, PRODUCT, ProcessingSettings,
    QUEUE_COMPLETE, QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_REJECTED, RedisConn, Result, SERVED_CUSTOMERS,
    WORKER_HEARTBEAT_PREFIX, sample_if_due, value_items, value_str,
};

/// The batch-decision script.
pub const APPLY_LUA: &str = include_str!("assets/native_apply.lua");
/// Removes gone consumers (no heartbeat, nothing pending) from the group.
pub const REAP_LUA: &str = include_str!("assets/reap_consumers.lua");

/// One order read from `queue:orders`: its entry id. The apply script reads the entry's fields
/// itself, so what it judges is exactly what Redis holds (binary, duplicate fields and all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Entry id in `queue:orders`.
    pub id: String,
}

/// Counts returned by the apply script.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchResult {
    pub completed: u64,
    pub rejected: u64,
    /// Already decided before (redelivered): nothing applied.
    pub skipped: u64,
}

impl std::ops::AddAssign for BatchResult {
    fn add_assign(&mut self, o: Self) {
        self.completed += o.completed;
        self.rejected += o.rejected;
        self.skipped += o.skipped;
    }
}

/// Totals of one worker run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    pub batches: u64,
    pub orders: BatchResult,
    pub claimed: u64,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub consumer: String,
    pub settings: ProcessingSettings,
    /// Pending entries idle longer than this are claimed from other (dead) consumers.
    pub claim_idle: Duration,
    /// XREADGROUP BLOCK time (bounds shutdown latency).
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
            // A live worker decides what it read within milliseconds; an entry pending for 2 s
            // belongs to a worker that died or hangs. Claiming it early is safe: deciding is
            // idempotent, so a slow owner that wakes up finds it gone.
            claim_idle: Duration::from_secs(2),
            block: Duration::from_millis(500),
            heartbeat_ttl: Duration::from_secs(5),
            sample: true,
        }
    }
}

/// A native worker bound to one connection.
pub struct Worker {
    conn: ConnectionManager,
    cfg: WorkerConfig,
    script: redis::Script,
    claim_cursor: String,
    own_pending_done: bool,
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// The entry ids of an `[[id, fields], ...]` list (XREADGROUP / XAUTOCLAIM). Entries deleted while
/// pending come with nil fields; they are kept, and the apply script acknowledges them.
fn parse_entries(entries: &Value) -> Vec<Order> {
    value_items(entries)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| Some(Order { id: value_str(value_items(e)?.first()?)? }))
        .collect()
}

/// Parse an XREADGROUP reply (nil on timeout; RESP2 `[[stream, entries]]` or RESP3 map).
fn parse_xreadgroup(reply: &Value) -> Vec<Order> {
    match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs.iter().flat_map(|(_, v)| parse_entries(v)).collect(),
        Value::Array(streams) => {
            streams.iter().filter_map(|s| value_items(s).and_then(|p| p.get(1))).flat_map(parse_entries).collect()
        }
        _ => Vec::new(),
    }
}

impl Worker {
    pub fn new(conn: ConnectionManager, cfg: WorkerConfig) -> Self {
        Worker { conn, cfg, script: redis::Script::new(APPLY_LUA), claim_cursor: "0-0".into(), own_pending_done: false }
    }

    pub fn consumer(&self) -> &str {
        &self.cfg.consumer
    }

    /// `XGROUP CREATE queue:orders popup-processors 0 MKSTREAM`, BUSYGROUP is fine.
    pub async fn ensure_group(&mut self) -> Result<()> {
        let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(QUEUE_ORDERS)
            .arg(NATIVE_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(EngineError::command("XGROUP CREATE queue:orders popup-processors 0 MKSTREAM", e)),
        }
    }

    async fn xreadgroup(&mut self, id: &str, block: Option<Duration>) -> Result<Vec<Order>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(NATIVE_GROUP).arg(&self.cfg.consumer).arg("COUNT").arg(self.cfg.settings.batch());
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(QUEUE_ORDERS).arg(id);
        match cmd.query_async::<Value>(&mut self.conn).await {
            Ok(v) => Ok(parse_xreadgroup(&v)),
            Err(e) if is_nogroup(&e) => {
                // queue:orders was deleted (e.g. simulate --reset): recreate the group.
                self.ensure_group().await?;
                self.own_pending_done = false;
                Ok(Vec::new())
            }
            Err(e) => Err(EngineError::command("XREADGROUP queue:orders", e)),
        }
    }

    /// Read the next batch: first this consumer's own pending entries (after a restart with the
    /// same name), then new entries (blocking up to `block`). The entries become pending for this
    /// consumer until [`Worker::apply`] acknowledges them.
    pub async fn read_batch(&mut self) -> Result<Vec<Order>> {
        if !self.own_pending_done {
            let own = self.xreadgroup("0", None).await?;
            if !own.is_empty() {
                return Ok(own);
            }
            self.own_pending_done = true;
        }
        let block = self.cfg.block;
        self.xreadgroup(">", Some(block)).await
    }

    /// `XAUTOCLAIM` one page of entries idle longer than `claim_idle` (from any consumer).
    pub async fn claim_stale(&mut self) -> Result<Vec<Order>> {
        let r: redis::RedisResult<Value> = redis::cmd("XAUTOCLAIM")
            .arg(QUEUE_ORDERS)
            .arg(NATIVE_GROUP)
            .arg(&self.cfg.consumer)
            .arg(self.cfg.claim_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(self.cfg.settings.batch())
            .query_async(&mut self.conn)
            .await;
        let reply = match r {
            Ok(v) => v,
            Err(e) if is_nogroup(&e) => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(EngineError::command("XAUTOCLAIM queue:orders", e)),
        };
        let parts = value_items(&reply)
            .ok_or_else(|| EngineError::Protocol { command: "XAUTOCLAIM".into(), detail: format!("{reply:?}") })?;
        self.claim_cursor = parts.first().and_then(value_str).unwrap_or_else(|| "0-0".into());
        Ok(parts.get(1).map(parse_entries).unwrap_or_default())
    }

    /// Decide `orders` atomically, XACK and XDEL them. An order no longer in `queue:orders` was
    /// decided already (by another worker that claimed it, or before a crash) and is only
    /// acknowledged, so a redelivery never applies anything twice.
    pub async fn apply(&mut self, orders: &[Order]) -> Result<BatchResult> {
        if orders.is_empty() {
            return Ok(BatchResult::default());
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(PRODUCT)
            .key(QUEUE_CUSTOMERS)
            .key(QUEUE_ORDERS)
            .key(QUEUE_COMPLETE)
            .key(QUEUE_REJECTED)
            .key(SERVED_CUSTOMERS)
            .arg(NATIVE_GROUP);
        for o in orders {
            inv.arg(&o.id);
        }
        let (completed, rejected, skipped): (u64, u64, u64) =
            inv.invoke_async(&mut self.conn).await.map_err(|e| EngineError::command("EVALSHA native_apply.lua", e))?;
        Ok(BatchResult { completed, rejected, skipped })
    }

    /// Remove consumers of the group that are gone (no heartbeat key) and own no pending entry,
    /// except `keep`. Their pending entries, if any, are claimed by [`Worker::claim_stale`] first;
    /// the check and the removal are one script, so an entry is never dropped with its consumer.
    pub async fn reap_consumers(&mut self, keep: &str) -> Result<Vec<String>> {
        let r: redis::RedisResult<Vec<String>> = redis::Script::new(REAP_LUA)
            .key(QUEUE_ORDERS)
            .arg(NATIVE_GROUP)
            .arg(WORKER_HEARTBEAT_PREFIX)
            .arg(keep)
            .invoke_async(&mut self.conn)
            .await;
        match r {
            Ok(gone) => Ok(gone),
            Err(e) if is_nogroup(&e) => Ok(Vec::new()),
            Err(e) => Err(EngineError::command("EVALSHA reap_consumers.lua", e)),
        }
    }

    /// Record a failed step where `sale` and the operator look (`popup:engine:error`, 5 min TTL).
    /// Only errors Redis answered with count: a dropped connection is not the engine's fault.
    async fn record_error(&mut self, e: &EngineError) {
        if let EngineError::Command { source, .. } = e
            && (source.is_io_error() || source.is_connection_dropped() || source.is_timeout())
        {
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

    /// Process orders until `shutdown` becomes true; then finish the current batch and return.
    /// Transient Redis errors are logged and retried with a back-off.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<WorkerStats> {
        self.ensure_group().await?;
        let sampler =
            self.cfg.sample.then(|| tokio::spawn(sampler_loop(self.conn.clone(), self.cfg.settings, shutdown.clone())));
        let mut stats = WorkerStats::default();
        let heartbeat_every = (self.cfg.heartbeat_ttl / 3).max(Duration::from_millis(100));
        let claim_every = (self.cfg.claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let reap_every = self.cfg.heartbeat_ttl;
        let mut last_heartbeat: Option<Instant> = None;
        let mut last_claim = Instant::now();
        let mut last_reap = Instant::now();
        let mut backoff = Duration::from_millis(100);
        tracing::info!(consumer = %self.cfg.consumer, batch = self.cfg.settings.batch(), "native worker started");
        while !*shutdown.borrow_and_update() {
            let step: Result<()> = async {
                if last_heartbeat.is_none_or(|t| t.elapsed() >= heartbeat_every) {
                    self.heartbeat(&stats).await?;
                    last_heartbeat = Some(Instant::now());
                }
                let mut orders = Vec::new();
                if last_claim.elapsed() >= claim_every {
                    orders = self.claim_stale().await?;
                    if self.claim_cursor == "0-0" {
                        last_claim = Instant::now();
                    }
                    if !orders.is_empty() {
                        stats.claimed += orders.len() as u64;
                        tracing::info!(n = orders.len(), "claimed stale pending orders");
                    }
                }
                if orders.is_empty() {
                    orders = self.read_batch().await?;
                }
                if !orders.is_empty() {
                    let r = self.apply(&orders).await?;
                    stats.batches += 1;
                    stats.orders += r;
                }
                if last_reap.elapsed() >= reap_every {
                    last_reap = Instant::now();
                    let gone = self.reap_consumers(&self.cfg.consumer.clone()).await?;
                    if !gone.is_empty() {
                        tracing::info!(?gone, "removed consumers that are gone and own nothing");
                    }
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "worker step failed; retrying in {backoff:?}");
                    // What this worker read but did not decide is pending for it: read it again
                    // first (another worker may claim it meanwhile; deciding is idempotent).
                    self.own_pending_done = false;
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
        // Leave the group tidy: without a heartbeat and with nothing pending, this consumer is gone.
        if let Err(e) = self.reap_consumers("").await {
            tracing::warn!(error = %e, "could not remove this consumer from the group");
        }
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
    loop {
        if let Err(e) = sample_if_due(&mut conn, &settings).await {
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

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_xreadgroup_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("queue:orders"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("id"), bulk("1"), bulk("customer"), bulk("9-0")]),
                ]),
                // deleted while pending: still returned, so the script acknowledges it
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        assert_eq!(parse_xreadgroup(&reply), vec![Order { id: "1-0".into() }, Order { id: "2-0".into() }]);
        assert!(parse_xreadgroup(&Value::Nil).is_empty());
    }
}
