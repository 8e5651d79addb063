//! The sale half of the product: the flash sale in Redis, with no Kubernetes and no terminal in it.
//!
//! This module is the sale contract shared by every processing engine, and the entry points the operator
//! and the command line use: [`connect`], [`load_scripts`], [`read_sale`], [`engine_health`],
//! [`sample_if_due`].
//!
//! The written contract lives in `docs/engines.md`; the key names below are its single source in
//! code. Three engines implement it:
//! - [`EngineKind::Gears`]: RedisGears 1 Python scripts (`gears.rs`),
//! - [`EngineKind::Triggers`]: RedisGears 2 JavaScript stream triggers (`triggers.rs`),
//! - [`EngineKind::Native`]: our own worker, `popup-operator process` (`native.rs`).
//!
//! Around them: `scripts` (an engine's script files, as a store's scripts ConfigMap shows them),
//! `simulator` (the load generator) and `watch` (following a sale as it happens). Nothing here imports
//! the operator (`crd`, `render`, `controller`, ...) or the command line (`cli`); they import this.

pub mod functions;
pub mod gears;
pub mod marker;
pub mod native;
pub mod scripts;
pub mod simulator;
pub mod triggers;
pub mod watch;

use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use serde::{Deserialize, Serialize};

// ---- keys of the contract -----------------------------------------------------------------------

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
/// written by every engine, read by [`engine_health`].
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

/// Lua script that writes one TimeSeries sample per queue when an interval boundary has passed
/// since the last sample (shared by the native sampler and the idle-gap filler for triggers; the
/// triggers library implements the same rule in JavaScript).
pub const SAMPLE_LUA: &str = include_str!("assets/sample.lua");

// ---- types -------------------------------------------------------------------------------------

/// Which processing engine runs the sale.
///
/// No default: the engine must be the one of the Redis in question (a store's `spec.engine`, whose
/// one default is `crd::Engine::Gears`), so the command lines ask for it (`load --engine` is required).
/// The operator converts a store's engine to and from this (`controller::sale_bridge`); the command line
/// parses it (`cli`). What each one is, in a line: [`EngineKind::description`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Gears,
    Triggers,
    Native,
}

impl EngineKind {
    /// What the engine is, in a line (`--engine`'s help).
    pub fn description(self) -> &'static str {
        match self {
            EngineKind::Gears => "RedisGears 1 Python scripts (RG.PYEXECUTE), as in the original demo",
            EngineKind::Triggers => "RedisGears 2 JavaScript stream triggers (TFUNCTION LOAD), redis-stack 7.x",
            EngineKind::Native => "The operator's own worker (`popup-operator process`), any Redis with TimeSeries",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Gears => "gears",
            EngineKind::Triggers => "triggers",
            EngineKind::Native => "native",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings every engine honours: orders per batch, TimeSeries sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingSettings {
    pub batch_size: u32,
    pub metrics_interval: Duration,
}

impl Default for ProcessingSettings {
    fn default() -> Self {
        ProcessingSettings {
            batch_size: crate::limits::DEFAULT_BATCH_SIZE,
            metrics_interval: Duration::from_secs(crate::limits::DEFAULT_METRICS_INTERVAL_SECONDS.into()),
        }
    }
}

impl ProcessingSettings {
    /// Interval in whole milliseconds, at least 1.
    pub fn interval_ms(&self) -> u64 {
        (self.metrics_interval.as_millis() as u64).max(1)
    }
    /// Batch size, at least 1.
    pub fn batch(&self) -> u32 {
        self.batch_size.max(1)
    }

    /// An engine's script template with its placeholders filled: `__BATCH__`, `__INTERVAL_MS__` and
    /// `__ERROR_TTL_MS__` from these settings, then the engine's own `(placeholder, value)` pairs.
    pub(crate) fn fill(&self, template: &str, extra: &[(&str, String)]) -> String {
        let common = [
            ("__BATCH__", self.batch().to_string()),
            ("__INTERVAL_MS__", self.interval_ms().to_string()),
            ("__ERROR_TTL_MS__", ENGINE_ERROR_TTL.as_millis().to_string()),
        ];
        common
            .iter()
            .chain(extra)
            .fold(template.to_string(), |text, (placeholder, value)| text.replace(placeholder, value))
    }
}

/// What [`load_scripts`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum LoadOutcome {
    /// Everything was already there with the requested settings; nothing was sent.
    AlreadyLoaded,
    /// Nothing was there; the scripts were loaded.
    Loaded,
    /// Something was there but missing parts or with other settings/code; it was replaced.
    Reloaded { reason: String },
}

impl LoadOutcome {
    /// Both parts of a load: reloaded when either was, loaded when either was, else already there.
    pub fn and(self, other: LoadOutcome) -> LoadOutcome {
        use LoadOutcome::*;
        match (self, other) {
            (Reloaded { reason }, _) | (_, Reloaded { reason }) => Reloaded { reason },
            (Loaded, _) | (_, Loaded) => Loaded,
            (AlreadyLoaded, AlreadyLoaded) => AlreadyLoaded,
        }
    }
}

/// The sale's numbers, as shown on the dashboard and in `PopUpStore.status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleSnapshot {
    /// `GET product` (None when the key does not exist).
    pub product: Option<i64>,
    /// `XLEN queue:customers`
    pub customers_waiting: u64,
    /// `XLEN queue:orders`
    pub orders_queued: u64,
    /// `XLEN queue:complete`
    pub completed: u64,
    /// `XLEN queue:rejected`
    pub rejected: u64,
}

