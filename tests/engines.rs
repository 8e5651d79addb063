//! Contract tests of the three engines against a real redis-stack-server (RedisTimeSeries +
//! RedisGears 2). Every test starts its own server on a free loopback port, without persistence,
//! and kills it on drop (also when the test panics).
//!
//! The server binary comes from `$REDIS_STACK_SERVER`, else
//! `${POPUP_CACHE:-$HOME/.cache/popup-operator}/redis-stack/bin/redis-stack-server`, else PATH.
//! Run `bash hack/install-redis-stack.sh` once to get it.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popup_operator::sale::native::{BatchResult, Worker, WorkerConfig};
use popup_operator::sale::simulator;
use popup_operator::sale::{
    self, EngineError, EngineKind, LoadOutcome, ProcessingSettings, QUEUE_COMPLETE, QUEUE_CUSTOMERS, QUEUE_ORDERS,
    QUEUE_REJECTED, QUEUES, engine_health, load_scripts, read_sale,
};
use rand::{Rng, SeedableRng};
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::watch;

pub mod support;
use support::redis_server;

use redis_server::{ChildGuard, Gears, GearsRuntime, RedisServer, free_port, quick_sale, simulate};

// ---- contract checks -------------------------------------------------------------------------------

fn settings() -> ProcessingSettings {
    ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_millis(200) }
}

