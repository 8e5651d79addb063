//! The gears engine on both runtimes: the CPython emulation (tests/gears_shim, on redis-stack) and,
//! when `$POPUP_REDISGEARS1` names it, real RedisGears 1.2 on Redis 6.2. Each scenario runs on
//! both and compares what a sale ends with, so the emulation is held to what the real runtime does;
//! without the runtime the scenarios run on the emulation alone and say so.
//!
//! - a sale: every order decided once, every entry counted in `ts:enqueue:*`;
//! - a second StreamReader on the orders (the seed's metrics reader, which this engine had until it
//!   ran on real RedisGears 1): it takes an order away from the completion reader on both
//!   runtimes; loading the current scripts over it decides that order;
//! - Redis killed mid-sale and restarted from its AOF, and the scripts loaded again with other
//!   settings mid-sale: nothing lost, nothing decided twice.

pub mod support;
use support::redis_server;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use popup_operator::sale::gears::{self, CONSUMER_GROUP, ID_COMPLETE, ID_TIMESERIES};
use popup_operator::sale::simulator::{self, Resilience, SimulationSummary, SimulatorConfig};
use popup_operator::sale::{
    self, EngineKind, LoadOutcome, PRODUCT, ProcessingSettings, QUEUE_COMPLETE, QUEUE_CUSTOMERS, QUEUE_ORDERS,
    QUEUE_REJECTED, QUEUES,
};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_server::{ChildGuard, RedisServer, quick_sale, redisgears1, start_shim_with};

fn settings() -> ProcessingSettings {
    ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_millis(200) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Emulated,
    Real,
}

/// The runtimes a scenario runs on: the emulation always, the real one when given.
fn runtimes() -> Vec<Runtime> {
    if redisgears1().is_some() {
        vec![Runtime::Emulated, Runtime::Real]
    } else {
        eprintln!(
            "NOTE: the gears scenarios ran on the CPython emulation only: POPUP_REDISGEARS1 is unset \
             (point it at ../shared/redisgears1 to compare with real RedisGears 1)"
        );
        vec![Runtime::Emulated]
    }
}

/// `scenario` on every runtime at hand; each must end with `expected`, so the emulation and the real
/// runtime end alike.
async fn on_each_runtime<T, F, Fut>(scenario: F, expected: T)
where
    T: PartialEq + std::fmt::Debug,
    F: Fn(Runtime) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for runtime in runtimes() {
        assert_eq!(scenario(runtime).await, expected, "{runtime:?}");
    }
}

/// A sale's exact end: `stock` sold, the rest rejected, nothing left, nothing twice.
fn sold_out(stock: u64, customers: u64) -> Outcome {
    Outcome {
        completed: stock,
        rejected: customers - stock,
        product: Some(0),
        orders_left: 0,
        customers_left: 0,
        decided_twice: 0,
    }
}

/// A Redis with the given gears scripts registered (name = session id, code).
struct Engine {
    runtime: Runtime,
    server: RedisServer,
    shim: Option<ChildGuard>,
}

impl Engine {
    async fn start(runtime: Runtime, extra: &[&str], scripts: &[(String, String)]) -> Engine {
        let server = match runtime {
            Runtime::Real => RedisServer::start_gears1(extra),
            Runtime::Emulated => RedisServer::start_with(extra),
        };
        let mut engine = Engine { runtime, server, shim: None };
        engine.register(scripts).await;
        engine
    }

    /// As `RG.PYEXECUTE <code> ID <name> UPGRADE` each (on the emulation: a shim running them).
    async fn register(&mut self, scripts: &[(String, String)]) {
        match self.runtime {
            Runtime::Real => {
                let mut conn = self.server.conn().await;
                for (id, code) in scripts {
                    let _: Value = redis::cmd("RG.PYEXECUTE")
                        .arg(code)
                        .arg("ID")
                        .arg(id)
                        .arg("UPGRADE")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("RG.PYEXECUTE {id}: {e}"));
                }
            }
            Runtime::Emulated => self.shim = Some(start_shim_with(&self.server, &self.server.url(), scripts)),
        }
    }

    fn log(&self) -> String {
        let file = match self.runtime {
            Runtime::Real => format!("redis-{}.log", self.server.port),
            Runtime::Emulated => "shim.log".into(),
        };
        std::fs::read_to_string(self.server.dir.join(file)).unwrap_or_default()
    }
}

