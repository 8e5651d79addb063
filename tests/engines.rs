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

use popup_operator::engine::native::{Worker, WorkerConfig};
use popup_operator::engine::{
    self, EngineError, EngineKind, LoadOutcome, ProcessingSettings, QUEUE_COMPLETE, QUEUE_CUSTOMERS, QUEUE_ORDERS,
    QUEUE_REJECTED, QUEUES, engine_health, load_scripts, read_sale,
};
use popup_operator::simulator::{self, SimulatorConfig};
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::watch;

#[path = "common/redis_server.rs"]
mod redis_server;
use redis_server::{ChildGuard, RedisServer, free_port, start_gears_shim};

// ---- contract checks -------------------------------------------------------------------------------

fn settings() -> ProcessingSettings {
    ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_millis(200) }
}

fn fast_sale(stock: i64, customers: u64) -> SimulatorConfig {
    SimulatorConfig {
        stock,
        customers,
        max_arrival: Duration::from_millis(3),
        max_order_delay: Duration::from_millis(40),
        rate: None,
        reset: true,
        wait_complete: Some(Duration::from_secs(20)),
        max_duration: Some(Duration::from_secs(30)),
    }
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
        let len = ts_samples(conn, &engine::ts_len_key(q)).await;
        let enq = ts_samples(conn, &engine::ts_enqueue_key(q)).await;
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
        ts_samples(conn, &engine::ts_enqueue_key(QUEUE_CUSTOMERS)).await.iter().map(|(_, v)| v).sum();
    assert!(customers_added > 0.0, "ts:enqueue:queue:customers never counted an arrival");
}

/// Wait until one more sampling interval has passed, with some stream traffic to trigger it.
async fn one_more_interval(conn: &mut MultiplexedConnection) {
    tokio::time::sleep(settings().metrics_interval * 2).await;
    let _: String = redis::cmd("XADD").arg("queue:tick").arg("*").arg("t").arg("1").query_async(conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn simulate(conn: &mut MultiplexedConnection, cfg: &SimulatorConfig) -> simulator::SimulationSummary {
    let summary = simulator::run(conn, cfg, |_| {}).await.unwrap();
    assert!(summary.all_processed, "not all orders processed: {summary:?}");
    summary
}

// ---- triggers ------------------------------------------------------------------------------------------

#[tokio::test]
async fn triggers_engine_keeps_the_contract() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    assert_eq!(load_scripts(&mut conn, EngineKind::Triggers, &settings()).await.unwrap(), LoadOutcome::Loaded);
    assert_eq!(load_scripts(&mut conn, EngineKind::Triggers, &settings()).await.unwrap(), LoadOutcome::AlreadyLoaded);
    let libs: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut conn).await.unwrap();
    assert_eq!(triggers_libraries(&libs), vec!["popup".to_string()], "loading twice must leave one library");
    assert!(engine_health(&mut conn, EngineKind::Triggers).await.unwrap().healthy);

    let (stock, customers) = (40, 60);
    simulate(&mut conn, &fast_sale(stock, customers)).await;
    inject_duplicate(&mut conn).await;
    one_more_interval(&mut conn).await;
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &QUEUES).await;
}

fn triggers_libraries(v: &Value) -> Vec<String> {
    popup_operator::engine::triggers::parse_library_list(v).unwrap().into_iter().map(|l| l.name).collect()
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
    simulate(&mut conn, &fast_sale(5, 8)).await;
    assert_contract(&mut conn, 5, 8, 0).await;
}

// ---- native ----------------------------------------------------------------------------------------------

fn worker_cfg(name: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(name, settings());
    cfg.claim_idle = Duration::from_millis(300);
    cfg.block = Duration::from_millis(100);
    cfg
}

fn spawn_worker(
    conn: ConnectionManager,
    cfg: WorkerConfig,
    rx: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<popup_operator::engine::native::WorkerStats, EngineError>> {
    tokio::spawn(Worker::new(conn, cfg).run(rx))
}

#[tokio::test]
async fn native_engine_keeps_the_contract_with_several_workers() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    assert_eq!(load_scripts(&mut conn, EngineKind::Native, &settings()).await.unwrap(), LoadOutcome::AlreadyLoaded);
    let (tx, rx) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(spawn_worker(server.manager().await, worker_cfg(&format!("w{i}")), rx.clone()));
    }
    let (stock, customers) = (50, 90);
    simulate(&mut conn, &fast_sale(stock, customers)).await;
    inject_duplicate(&mut conn).await;
    one_more_interval(&mut conn).await;
    let health = engine_health(&mut conn, EngineKind::Native).await.unwrap();
    assert!(health.healthy && health.parts.len() == 3, "{health:?}");
    tx.send(true).unwrap();
    let mut total = 0;
    for w in workers {
        let stats = w.await.unwrap().unwrap();
        total += stats.orders.completed + stats.orders.rejected;
    }
    assert_eq!(total, customers + 1);
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &QUEUES).await;
    // one writer per interval: no two samples closer than the interval
    let len = ts_samples(&mut conn, &engine::ts_len_key(QUEUE_ORDERS)).await;
    assert!(len.windows(2).all(|w| w[1].0 - w[0].0 >= 200), "samples closer than the interval: {len:?}");
    // graceful shutdown removed the heartbeats
    assert!(!engine_health(&mut conn, EngineKind::Native).await.unwrap().healthy);
}