async fn entries(conn: &mut MultiplexedConnection, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    let reply: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(conn).await.unwrap();
    reply
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// Wait until `decided` orders have been completed or rejected in total.
async fn wait_decided(conn: &mut MultiplexedConnection, decided: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = read_sale(conn).await.unwrap();
        if s.completed + s.rejected >= decided {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {decided} orders decided within {within:?}: {s:?}",
            s.completed + s.rejected
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inject a second order for a customer that was already served; it must be rejected as a
/// duplicate without touching the product.
async fn inject_duplicate(conn: &mut MultiplexedConnection) {
    let before = read_sale(conn).await.unwrap();
    let done = entries(conn, QUEUE_COMPLETE).await;
    let customer = get(&done[0].1, "customer").to_string();
    let _: String = redis::cmd("XADD")
        .arg(QUEUE_ORDERS)
        .arg("*")
        .arg("id")
        .arg("dup")
        .arg("customer")
        .arg(&customer)
        .query_async(conn)
        .await
        .unwrap();
    wait_decided(conn, before.completed + before.rejected + 1, Duration::from_secs(10)).await;
    let after = read_sale(conn).await.unwrap();
    assert_eq!(after.product, before.product, "a duplicate order changed the product");
    assert_eq!(after.completed, before.completed);
    let rejected = entries(conn, QUEUE_REJECTED).await;
    let last = &rejected.last().unwrap().1;
    assert_eq!(get(last, "reason"), "duplicate");
    assert_eq!(get(last, "customer"), customer);
}

/// The contract after a sale of `customers` orders (+ `extra` injected orders) with `stock`.
async fn assert_contract(conn: &mut MultiplexedConnection, stock: i64, customers: u64, extra: u64) {
    let sale = read_sale(conn).await.unwrap();
    let complete = entries(conn, QUEUE_COMPLETE).await;
    let rejected = entries(conn, QUEUE_REJECTED).await;
    assert_eq!(sale.completed, complete.len() as u64);
    // product = stock - completed, never negative
    let product = sale.product.expect("product exists");
    assert!(product >= 0, "product went negative: {product}");
    assert_eq!(product, stock - sale.completed as i64, "product != stock - completed: {sale:?}");
    // every order decided exactly once
    assert_eq!(sale.completed + sale.rejected, customers + extra, "{sale:?}");
    let mut orders = HashSet::new();
    for (_, f) in complete.iter().chain(rejected.iter()) {
        assert!(orders.insert(get(f, "order").to_string()), "order {} decided twice", get(f, "order"));
    }
    // one completion per customer
    let served: HashSet<&str> = complete.iter().map(|(_, f)| get(f, "customer")).collect();
    assert_eq!(served.len(), complete.len(), "a customer got two completed orders");
    // sold out exactly when there were more customers than stock
    let expected_completed = (customers as i64).min(stock) as u64;
    assert_eq!(sale.completed, expected_completed);
    let sold_out = rejected.iter().filter(|(_, f)| get(f, "reason") == "sold-out").count() as u64;
    assert_eq!(sold_out, customers - expected_completed);
    // queues drained
    assert_eq!(sale.customers_waiting, 0, "queue:customers not drained");
    assert_eq!(sale.orders_queued, 0, "queue:orders not drained");
    // Nothing is kept per order or customer outside the contract's streams: no other keys.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    let named = |k: &str| {
        [
            sale::PRODUCT,
            sale::SAMPLE_LAST,
            sale::SAMPLE_ADDED,
            sale::SAMPLE_COUNTS,
            sale::SAMPLE_CLOCK,
            sale::GEARS_SWEEP,
            sale::ENGINE_ERROR,
        ]
        .contains(&k)
            || [sale::QUEUE_PREFIX, sale::TS_LEN_PREFIX, sale::TS_ENQUEUE_PREFIX, sale::WORKER_HEARTBEAT_PREFIX]
                .iter()
                .any(|p| k.starts_with(p))
    };
    let other: Vec<&String> = keys.iter().filter(|k| !named(k)).collect();
    assert!(other.is_empty(), "keys outside the contract: {other:?}");
}

/// The samples of `key`, none while the series does not exist yet.
async fn ts_samples_or_none(conn: &mut MultiplexedConnection, key: &str) -> Vec<(i64, f64)> {
    let exists: u64 = redis::cmd("EXISTS").arg(key).query_async(conn).await.unwrap();
    if exists == 0 { Vec::new() } else { ts_samples(conn, key).await }
}

async fn ts_samples(conn: &mut MultiplexedConnection, key: &str) -> Vec<(i64, f64)> {
    let reply: Vec<(i64, String)> = redis::cmd("TS.RANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("TS.RANGE {key}: {e}"));
    reply.into_iter().map(|(t, v)| (t, v.parse().unwrap())).collect()
}

/// TimeSeries keys exist for every queue with plausible samples.
async fn assert_timeseries(conn: &mut MultiplexedConnection, customers: u64, queues: &[&str]) {
    for q in queues {
        let len = ts_samples(conn, &sale::ts_len_key(q)).await;
        let enq = ts_samples(conn, &sale::ts_enqueue_key(q)).await;
        assert!(!len.is_empty(), "no samples in ts:len:{q}");
        assert!(!enq.is_empty(), "no samples in ts:enqueue:{q}");
        for (_, v) in &len {
            assert!(*v >= 0.0 && *v <= (customers + 1) as f64, "implausible ts:len:{q} sample {v}");
        }
        let total: f64 = enq.iter().map(|(_, v)| v).sum();
        assert!(total >= 0.0 && total <= (customers + 1) as f64, "implausible sum of ts:enqueue:{q}: {total}");
        assert!(len.windows(2).all(|w| w[0].0 < w[1].0), "timestamps of ts:len:{q} not increasing");
    }
    let customers_added: f64 =
        ts_samples(conn, &sale::ts_enqueue_key(QUEUE_CUSTOMERS)).await.iter().map(|(_, v)| v).sum();
    assert!(customers_added > 0.0, "ts:enqueue:queue:customers never counted an arrival");
}

/// The operator loads `kind`'s scripts twice: loaded, then found in place.
async fn assert_loads_once(conn: &mut MultiplexedConnection, kind: EngineKind) {
    assert_eq!(load_scripts(conn, kind, &settings()).await.unwrap(), LoadOutcome::Loaded);
    assert_eq!(load_scripts(conn, kind, &settings()).await.unwrap(), LoadOutcome::AlreadyLoaded);
}

/// Wait until one more sampling interval has passed, with some stream traffic to trigger it.
async fn one_more_interval(conn: &mut MultiplexedConnection) {
    tokio::time::sleep(settings().metrics_interval * 2).await;
    let _: String = redis::cmd("XADD").arg("queue:tick").arg("*").arg("t").arg("1").query_async(conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
}

// ---- triggers ------------------------------------------------------------------------------------------

#[tokio::test]
async fn triggers_engine_keeps_the_contract() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    assert_loads_once(&mut conn, EngineKind::Triggers).await;
    let libs: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut conn).await.unwrap();
    assert_eq!(triggers_libraries(&libs), vec!["popup".to_string()], "loading twice must leave one library");
    assert!(engine_health(&mut conn, EngineKind::Triggers).await.unwrap().healthy);

    let (stock, customers) = (40, 60);
    simulate(&mut conn, &quick_sale(stock, customers)).await;
    inject_duplicate(&mut conn).await;
    one_more_interval(&mut conn).await;
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &QUEUES).await;
}

fn triggers_libraries(v: &Value) -> Vec<String> {
    popup_operator::sale::triggers::parse_library_list(v).unwrap().into_iter().map(|l| l.name).collect()
}

#[tokio::test]
async fn triggers_reload_after_restart_and_settings_change() {
    let mut server = RedisServer::start();
    let mut conn = server.conn().await;
    assert_eq!(load_scripts(&mut conn, EngineKind::Triggers, &settings()).await.unwrap(), LoadOutcome::Loaded);
    server.restart();
    let mut conn = server.conn().await;
    assert!(!engine_health(&mut conn, EngineKind::Triggers).await.unwrap().healthy);
    assert_eq!(load_scripts(&mut conn, EngineKind::Triggers, &settings()).await.unwrap(), LoadOutcome::Loaded);
    let other = ProcessingSettings { metrics_interval: Duration::from_secs(1), ..settings() };
    match load_scripts(&mut conn, EngineKind::Triggers, &other).await.unwrap() {
        LoadOutcome::Reloaded { reason } => assert!(reason.contains("settings"), "{reason}"),
        o => panic!("expected a reload, got {o:?}"),
    }
    assert_eq!(load_scripts(&mut conn, EngineKind::Triggers, &other).await.unwrap(), LoadOutcome::AlreadyLoaded);
    // still processes orders after the reload
    simulate(&mut conn, &quick_sale(5, 8)).await;
    assert_contract(&mut conn, 5, 8, 0).await;
}

// ---- native ----------------------------------------------------------------------------------------------

fn worker_cfg(name: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(name, settings());
    cfg.block = Duration::from_millis(100);
    cfg
}

fn spawn_worker(
    conn: ConnectionManager,
    cfg: WorkerConfig,
    rx: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<popup_operator::sale::native::WorkerStats, EngineError>> {
    tokio::spawn(Worker::new(conn, cfg).run(rx))
}

/// A new Redis with `customers` customers and an order for each queued (in arrival order) with no engine
/// running, as fast as Redis takes them, and `product` = `stock`; the native engine's functions loaded,
/// as the operator does before the processor runs. The server and a connection to it.
async fn prefilled(stock: i64, customers: u64) -> (RedisServer, MultiplexedConnection) {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    load_scripts(&mut conn, EngineKind::Native, &settings()).await.unwrap();
    let _: () = redis::cmd("SET").arg(sale::PRODUCT).arg(stock).query_async(&mut conn).await.unwrap();
    let mut ids: Vec<String> = Vec::new();
    for first in (0..customers).step_by(1000) {
        let mut pipe = redis::pipe();
        for n in first..(first + 1000).min(customers) {
            pipe.cmd("XADD").arg(QUEUE_CUSTOMERS).arg("*").arg("id").arg(n);
        }
        ids.extend(pipe.query_async::<Vec<String>>(&mut conn).await.unwrap());
    }
    for (first, chunk) in ids.chunks(1000).enumerate() {
        let mut pipe = redis::pipe();
        for (i, customer) in chunk.iter().enumerate() {
            pipe.cmd("XADD").arg(QUEUE_ORDERS).arg("*").arg("id").arg(first * 1000 + i).arg("customer").arg(customer);
        }
        let _: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
    }
    (server, conn)
}

#[tokio::test]
async fn native_engine_keeps_the_contract_with_several_workers() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // The operator loads the processor's functions: once, then they are there.
    assert_loads_once(&mut conn, EngineKind::Native).await;
    let (tx, rx) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(spawn_worker(server.manager().await, worker_cfg(&format!("w{i}")), rx.clone()));
    }
    let (stock, customers) = (50, 90);
    simulate(&mut conn, &quick_sale(stock, customers)).await;
    inject_duplicate(&mut conn).await;
    one_more_interval(&mut conn).await;
    let health = engine_health(&mut conn, EngineKind::Native).await.unwrap();
    assert!(health.healthy && health.parts.len() == 3, "{health:?}");
    tx.send(true).unwrap();
    let mut total = 0;
    for w in workers {
        let stats = w.await.unwrap().unwrap();
        total += stats.orders.decided();
    }
    assert_eq!(total, customers + 1);
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &QUEUES).await;
    // one writer per interval: no two samples closer than the interval
    let len = ts_samples(&mut conn, &sale::ts_len_key(QUEUE_ORDERS)).await;
    assert!(len.windows(2).all(|w| w[1].0 - w[0].0 >= 200), "samples closer than the interval: {len:?}");
    // graceful shutdown removed the heartbeats
    assert!(!engine_health(&mut conn, EngineKind::Native).await.unwrap().healthy);
}