fn current_scripts(settings: &ProcessingSettings) -> Vec<(String, String)> {
    gears::scripts(settings).into_iter().map(|s| (s.id.to_string(), s.code)).collect()
}

/// What a sale ends with.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    completed: u64,
    rejected: u64,
    product: Option<i64>,
    orders_left: u64,
    customers_left: u64,
    /// Orders found in queue:complete ∪ queue:rejected more than once.
    decided_twice: usize,
}

/// The sale's end as one snapshot (MULTI/EXEC): a decision is never half seen.
async fn outcome(conn: &mut MultiplexedConnection) -> Outcome {
    type Entries = Vec<(String, Vec<(String, String)>)>;
    #[allow(clippy::type_complexity)]
    let (complete, rejected, product, orders_left, customers_left): (Entries, Entries, Option<String>, u64, u64) =
        redis::pipe()
            .atomic()
            .cmd("XRANGE")
            .arg(QUEUE_COMPLETE)
            .arg("-")
            .arg("+")
            .cmd("XRANGE")
            .arg(QUEUE_REJECTED)
            .arg("-")
            .arg("+")
            .cmd("GET")
            .arg(PRODUCT)
            .cmd("XLEN")
            .arg(QUEUE_ORDERS)
            .cmd("XLEN")
            .arg(QUEUE_CUSTOMERS)
            .query_async(conn)
            .await
            .unwrap();
    let mut seen = HashSet::new();
    let mut twice = 0;
    for (_, fields) in complete.iter().chain(&rejected) {
        let order = fields.iter().find(|(k, _)| k == "order").map(|(_, v)| v.clone()).unwrap();
        if !seen.insert(order) {
            twice += 1;
        }
    }
    Outcome {
        completed: complete.len() as u64,
        rejected: rejected.len() as u64,
        product: product.map(|p| p.parse().unwrap()),
        orders_left,
        customers_left,
        decided_twice: twice,
    }
}