#[tokio::test]
async fn native_worker_crash_mid_batch_loses_and_duplicates_nothing() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // Send the orders with no worker running.
    let (stock, customers) = (10, 25);
    let mut cfg = fast_sale(stock, customers);
    cfg.wait_complete = None;
    simulator::run(&mut conn, &cfg, |_| {}).await.unwrap();
    assert_eq!(xlen(&mut conn, QUEUE_ORDERS).await, customers);

    // A worker claims a batch and dies before applying it: the orders are pending for it.
    let mut doomed = Worker::new(server.manager().await, worker_cfg("doomed"));
    doomed.ensure_group().await.unwrap();
    let claimed = doomed.read_batch().await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Another applies one batch twice (a redelivery after a crash between apply and reply).
    let mut twice = Worker::new(server.manager().await, worker_cfg("twice"));
    let batch = twice.read_batch().await.unwrap();
    let first = twice.apply(&batch).await.unwrap();
    let second = twice.apply(&batch).await.unwrap();
    assert_eq!(first.completed + first.rejected, 3);
    assert_eq!((second.completed, second.rejected, second.skipped), (0, 0, 3), "a redelivered batch was applied again");
    drop(doomed);
    drop(twice);

    // A fresh worker claims the dead consumer's entries after claim_idle and finishes the sale.
    let (tx, rx) = watch::channel(false);
    let w = spawn_worker(server.manager().await, worker_cfg("rescuer"), rx);
    wait_decided(&mut conn, customers, Duration::from_secs(15)).await;
    tx.send(true).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert!(stats.claimed >= 3, "the dead consumer's batch was not claimed: {stats:?}");
    let pending: Value =
        redis::cmd("XPENDING").arg(QUEUE_ORDERS).arg(engine::NATIVE_GROUP).query_async(&mut conn).await.unwrap();
    assert_eq!(popup_operator_pending_count(&pending), 0, "entries left pending: {pending:?}");
    assert_contract(&mut conn, stock, customers, 0).await;
}