#[tokio::test]
async fn native_workers_racing_over_a_full_queue_decide_each_order_once() {
    let (stock, customers) = (1_500, 8_000);
    let (server, mut conn) = prefilled(stock, customers).await;
    // Four workers call the script back to back on their own connections until the queue is empty:
    // every call takes what the calls before it left.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let mut racers = Vec::new();
    for i in 0..4 {
        let mut w = Worker::new(server.manager().await, worker_cfg(&format!("racer{i}")));
        let start = start.clone();
        racers.push(tokio::spawn(async move {
            start.wait().await;
            let (mut total, mut calls) = (BatchResult::default(), 0);
            loop {
                let r = w.decide_waiting().await.unwrap();
                if r.decided() == 0 {
                    return (total, calls);
                }
                total += r;
                calls += 1;
            }
        }));
    }
    let mut total = BatchResult::default();
    let mut busy = 0;
    for r in racers {
        let (t, calls) = r.await.unwrap();
        eprintln!("{t:?} in {calls} calls");
        busy += usize::from(calls > 0);
        total += t;
    }
    assert!(busy > 1, "only one worker got to decide anything: no race happened");
    assert_eq!((total.completed, total.rejected), (stock as u64, customers - stock as u64));
    assert_contract(&mut conn, stock, customers, 0).await;
}