/// Until `done(outcome)`, or panic after `within` with the last outcome and the runtime's log.
async fn wait_for(engine: &Engine, within: Duration, what: &str, done: impl Fn(&Outcome) -> bool) -> Outcome {
    let mut conn = engine.server.conn().await;
    let deadline = Instant::now() + within;
    loop {
        let o = outcome(&mut conn).await;
        if done(&o) {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}: {what} not within {within:?}: {o:?}\n{}",
            engine.runtime,
            engine.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of a TimeSeries' samples (0 while it does not exist).
async fn ts_sum(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    let samples: redis::RedisResult<Vec<(i64, String)>> =
        redis::cmd("TS.RANGE").arg(key).arg("-").arg("+").query_async(conn).await;
    samples.map(|s| s.iter().map(|(_, v)| v.parse::<f64>().unwrap() as u64).sum()).unwrap_or(0)
}

fn sale_config(stock: i64, customers: u64) -> SimulatorConfig {
    // RedisGears' consumer group lives on queue:orders (and the emulation's, likewise)
    SimulatorConfig { reset: false, ..quick_sale(stock, customers) }
}

// ---- a sale ------------------------------------------------------------------------------------------------

/// What a sale of 40 customers for 25 units ends with, and the entries counted per queue.
async fn a_sale(runtime: Runtime) -> (Outcome, Vec<u64>) {
    let engine = Engine::start(runtime, &[], &current_scripts(&settings())).await;
    let mut conn = engine.server.conn().await;
    let (stock, customers) = (25, 40);
    let summary = simulator::run(&mut conn, &sale_config(stock, customers), |_| {}).await.unwrap();
    assert!(summary.all_processed, "{runtime:?}: {summary:?}\n{}", engine.log());
    let o = wait_for(&engine, Duration::from_secs(20), "every order decided", |o| o.orders_left == 0).await;
    // Every entry is counted once the interval it arrived in has been sampled.
    let expected = [customers, customers, stock as u64, customers - stock as u64];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counted = Vec::new();
    for (queue, want) in QUEUES.iter().zip(expected) {
        loop {
            let n = ts_sum(&mut conn, &sale::ts_enqueue_key(queue)).await;
            if n == want || Instant::now() > deadline {
                counted.push(n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (o, counted)
}

#[tokio::test]
async fn a_sale_ends_alike_on_both_runtimes() {
    // Every entry counted in ts:enqueue:<queue>: customers, orders, completed, rejected.
    on_each_runtime(a_sale, (sold_out(25, 40), vec![40, 40, 25, 15])).await;
}

// ---- a second reader on the orders ---------------------------------------------------------------------------

/// The completion script beside the metrics StreamReader this engine had before (and the seed has).
fn with_stream_reader_metrics(settings: &ProcessingSettings) -> Vec<(String, String)> {
    let fixture = include_str!("gears_shim/metrics_stream_reader.py")
        .replace("__INTERVAL_MS__", &settings.metrics_interval.as_millis().to_string());
    vec![(ID_COMPLETE.to_string(), gears::scripts(settings)[0].code.clone()), (ID_TIMESERIES.to_string(), fixture)]
}

/// Has the shared group delivered every order and none is pending? (Then an order still in the
/// stream was taken and acknowledged without being decided.)
async fn group_done(conn: &mut MultiplexedConnection, order: &str) -> bool {
    let groups: Value = redis::cmd("XINFO").arg("GROUPS").arg(QUEUE_ORDERS).query_async(conn).await.unwrap();
    let Value::Array(groups) = groups else { return false };
    groups.iter().any(|g| {
        let text = format!("{g:?}");
        let field = |name: &str| -> Option<String> {
            let Value::Array(items) = g else { return None };
            items.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), v] if k == name.as_bytes() => match v {
                    Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    Value::Int(i) => Some(i.to_string()),
                    _ => None,
                },
                _ => None,
            })
        };
        text.contains(CONSUMER_GROUP)
            && field("pending").as_deref() == Some("0")
            && field("last-delivered-id").is_some_and(|id| id_at_least(&id, order))
    })
}

fn id_at_least(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> (u64, u64) {
        let (ms, seq) = s.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    parse(a) >= parse(b)
}

/// (the outcome while the metrics StreamReader runs, the outcome after loading the current scripts)
async fn a_second_reader(runtime: Runtime) -> (Outcome, Outcome) {
    let s = settings();
    let mut engine = Engine::start(runtime, &[], &with_stream_reader_metrics(&s)).await;
    let mut conn = engine.server.conn().await;
    let _: () = redis::cmd("SET").arg(PRODUCT).arg(5).query_async(&mut conn).await.unwrap();
    let customer: String =
        redis::cmd("XADD").arg(QUEUE_CUSTOMERS).arg("*").arg("id").arg(1).query_async(&mut conn).await.unwrap();
    // One order, fewer than a batch: the completion reader waits 500 ms for more, the metrics reader
    // fires after its 200 ms interval and takes it.
    let order: String = redis::cmd("XADD")
        .arg(QUEUE_ORDERS)
        .arg("*")
        .arg("id")
        .arg(1)
        .arg("customer")
        .arg(&customer)
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !group_done(&mut conn, &order).await {
        assert!(Instant::now() < deadline, "{runtime:?}: the group never delivered {order}\n{}", engine.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delivered, acknowledged, still in the stream: taken by the metrics reader, not decided. (The
    // completion script's sweep would decide it once it is 2 s old; the snapshot comes well before.)
    let stranded = outcome(&mut conn).await;

    // The upgrade, as the operator does it: `load_scripts` (on the emulation, which has no RG.*
    // commands: stop the old registrations, the same rewind, the current scripts).
    match runtime {
        Runtime::Real => match sale::load_scripts(&mut conn, EngineKind::Gears, &s).await.unwrap() {
            LoadOutcome::Reloaded { reason } => {
                assert!(reason.contains("read by another registration"), "{reason}")
            }
            other => panic!("loading over the old metrics reader: {other:?}"),
        },
        Runtime::Emulated => {
            engine.shim = None;
            assert_eq!(gears::rewind_stranded_orders(&mut conn).await.unwrap(), 1);
            engine.register(&current_scripts(&s)).await;
        }
    }
    let after = wait_for(&engine, Duration::from_secs(10), "the taken order decided", |o| o.orders_left == 0).await;
    (stranded, after)
}

#[tokio::test]
async fn a_second_stream_reader_takes_an_order_and_loading_over_it_decides_it() {
    // Taken: still in queue:orders, never decided, the customer still waiting. Then decided.
    let taken =
        Outcome { completed: 0, rejected: 0, product: Some(5), orders_left: 1, customers_left: 1, decided_twice: 0 };
    let decided = Outcome { completed: 1, product: Some(4), orders_left: 0, customers_left: 0, ..taken };
    on_each_runtime(a_second_reader, (taken, decided)).await;
}

// ---- mid-sale ------------------------------------------------------------------------------------------------

/// The sale the mid-sale tests act in: `(stock, customers)`, the customers arriving at 100 a second.
const MID_SALE: (i64, u64) = (150, 200);

/// The simulator playing [`MID_SALE`] on a task of its own, returned once 50 orders are decided (the
/// customers still arriving). `resilient`: it retries what fails for 30 s, as a simulator Job does
/// (Redis restarting); otherwise a failed command ends the run with an error.
async fn sale_under_way(engine: &Engine, resilient: bool) -> tokio::task::JoinHandle<sale::Result<SimulationSummary>> {
    let url = engine.server.url();
    let cfg = SimulatorConfig { rate: Some(100.0), ..sale_config(MID_SALE.0, MID_SALE.1) };
    let sale = tokio::spawn(async move {
        if resilient {
            let warn: simulator::Warn = std::sync::Arc::new(|_: &str| {});
            let resilience = Resilience { retry_for: Duration::from_secs(30) };
            simulator::run_resilient(&url, None, &cfg, &resilience, |_| {}, warn).await
        } else {
            let (mut conn, _) = sale::connect(&url, None).await.unwrap();
            simulator::run(&mut conn, &cfg, |_| {}).await
        }
    });
    wait_for(engine, Duration::from_secs(20), "50 orders decided", |o| o.completed + o.rejected >= 50).await;
    sale
}

/// The end of [`sale_under_way`]'s sale: every customer sent, then (`what`) every order decided.
async fn sale_ended(
    engine: &Engine,
    sale: tokio::task::JoinHandle<sale::Result<SimulationSummary>>,
    what: &str,
) -> Outcome {
    let runtime = engine.runtime;
    let customers = MID_SALE.1;
    let summary = sale.await.unwrap().unwrap_or_else(|e| panic!("{runtime:?}: the simulator failed: {e}"));
    assert_eq!(summary.customers, customers, "{runtime:?}: {summary:?}");
    wait_for(engine, Duration::from_secs(30), what, |o| o.orders_left == 0 && o.completed + o.rejected >= customers)
        .await
}

// ---- Redis killed mid-sale, restarted from its AOF ---------------------------------------------------------------

async fn a_restart(runtime: Runtime) -> Outcome {
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let scripts = current_scripts(&settings());
    let mut engine = Engine::start(runtime, &aof, &scripts).await;
    let sale = sale_under_way(&engine, true).await;
    engine.shim = None; // the emulation's connection dies with Redis anyway
    engine.server.restart(); // SIGKILL, then the same port and directory: Redis loads its AOF
    if runtime == Runtime::Emulated {
        // RedisGears keeps its registrations in the AOF; the emulation registers them again.
        engine.register(&scripts).await;
    }
    sale_ended(&engine, sale, "every order decided after the restart").await
}

#[tokio::test]
async fn a_restart_from_the_aof_mid_sale_loses_and_repeats_nothing() {
    on_each_runtime(a_restart, sold_out(MID_SALE.0 as u64, MID_SALE.1)).await;
}

// ---- the scripts replaced mid-sale -----------------------------------------------------------------------------

/// A sale during which the scripts are loaded again with other settings (a new batch size: other code,
/// so `load_scripts` re-registers both sessions with UPGRADE while orders arrive).
async fn an_upgrade(runtime: Runtime) -> Outcome {
    let mut engine = Engine::start(runtime, &[], &current_scripts(&settings())).await;
    let sale = sale_under_way(&engine, false).await;
    let upgraded = ProcessingSettings { batch_size: 5, ..settings() };
    match runtime {
        Runtime::Real => {
            let mut conn = engine.server.conn().await;
            let outcome = sale::load_scripts(&mut conn, EngineKind::Gears, &upgraded).await.unwrap();
            assert!(matches!(outcome, LoadOutcome::Reloaded { .. }), "{outcome:?}");
        }
        Runtime::Emulated => {
            engine.shim = None;
            engine.register(&current_scripts(&upgraded)).await;
        }
    }
    sale_ended(&engine, sale, "every order decided after the upgrade").await
}

#[tokio::test]
async fn scripts_loaded_again_mid_sale_lose_and_repeat_nothing() {
    on_each_runtime(an_upgrade, sold_out(MID_SALE.0 as u64, MID_SALE.1)).await;
}