impl SaleSnapshot {
    /// Units left (None without a `product` key); a negative value set by hand counts as 0.
    pub fn available(&self) -> Option<u64> {
        self.product.map(|p| p.max(0) as u64)
    }

    /// The stock the sale started with: what is left plus what was sold.
    pub fn stock(&self) -> Option<u64> {
        self.available().map(|a| a.saturating_add(self.completed))
    }

    /// Orders decided so far (completed or rejected).
    pub fn decided(&self) -> u64 {
        self.completed.saturating_add(self.rejected)
    }

    /// Sold out and every order decided: nothing can be sold any more and no order waits for its
    /// answer. (A customer still waiting has an order coming, so that is not over either.)
    pub fn is_over(&self) -> bool {
        self.available() == Some(0) && self.customers_waiting == 0 && self.orders_queued == 0
    }
}

/// Is the engine in place and alive?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineHealth {
    pub kind: EngineKind,
    /// True when every part the engine needs is present (and, for native, a worker is alive).
    pub healthy: bool,
    /// One line for humans / a condition message.
    pub summary: String,
    /// Gears registration ids, trigger names, or native worker consumer names found.
    pub parts: Vec<String>,
}

/// Every failure of the engine layer. Messages say what went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid Redis URL {url:?}: {reason}; use redis://[:password@]host:port[/db]")]
    InvalidUrl { url: String, reason: String },

    #[error(
        "cannot connect to Redis at {addr}: {source}; check that Redis is running there and the address/port are right"
    )]
    Connect {
        addr: String,
        #[source]
        source: redis::RedisError,
    },

    #[error(
        "the server at {addr} does not speak the Redis protocol (its reply to PING cannot be parsed: {detail}); check the host and port in the Redis URL"
    )]
    NotRedis { addr: String, detail: String },

    #[error(
        "Redis at {addr} rejected the credentials ({detail}); put the password in the URL (redis://:PASSWORD@host:port) or set REDIS_PASSWORD"
    )]
    Auth { addr: String, detail: String },

    #[error("Redis at {addr} has no {module} module (MODULE LIST shows: {found}); {fix}")]
    MissingModule { addr: String, module: &'static str, found: String, fix: &'static str },

    #[error("{engine} engine: loading the scripts into Redis at {addr} failed: {detail}")]
    ScriptLoad { engine: EngineKind, addr: String, detail: String },

    #[error(
        "the script {name} is not loaded in Redis ({detail}): the operator loads it (again after a Redis restart that lost it) on its next reconcile; retrying until then"
    )]
    ScriptMissing { name: &'static str, detail: String },

    #[error("Redis command {command} failed: {source}")]
    Command {
        command: String,
        #[source]
        source: redis::RedisError,
    },

    #[error("unexpected reply to {command}: {detail} (is this a compatible Redis/module version?)")]
    Protocol { command: String, detail: String },

    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },

    #[error("{0}")]
    Io(#[from] std::io::Error),

    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// Wrap a command error, recognising auth/connection problems so their message names the fix.
    pub fn command(command: impl Into<String>, source: redis::RedisError) -> Self {
        EngineError::Command { command: command.into(), source }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Any async Redis connection: [`MultiplexedConnection`] or [`ConnectionManager`] (which
/// reconnects by itself; the native worker uses it).
pub trait RedisConn: ConnectionLike + Send {}
impl<T: ConnectionLike + Send> RedisConn for T {}

// ---- connecting --------------------------------------------------------------------------------

/// Parse a Redis URL, applying `password` when the URL has none.
pub fn connection_info(url: &str, password: Option<&str>) -> Result<(redis::ConnectionInfo, String)> {
    use redis::IntoConnectionInfo;
    let info =
        url.into_connection_info().map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let addr = info.addr().to_string();
    let info = match password.filter(|p| !p.is_empty()) {
        Some(pw) if info.redis_settings().password().is_none() => {
            let settings = info.redis_settings().clone().set_password(pw);
            info.set_redis_settings(settings)
        }
        _ => info,
    };
    Ok((info, addr))
}

/// Hide a password in a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Connect (5 s connect timeout, 30 s response timeout) and PING, mapping failures to
/// [`EngineError::Connect`] / [`EngineError::Auth`]. Returns the connection and `host:port`.
pub async fn connect(url: &str, password: Option<&str>) -> Result<(MultiplexedConnection, String)> {
    let (info, addr) = connection_info(url, password)?;
    connect_to(url, info, addr).await
}

/// Like [`connect`], for a client that only reads (the terminal dashboard, e.g. as `popup-grafana`):
/// without the library's `CLIENT SETINFO`, which such a user may not send and Redis would log as
/// refused.
pub async fn connect_reader(url: &str, password: Option<&str>) -> Result<(MultiplexedConnection, String)> {
    let (info, addr) = connection_info(url, password)?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    connect_to(url, info.set_redis_settings(settings), addr).await
}

async fn connect_to(url: &str, info: redis::ConnectionInfo, addr: String) -> Result<(MultiplexedConnection, String)> {
    let client =
        redis::Client::open(info).map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| classify_connect_error(&addr, e))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| classify_connect_error(&addr, e))?;
    Ok((conn, addr))
}

/// Like [`connect`], but a [`ConnectionManager`] that reconnects after the connection drops
/// (e.g. a Redis restart).
pub async fn connect_manager(url: &str, password: Option<&str>) -> Result<(ConnectionManager, String)> {
    let (info, addr) = connection_info(url, password)?;
    let client =
        redis::Client::open(info).map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    let mut conn =
        ConnectionManager::new_with_config(client, config).await.map_err(|e| classify_connect_error(&addr, e))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| classify_connect_error(&addr, e))?;
    Ok((conn, addr))
}