/// Consumer names in the workers' group.
async fn group_consumers(conn: &mut MultiplexedConnection) -> Vec<String> {
    let reply: Vec<Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(QUEUE_ORDERS)
        .arg(engine::NATIVE_GROUP)
        .query_async(conn)
        .await
        .unwrap();
    let mut names: Vec<String> = reply
        .iter()
        .filter_map(|c| match c {
            Value::Array(kv) => kv.chunks(2).find_map(|p| match (&p[0], &p[1]) {
                (Value::BulkString(k), Value::BulkString(v)) if k == b"name" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            Value::Map(kv) => kv.iter().find_map(|(k, v)| match (k, v) {
                (Value::BulkString(k), Value::BulkString(v)) if k == b"name" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_survivor_claims_dead_workers_orders_and_removes_them_from_the_group() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let (stock, customers) = (20, 30);
    let mut cfg = fast_sale(stock, customers);
    cfg.wait_complete = None;
    simulator::run(&mut conn, &cfg, |_| {}).await.unwrap();
    // A kill storm: six workers read a batch each and die without deciding it or saying goodbye;
    // two more die with nothing pending.
    for i in 0..8 {
        let mut dead = Worker::new(server.manager().await, WorkerConfig::new(format!("dead{i}"), settings()));
        dead.ensure_group().await.unwrap();
        if i < 6 {
            assert_eq!(dead.read_batch().await.unwrap().len(), 3);
        } else {
            let _: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(engine::NATIVE_GROUP)
                .arg(format!("dead{i}"))
                .arg("COUNT")
                .arg(0)
                .arg("STREAMS")
                .arg(QUEUE_ORDERS)
                .arg("0")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    assert_eq!(group_consumers(&mut conn).await.len(), 8);
    // One survivor with the default claim and heartbeat settings finishes the sale and tidies up.
    let (tx, rx) = watch::channel(false);
    let mut survivor = WorkerConfig::new("survivor", settings());
    survivor.block = Duration::from_millis(100);
    let w = spawn_worker(server.manager().await, survivor, rx);
    wait_decided(&mut conn, customers, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while group_consumers(&mut conn).await != ["survivor"] {
        assert!(Instant::now() < deadline, "dead consumers left in the group: {:?}", group_consumers(&mut conn).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.send(true).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert_eq!(stats.claimed, 18, "{stats:?}");
    assert_contract(&mut conn, stock, customers, 0).await;
    // A clean shutdown leaves no consumer behind either.
    assert!(group_consumers(&mut conn).await.is_empty());
}

fn popup_operator_pending_count(v: &Value) -> i64 {
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::Int(n)) => *n,
            _ => -1,
        },
        _ => -1,
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_popup-operator")
}

fn spawn_process(server: &RedisServer, consumer: &str) -> ChildGuard {
    let log = std::fs::File::create(server.dir.join(format!("{consumer}.log"))).unwrap();
    let child = Command::new(binary())
        .args(["process", "--batch-size", "3", "--metrics-interval-seconds", "0.2", "--claim-idle-millis", "300"])
        .args(["--consumer", consumer])
        .env("REDIS_URL", server.url())
        .env_remove("REDIS_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    ChildGuard(Some(child))
}

#[tokio::test]
async fn native_binary_sigkill_then_restart_keeps_the_contract() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let first = spawn_process(&server, "victim");
    let (stock, customers) = (60, 120);
    let mut cfg = fast_sale(stock, customers);
    cfg.wait_complete = None;
    cfg.max_arrival = Duration::from_millis(4);
    let sim = {
        let mut c = server.conn().await;
        tokio::spawn(async move { simulator::run(&mut c, &cfg, |_| {}).await })
    };
    // Kill the worker hard once it has decided some orders.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = read_sale(&mut conn).await.unwrap();
        if s.completed + s.rejected >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker process decided nothing: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Child::kill sends SIGKILL: no chance to finish the batch or clean up.
    let mut first = first;
    first.0.as_mut().unwrap().kill().unwrap();
    drop(first);
    sim.await.unwrap().unwrap();
    // A new worker under another name takes over (own new entries + claims the victim's pending).
    let mut second = spawn_process(&server, "heir");
    wait_decided(&mut conn, customers, Duration::from_secs(20)).await;
    // SIGTERM: graceful shutdown, exit code 0.
    let status = Command::new("kill").args(["-TERM", &second.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = second.0.take().unwrap().wait_with_output().unwrap();
    assert!(exit.status.success(), "process did not exit cleanly on SIGTERM: {exit:?}");
    let stats: serde_json::Value = serde_json::from_slice(&exit.stdout).unwrap();
    assert!(stats["batches"].as_u64().unwrap() > 0, "{stats}");
    assert_contract(&mut conn, stock, customers, 0).await;
}

// ---- gears (RedisGears 1 scripts under the CPython shim) --------------------------------------------------

#[tokio::test]
async fn gears_scripts_keep_the_contract_under_the_cpython_shim() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut shim = start_gears_shim(&server, &settings());
    let complete = &popup_operator::engine::gears::scripts(&settings())[0];
    let log_path = server.dir.join("shim.log");
    let (stock, customers) = (30, 45);
    let mut cfg = fast_sale(stock, customers);
    cfg.reset = false; // the shim's consumer groups live on the streams
    let summary = simulator::run(&mut conn, &cfg, |_| {}).await.unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(summary.all_processed, "not all orders processed: {summary:?}\nshim log:\n{}", log());
    inject_duplicate(&mut conn).await;
    // The timeseries reader fires every interval: wait until it has written a series for every
    // queue (then assert_timeseries checks the samples).
    let deadline = Instant::now() + Duration::from_secs(20);
    for q in QUEUES {
        for key in [engine::ts_len_key(q), engine::ts_enqueue_key(q)] {
            while redis::cmd("EXISTS").arg(&key).query_async::<u64>(&mut conn).await.unwrap() == 0 {
                assert!(Instant::now() < deadline, "no {key} within 20 s; shim log:\n{}", log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Some(Ok(Some(status))) = shim.0.as_mut().map(|c| c.try_wait()) {
        panic!("the shim exited ({status}):\n{}", log());
    }
    assert_contract(&mut conn, stock, customers, 1).await;
    assert_timeseries(&mut conn, customers, &[QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_COMPLETE, QUEUE_REJECTED]).await;
    assert!(log().contains(&complete.desc), "shim log lacks the registration: {}", log());
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
    let (tx, rx) = watch::channel(false);
    let w = spawn_worker(server.manager().await, worker_cfg("survivor"), rx);
    let mut conn = server.conn().await;
    simulate(&mut conn, &fast_sale(5, 8)).await;
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
    simulate(&mut conn, &fast_sale(10, 15)).await;
    assert_contract(&mut conn, 10, 15, 0).await;
    tx.send(true).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert_eq!(stats.orders.completed + stats.orders.rejected, 8 + 15);
}