#[tokio::test]
async fn native_workers_stopped_at_any_moment_leave_nothing_half_done() {
    let (stock, customers) = (6_000, 15_000);
    let (server, mut conn) = prefilled(stock, customers).await;
    // A kill storm in one process: each worker task is dropped wherever it is after 0–15 ms (before
    // its call is sent, while Redis runs it, or before it reads the reply).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut storms = 0;
    while xlen(&mut conn, QUEUE_ORDERS).await > 0 && storms < 200 {
        let (_tx, rx) = watch::channel(false);
        let w = spawn_worker(server.manager().await, worker_cfg(&format!("doomed{storms}")), rx);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        w.abort();
        let _ = w.await;
        storms += 1;
    }
    // A survivor takes whatever is left.
    let (tx, rx) = watch::channel(false);
    let w = spawn_worker(server.manager().await, worker_cfg("survivor"), rx);
    wait_decided(&mut conn, customers, Duration::from_secs(30)).await;
    tx.send(true).unwrap();
    w.await.unwrap().unwrap();
    eprintln!("{storms} workers dropped mid-sale");
    assert!(storms > 1, "the first worker decided everything before it could be stopped");
    assert_contract(&mut conn, stock, customers, 0).await;
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_popup-operator")
}

fn spawn_process(server: &RedisServer, consumer: &str) -> ChildGuard {
    let log = std::fs::File::create(server.dir.join(format!("{consumer}.log"))).unwrap();
    let child = Command::new(binary())
        .args(["process", "--batch-size", "3", "--metrics-interval-seconds", "0.2"])
        .args(["--consumer", consumer])
        .env("REDIS_URL", server.url())
        .env_remove("REDIS_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    ChildGuard(Some(child))
}

/// SIGTERM: the worker finishes its call, exits 0 and prints its totals as JSON.
fn stop_process(mut worker: ChildGuard) -> serde_json::Value {
    let status = Command::new("kill").args(["-TERM", &worker.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = worker.0.take().unwrap().wait_with_output().unwrap();
    assert!(exit.status.success(), "process did not exit cleanly on SIGTERM: {exit:?}");
    serde_json::from_slice(&exit.stdout).unwrap()
}

/// Wait until at least `n` orders are decided (or fail naming `what`).
async fn wait_some_decided(conn: &mut MultiplexedConnection, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = read_sale(conn).await.unwrap();
        if s.decided() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn two_process_workers_one_sigkilled_mid_sale_keep_the_contract() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    load_scripts(&mut conn, EngineKind::Native, &settings()).await.unwrap();
    let mut victim = spawn_process(&server, "victim");
    let survivor = spawn_process(&server, "survivor");
    let (stock, customers) = (60, 120);
    let mut cfg = quick_sale(stock, customers);
    cfg.wait_complete = None;
    cfg.max_arrival = Duration::from_millis(4);
    let sim = {
        let mut c = server.conn().await;
        tokio::spawn(async move { simulator::run(&mut c, &cfg, |_| {}).await })
    };
    wait_some_decided(&mut conn, 20, "the workers decided nothing").await;
    // Child::kill sends SIGKILL: no chance to finish a call or clean up.
    victim.0.as_mut().unwrap().kill().unwrap();
    drop(victim);
    sim.await.unwrap().unwrap();
    // The survivor decides the rest; a new worker joining late changes nothing either.
    let heir = spawn_process(&server, "heir");
    wait_decided(&mut conn, customers, Duration::from_secs(20)).await;
    let survived = stop_process(survivor);
    stop_process(heir);
    assert!(survived["batches"].as_u64().unwrap() > 0, "{survived}");
    assert_contract(&mut conn, stock, customers, 0).await;
}

#[tokio::test]
async fn two_process_workers_one_sigkilled_inside_its_calls_keep_the_contract() {
    // A full queue: both workers are always inside a call of 510 orders, so the kill lands in one.
    let (stock, customers) = (15_000, 40_000);
    let (server, mut conn) = prefilled(stock, customers).await;
    let mut victim = spawn_process(&server, "victim");
    let survivor = spawn_process(&server, "survivor");
    wait_some_decided(&mut conn, 2_000, "the workers decided nothing").await;
    victim.0.as_mut().unwrap().kill().unwrap();
    drop(victim);
    let decided_at_kill = read_sale(&mut conn).await.unwrap().decided();
    wait_decided(&mut conn, customers, Duration::from_secs(60)).await;
    let survived = stop_process(survivor);
    eprintln!("victim killed after {decided_at_kill} of {customers} orders; survivor: {survived}");
    assert!(decided_at_kill < customers, "the sale was over before the kill");
    assert_contract(&mut conn, stock, customers, 0).await;
}

// ---- gears (RedisGears 1 scripts: real RedisGears 1 when given, else the CPython emulation) ---------------

#[tokio::test]
async fn gears_engine_keeps_the_contract() {
    let mut gears = Gears::start(&settings()).await;
    let mut conn = gears.server.conn().await;
    let (stock, customers) = (30, 45);
    let mut cfg = quick_sale(stock, customers);
    cfg.reset = false; // RedisGears' consumer group lives on queue:orders
    let summary = simulator::run(&mut conn, &cfg, |_| {}).await.unwrap();
    assert!(summary.all_processed, "not all orders processed on {}: {summary:?}\n{}", gears.name(), gears.log());
    inject_duplicate(&mut conn).await;
    // Every entry is counted in the interval it arrived in: wait until the samples add up to the
    // whole sale (46 orders: 45 and the duplicate; 30 completed, 16 rejected), then check them.
    let expected = [
        (QUEUE_CUSTOMERS, customers),
        (QUEUE_ORDERS, customers + 1),
        (QUEUE_COMPLETE, stock as u64),
        (QUEUE_REJECTED, customers + 1 - stock as u64),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    for (q, n) in expected {
        loop {
            let added: f64 = ts_samples_or_none(&mut conn, &sale::ts_enqueue_key(q)).await.iter().map(|(_, v)| v).sum();
            if added == n as f64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ts:enqueue:{q} adds up to {added}, not {n}, 20 s after the sale on {}\n{}",
                gears.name(),
                gears.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let GearsRuntime::Emulated(shim) = &mut gears.runtime
        && let Some(Ok(Some(status))) = shim.0.as_mut().map(|c| c.try_wait())
    {
        panic!("the emulation exited ({status}):\n{}", gears.log());
    }
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &[QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_COMPLETE, QUEUE_REJECTED]).await;
    if gears.is_real() {
        let health = engine_health(&mut conn, EngineKind::Gears).await.unwrap();
        assert!(health.healthy, "{health:?}");
    }
}

#[tokio::test]
async fn gears_load_on_redis_without_gears_1_names_the_fix() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let err = load_scripts(&mut conn, EngineKind::Gears, &settings()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::MissingModule { .. }), "{err:?}");
    assert!(msg.contains("has no RedisGears 1 module"), "{msg}");
    assert!(msg.contains("redisgears_2") && msg.contains("timeseries"), "{msg}");
    assert!(msg.contains("redislabs/redismod") && msg.contains("engine triggers"), "{msg}");
    // `sale --engine gears` says the same instead of a raw "unknown command RG.DUMPREGISTRATIONS".
    let health = engine_health(&mut conn, EngineKind::Gears).await.unwrap();
    assert!(!health.healthy && health.summary.contains("has no RedisGears 1 module"), "{health:?}");
}

// ---- CLI errors ---------------------------------------------------------------------------------------------

#[test]
fn a_port_that_is_not_redis_is_named_as_such() {
    // Something that answers like a web server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            use std::io::Write;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    for args in [&["sale"][..], &["simulate", "--customers", "1"], &["load", "--engine", "triggers"]] {
        let out = Command::new(binary())
            .args(args)
            .args(["--redis", &format!("redis://127.0.0.1:{port}")])
            .env_remove("REDIS_PASSWORD")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("the server at 127.0.0.1:{port} does not speak the Redis protocol")), "{err}");
        assert!(err.contains("check the host and port"), "{err}");
    }
}