fn classify_connect_error(addr: &str, e: redis::RedisError) -> EngineError {
    let code = e.code().unwrap_or_default().to_string();
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "NOAUTH"
        || code == "WRONGPASS"
        || text.contains("NOAUTH")
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
    {
        EngineError::Auth { addr: addr.to_string(), detail: text }
    } else if e.kind() == redis::ErrorKind::Parse || text.contains("Parse error") {
        // Something answered, but not in RESP: an HTTP server, SSH, another database...
        EngineError::NotRedis { addr: addr.to_string(), detail: text.split_whitespace().collect::<Vec<_>>().join(" ") }
    } else {
        EngineError::Connect { addr: addr.to_string(), source: e }
    }
}

// ---- reply helpers -------------------------------------------------------------------------------

/// A reply value as text (bulk/simple strings, integers, ok); None for nil and aggregates.
pub(crate) fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

pub(crate) fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.trim().parse().ok()),
    }
}

/// Key/value pairs of a RESP2 flat list or a RESP3 map.
pub(crate) fn value_pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| value_str(&kv[0]).map(|k| (k, &kv[1]))).collect()
        }
        Value::Map(pairs) => pairs.iter().map(|(k, v)| value_str(k).map(|k| (k, v))).collect(),
        _ => None,
    }
}

pub(crate) fn value_items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

pub(crate) fn field<'a>(pairs: &'a [(String, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

/// A loaded module as MODULE LIST reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: String,
    pub version: i64,
}

/// `MODULE LIST`, parsed.
pub async fn module_list(conn: &mut impl RedisConn) -> Result<Vec<ModuleInfo>> {
    let reply: Value =
        redis::cmd("MODULE").arg("LIST").query_async(conn).await.map_err(|e| EngineError::command("MODULE LIST", e))?;
    parse_module_list(&reply)
}

pub(crate) fn parse_module_list(reply: &Value) -> Result<Vec<ModuleInfo>> {
    let bad = |detail: &str| EngineError::Protocol { command: "MODULE LIST".into(), detail: detail.into() };
    let items = value_items(reply).ok_or_else(|| bad("not an array"))?;
    items
        .iter()
        .map(|m| {
            let pairs = value_pairs(m).ok_or_else(|| bad("module entry is not a map"))?;
            let name = field(&pairs, "name").and_then(value_str).ok_or_else(|| bad("module without name"))?;
            let version = field(&pairs, "ver").and_then(value_i64).unwrap_or(0);
            Ok(ModuleInfo { name, version })
        })
        .collect()
}

pub(crate) fn describe_modules(mods: &[ModuleInfo]) -> String {
    if mods.is_empty() {
        "no modules".into()
    } else {
        mods.iter().map(|m| format!("{} {}", m.name, m.version)).collect::<Vec<_>>().join(", ")
    }
}

/// A module the engines need: its `MODULE LIST` name, what to call it, and what to do without it.
pub(crate) struct RequiredModule {
    pub name: &'static str,
    pub display: &'static str,
    pub fix: &'static str,
}

/// RedisTimeSeries for the native engine (and the default fix wording).
pub(crate) const TIMESERIES: RequiredModule = RequiredModule {
    name: "timeseries",
    display: "RedisTimeSeries",
    fix: "run redis-stack or Redis 8 (both include RedisTimeSeries) so the ts:* metrics can be written",
};

/// The modules an engine needs, its own engine module first so the message names the right image.
pub(crate) fn required_modules(kind: EngineKind) -> &'static [RequiredModule] {
    const GEARS: [RequiredModule; 2] = [
        gears::MODULE,
        RequiredModule {
            name: "timeseries",
            display: "RedisTimeSeries",
            fix: "run the redislabs/redismod image, which has RedisGears 1 and RedisTimeSeries",
        },
    ];
    const TRIGGERS: [RequiredModule; 2] = [
        triggers::MODULE,
        RequiredModule {
            name: "timeseries",
            display: "RedisTimeSeries",
            fix: "run redis-stack-server 7.2 or 7.4, which has RedisGears 2 and RedisTimeSeries",
        },
    ];
    match kind {
        EngineKind::Gears => &GEARS,
        EngineKind::Triggers => &TRIGGERS,
        EngineKind::Native => std::slice::from_ref(&TIMESERIES),
    }
}