#[test]
fn simulate_against_unreachable_redis_fails_with_address() {
    let port = free_port();
    let out = Command::new(binary())
        .args(["simulate", "--redis", &format!("redis://127.0.0.1:{port}"), "--customers", "1"])
        .env_remove("REDIS_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn simulate_with_wrong_password_names_auth() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let out = Command::new(binary())
        .args(["sale", "--redis", &server.url()])
        .env("REDIS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected the credentials") && err.contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    // the right password from the environment works
    let out = Command::new(binary())
        .args([
            "simulate",
            "--redis",
            &server.url(),
            "--stock",
            "3",
            "--customers",
            "2",
            "--max-arrival-millis",
            "1",
            "--max-order-delay-millis",
            "1",
            "--json",
        ])
        .env("REDIS_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["customers"], 2);
    // no engine ran, so waiting for completion times out with exit code 3
    let out = Command::new(binary())
        .args([
            "simulate",
            "--redis",
            &format!("redis://:s3cret@127.0.0.1:{}", server.port),
            "--stock",
            "3",
            "--customers",
            "1",
            "--max-arrival-millis",
            "1",
            "--max-order-delay-millis",
            "1",
            "--wait-complete",
            "1",
        ])
        .env_remove("REDIS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is an engine running"));
}

#[tokio::test]
async fn native_worker_survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let mut conn = server.conn().await;
    load_scripts(&mut conn, EngineKind::Native, &settings()).await.unwrap();
    let (tx, rx) = watch::channel(false);
    let w = spawn_worker(server.manager().await, worker_cfg("survivor"), rx);
    simulate(&mut conn, &quick_sale(5, 8)).await;
    // The orders are decided in Redis before the worker has read the script's reply; a restart in
    // between would lose that reply (and the count). Wait until the worker's heartbeat reports
    // all 8, the state the final count relies on.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let beat: Option<String> = redis::cmd("GET").arg("popup:worker:survivor").query_async(&mut conn).await.unwrap();
        let decided = beat
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .map(|v| v["completed"].as_u64().unwrap_or(0) + v["rejected"].as_u64().unwrap_or(0));
        if decided == Some(8) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never reported its 8 orders: {decided:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new, empty server process: the group is gone, the worker reconnects and recreates it.
    server.restart();
    let mut conn = server.conn().await;
    // The restart lost the functions too (no persistence here): the worker waits for them, as it does
    // until the operator's next reconcile loads them again, and carries on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(load_scripts(&mut conn, EngineKind::Native, &settings()).await.unwrap(), LoadOutcome::Loaded);
    simulate(&mut conn, &quick_sale(10, 15)).await;
    assert_contract(&mut conn, 10, 15, 0).await;
    tx.send(true).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert_eq!(stats.orders.completed + stats.orders.rejected, 8 + 15);
}