/// Fail with a message naming the module, what Redis has instead, and the fix.
pub(crate) fn require_module(addr: &str, mods: &[ModuleInfo], module: &RequiredModule) -> Result<()> {
    if mods.iter().any(|m| m.name == module.name) {
        Ok(())
    } else {
        Err(EngineError::MissingModule {
            addr: addr.to_string(),
            module: module.display,
            found: describe_modules(mods),
            fix: module.fix,
        })
    }
}

/// Fail unless every module `kind` needs is loaded.
pub(crate) fn require_modules(addr: &str, mods: &[ModuleInfo], kind: EngineKind) -> Result<()> {
    required_modules(kind).iter().try_for_each(|m| require_module(addr, mods, m))
}

/// Fail with a helpful message unless RedisTimeSeries is loaded.
pub(crate) fn require_timeseries(addr: &str, mods: &[ModuleInfo]) -> Result<()> {
    require_module(addr, mods, &TIMESERIES)
}

/// The server address of a connection for messages: `laddr` of CLIENT INFO is the server-side
/// address the client is connected to.
pub(crate) async fn server_addr(conn: &mut impl RedisConn) -> String {
    let reply: redis::RedisResult<String> = redis::cmd("CLIENT").arg("INFO").query_async(conn).await;
    reply
        .ok()
        .and_then(|info| info.split_whitespace().find_map(|kv| kv.strip_prefix("laddr=").map(str::to_string)))
        .unwrap_or_else(|| "the connected Redis".to_string())
}

// ---- entry points ----------------------------------------------------------------------------------

/// Make sure the engine's scripts are in Redis with these settings (idempotent).
///
/// - gears: RG.DUMPREGISTRATIONS is compared with the expected registrations; RG.PYEXECUTE
///   `ID popup-complete|popup-timeseries UPGRADE` is sent only for missing/different ones.
/// - triggers: TFUNCTION LIST WITHCODE is compared with the library text; TFUNCTION LOAD REPLACE
///   only when missing/different.
/// - native: the worker is a separate process; its scripts are loaded as below.
///
/// Then the scripts the engine's components call ([`functions::scripts_for`]) as Redis Functions
/// (`FUNCTION LOAD REPLACE` when missing or different), or into the script cache on Redis 6.2: the
/// components may only call them (see [`functions`]).
pub async fn load_scripts(
    conn: &mut impl RedisConn,
    kind: EngineKind,
    settings: &ProcessingSettings,
) -> Result<LoadOutcome> {
    let addr = server_addr(conn).await;
    let mods = module_list(conn).await?;
    require_modules(&addr, &mods, kind)?;
    let engine = match kind {
        EngineKind::Gears => gears::load(conn, &addr, settings).await?,
        EngineKind::Triggers => triggers::load(conn, &addr, settings).await?,
        EngineKind::Native => LoadOutcome::AlreadyLoaded,
    };
    let scripts = functions::ensure(conn, functions::scripts_for(kind)).await.map_err(|e| match e {
        EngineError::Command { command, source } => {
            EngineError::ScriptLoad { engine: kind, addr: addr.clone(), detail: format!("{command}: {source}") }
        }
        other => other,
    })?;
    Ok(engine.and(scripts))
}

/// Read the sale's numbers (GET product, XLEN of the four queues) in one round trip.
pub async fn read_sale(conn: &mut impl RedisConn) -> Result<SaleSnapshot> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(PRODUCT);
    for q in QUEUES {
        pipe.cmd("XLEN").arg(q);
    }
    let reply: Vec<Value> =
        pipe.query_async(conn).await.map_err(|e| EngineError::command("GET product / XLEN queue:*", e))?;
    let product = match reply.first() {
        Some(Value::Nil) | None => None,
        Some(v) => Some(value_i64(v).ok_or_else(|| EngineError::Protocol {
            command: "GET product".into(),
            detail: format!("product is not an integer: {v:?}"),
        })?),
    };
    let len = |i: usize| reply.get(i).and_then(value_i64).unwrap_or(0).max(0) as u64;
    Ok(SaleSnapshot { product, customers_waiting: len(1), orders_queued: len(2), completed: len(3), rejected: len(4) })
}

/// Is the engine present, alive and deciding orders? Unhealthy when a module it needs is missing,
/// its parts are missing (gears: both registrations; triggers: the library and its two stream
/// triggers; native: a worker heartbeat), or whatever the engine, when it recorded a failure in
/// the last [`ENGINE_ERROR_TTL`], an order has waited longer than [`STALLED_AFTER`], or `product`
/// is not an integer.
pub async fn engine_health(conn: &mut impl RedisConn, kind: EngineKind) -> Result<EngineHealth> {
    let addr = server_addr(conn).await;
    let mods = module_list(conn).await?;
    if let Err(e) = require_modules(&addr, &mods, kind) {
        return Ok(EngineHealth { kind, healthy: false, summary: e.to_string(), parts: Vec::new() });
    }
    let mut health = match kind {
        EngineKind::Gears => gears::health(conn).await?,
        EngineKind::Triggers => triggers::health(conn).await?,
        EngineKind::Native => native::health(conn).await?,
    };
    let problems = sale_problems(conn).await?;
    if !problems.is_empty() {
        health.healthy = false;
        health.summary = format!("{}; {}", problems.join("; "), health.summary);
    }
    Ok(health)
}

/// What is wrong with the sale whatever the engine: a recorded engine failure, an order waiting
/// too long, a `product` that is not an integer (every order would be rejected as sold out).
pub async fn sale_problems(conn: &mut impl RedisConn) -> Result<Vec<String>> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(ENGINE_ERROR);
    pipe.cmd("XRANGE").arg(QUEUE_ORDERS).arg("-").arg("+").arg("COUNT").arg(1);
    pipe.cmd("TIME");
    pipe.cmd("TYPE").arg(PRODUCT);
    let (error, oldest, time, product_type): (Option<String>, Value, (u64, u64), String) = pipe
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("GET popup:engine:error / XRANGE queue:orders / TIME", e))?;
    let mut problems = Vec::new();
    if let Some(error) = error {
        let minutes = ENGINE_ERROR_TTL.as_secs() / 60;
        problems.push(format!("the engine failed to decide an order in the last {minutes} minutes: {error}"));
    }
    let now_ms = time.0 * 1000 + time.1 / 1000;
    let oldest_ms = value_items(&oldest)
        .and_then(|entries| entries.first())
        .and_then(value_items)
        .and_then(|entry| entry.first())
        .and_then(value_str)
        .and_then(|id| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()));
    if let Some(ms) = oldest_ms {
        let waited = Duration::from_millis(now_ms.saturating_sub(ms));
        if waited > STALLED_AFTER {
            problems.push(format!(
                "the oldest order in {QUEUE_ORDERS} has waited {}s: the engine is not deciding orders",
                waited.as_secs()
            ));
        }
    }
    if product_type != "none" {
        let product: Value = redis::cmd("GET").arg(PRODUCT).query_async(conn).await.unwrap_or(Value::Nil);
        let text = value_str(&product).unwrap_or_else(|| format!("a {product_type}"));
        if product_type != "string" || !is_canonical_i64(&text) {
            problems.push(format!(
                "{PRODUCT} holds {text:?}, not an integer: every order is rejected as sold-out; SET {PRODUCT} <units>"
            ));
        }
    }
    Ok(problems)
}

/// An integer exactly as Redis DECR reads it (no sign `+`, spaces or leading zeros), the same test
/// the engines' scripts make before they sell.
pub fn is_canonical_i64(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = digits == "0" || (!digits.is_empty() && !digits.starts_with('0'));
    canonical && digits.bytes().all(|b| b.is_ascii_digit()) && s != "-0" && s.parse::<i64>().is_ok()
}

/// Write one TimeSeries sample per queue if an interval boundary has passed since the last sample
/// (atomic: several callers in the same interval write once). Returns true when it wrote.
///
/// The sampler is the operator's function [`functions::SAMPLE`] (loaded by [`load_scripts`] for the
/// native and triggers engines): without it, [`EngineError::ScriptMissing`].
pub async fn sample_if_due(conn: &mut impl RedisConn, settings: &ProcessingSettings) -> Result<bool> {
    sample_with(&functions::Caller::new(), conn, settings).await
}

/// [`sample_if_due`] with a caller that remembers how this Redis runs scripts.
pub async fn sample_with(
    caller: &functions::Caller,
    conn: &mut impl RedisConn,
    settings: &ProcessingSettings,
) -> Result<bool> {
    let mut keys: Vec<String> = vec![SAMPLE_LAST.into(), SAMPLE_ADDED.into()];
    for q in QUEUES {
        keys.extend([q.to_string(), ts_len_key(q), ts_enqueue_key(q)]);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let wrote: i64 = caller.call(conn, &functions::SAMPLE, &keys, &[settings.interval_ms().to_string()]).await?;
    Ok(wrote == 1)
}

/// A small stable hash (FNV-1a 64) of script text, used to tag what is loaded.
pub fn script_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn every_engine_script_has_its_placeholders_filled() {
        let settings = ProcessingSettings { batch_size: 0, metrics_interval: Duration::from_millis(2500) };
        assert_eq!(settings.fill("b=__BATCH__ i=__INTERVAL_MS__ x=__X__", &[("__X__", "y".into())]), "b=1 i=2500 x=y");
        let mut codes: Vec<String> = gears::scripts(&settings).into_iter().map(|s| s.code).collect();
        codes.push(triggers::library_code(&settings));
        for code in codes {
            let left =
                code.match_indices("__").any(|(i, _)| code[i + 2..].starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(!left, "a placeholder is left in:\n{code}");
        }
    }

    #[test]
    fn parses_module_list_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("timeseries"),
                bulk("ver"),
                Value::Int(11202),
                bulk("path"),
                bulk("/x.so"),
                bulk("args"),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![bulk("name"), bulk("redisgears_2"), bulk("ver"), Value::Int(20020)]),
        ]);
        let mods = parse_module_list(&resp2).unwrap();
        assert_eq!(mods[0].name, "timeseries");
        assert_eq!(mods[1].version, 20020);
        let resp3 = Value::Array(vec![Value::Map(vec![(bulk("name"), bulk("rg")), (bulk("ver"), Value::Int(10205))])]);
        assert_eq!(parse_module_list(&resp3).unwrap(), vec![ModuleInfo { name: "rg".into(), version: 10205 }]);
    }

    #[test]
    fn password_from_env_only_when_url_has_none() {
        let (info, addr) = connection_info("redis://127.0.0.1:6390", Some("pw")).unwrap();
        assert_eq!(addr, "127.0.0.1:6390");
        assert_eq!(info.redis_settings().password(), Some("pw"));
        let (info, _) = connection_info("redis://:inurl@127.0.0.1:6390", Some("pw")).unwrap();
        assert_eq!(info.redis_settings().password(), Some("inurl"));
        assert!(connection_info("nonsense://x", None).is_err());
        assert_eq!(redact("redis://:secret@h:1"), "redis://***@h:1");
    }

    #[test]
    fn error_messages_name_cause_and_fix() {
        let e = EngineError::MissingModule {
            addr: "h:1".into(),
            module: "RedisGears 1",
            found: "timeseries 11202".into(),
            fix: "use engine triggers or native",
        };
        assert_eq!(
            e.to_string(),
            "Redis at h:1 has no RedisGears 1 module (MODULE LIST shows: timeseries 11202); use engine triggers or native"
        );
    }

    #[test]
    fn script_hash_is_stable() {
        assert_eq!(script_hash(""), "cbf29ce484222325");
        assert_ne!(script_hash("a"), script_hash("b"));
    }
}
