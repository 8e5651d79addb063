//! Not a test: the engine benchmark of docs/benchmarks.md, one command, one run, one Redis.
//!
//!     bash hack/bench-engines.sh [ORDERS]
//!     # = cargo test --release --test bench_engines -- --ignored --nocapture
//!
//! On one redis-stack-server (no persistence), in this order: the pipelined `XADD` ceiling; then,
//! for each engine case, `FLUSHALL`, `ORDERS` customers and one order each queued with no engine
//! running (half as many units as orders), the engine started and the clock stopped when every
//! order is in `queue:complete` or `queue:rejected`, and the memory Redis keeps beyond the
//! contract's streams; then `popup-operator simulate --json` at full speed and at a set rate.
//! Settings (environment): `POPUP_BENCH_ORDERS` (default 1,000,000, also the first argument of the
//! script), `POPUP_BENCH_SIM_CUSTOMERS` (300,000), `POPUP_BENCH_RATE` (20,000 customers/s) and
//! `POPUP_BENCH_RATE_SECONDS` (10).

pub mod support;
use support::redis_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use popup_operator::sale::{
    self, EngineKind, ProcessingSettings, QUEUE_COMPLETE, QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUE_REJECTED, QUEUES,
};
use redis::aio::MultiplexedConnection;
use redis_server::{ChildGuard, RedisServer};

/// Commands per pipeline and pipelines in flight when queueing: enough to keep Redis busy.
const PIPELINE: usize = 1000;
const IN_FLIGHT: usize = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Send `n` commands built by `one(i)` in pipelines, several in flight, in order; the replies.
async fn pipelined(
    conn: &MultiplexedConnection,
    n: usize,
    one: impl Fn(usize, &mut redis::Pipeline),
) -> Vec<redis::Value> {
    let pipes: Vec<redis::Pipeline> = (0..n)
        .step_by(PIPELINE)
        .map(|first| {
            let mut pipe = redis::pipe();
            for i in first..(first + PIPELINE).min(n) {
                one(i, &mut pipe);
            }
            pipe
        })
        .collect();
    let replies: Vec<Vec<redis::Value>> = futures::stream::iter(pipes)
        .map(|pipe| {
            let mut conn = conn.clone();
            async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await.unwrap() }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    replies.into_iter().flatten().collect()
}

/// `n` customers in `queue:customers`; their entry ids.
async fn queue_customers(conn: &MultiplexedConnection, n: usize) -> Vec<String> {
    pipelined(conn, n, |i, p| {
        p.cmd("XADD").arg(QUEUE_CUSTOMERS).arg("*").arg("id").arg(i);
    })
    .await
    .iter()
    .map(|v| redis::from_redis_value(v.clone()).unwrap())
    .collect()
}

/// `orders` customers, then an order for each in arrival order, as fast as Redis takes them.
async fn prefill(conn: &mut MultiplexedConnection, orders: usize) -> Duration {
    let t = Instant::now();
    cmd::<()>(conn, &["SET", sale::PRODUCT, &(orders / 2).to_string()]).await;
    let ids = queue_customers(conn, orders).await;
    pipelined(conn, orders, |i, p| {
        p.cmd("XADD").arg(QUEUE_ORDERS).arg("*").arg("id").arg(i).arg("customer").arg(&ids[i]);
    })
    .await;
    t.elapsed()
}

async fn decided(conn: &mut MultiplexedConnection) -> u64 {
    let (c, r): (u64, u64) =
        redis::pipe().cmd("XLEN").arg(QUEUE_COMPLETE).cmd("XLEN").arg(QUEUE_REJECTED).query_async(conn).await.unwrap();
    c + r
}

/// Seconds from `start` until every one of `orders` is decided (checked every 2 ms).
async fn until_decided(conn: &mut MultiplexedConnection, orders: u64, start: Instant) -> f64 {
    let deadline = start + Duration::from_secs(1800);
    loop {
        if decided(conn).await >= orders {
            return start.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "not all {orders} orders decided within 30 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `used_memory` without the clients' buffers (`mem_clients_normal`), which come and go with the
/// benchmark's own pipelines, and after a full collection of the Lua heap, which otherwise still
/// holds the garbage of the last script calls: neither is what a sale leaves behind.
async fn used_memory(conn: &mut MultiplexedConnection) -> i64 {
    cmd::<i64>(conn, &["EVAL", "collectgarbage('collect') return 0", "0"]).await;
    let info: String = cmd(conn, &["INFO", "memory"]).await;
    let field = |name: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO memory has no {name}"))
    };
    field("used_memory") - field("mem_clients_normal")
}

/// Every key with its `MEMORY USAGE … SAMPLES 0` (exact).
async fn key_sizes(conn: &mut MultiplexedConnection) -> Vec<(String, i64)> {
    let keys: Vec<String> = cmd(conn, &["KEYS", "*"]).await;
    let mut sizes = Vec::new();
    for k in keys {
        let size: Option<i64> = cmd(conn, &["MEMORY", "USAGE", &k, "SAMPLES", "0"]).await;
        sizes.push((k, size.unwrap_or(0)));
    }
    sizes.sort();
    sizes
}

/// What Redis keeps after a sale, beyond the decisions themselves.
struct Memory {
    /// `queue:complete` + `queue:rejected` (`MEMORY USAGE`): the sale's record, one entry per order
    /// by design.
    record: i64,
    /// `queue:customers` + `queue:orders`, empty once every order is decided.
    queues_left: i64,
    /// Every other key, and their total.
    others: Vec<(String, i64)>,
    other_total: i64,
    /// `used_memory` once the four streams are deleted, minus `used_memory` before the case (both
    /// without client buffers): what the sale left beyond the contract's streams, in keys or not
    /// (module state, a set, …). Counted by Redis's allocator, where `MEMORY USAGE` of a large
    /// stream is an estimate.
    extra: i64,
}

impl Memory {
    /// Measures, then deletes the streams: the last step of a case.
    async fn measure(conn: &mut MultiplexedConnection, used_before: i64) -> Memory {
        let sizes = key_sizes(conn).await;
        let of = |names: &[&str]| sizes.iter().filter(|(k, _)| names.contains(&k.as_str())).map(|(_, s)| s).sum();
        let others: Vec<(String, i64)> = sizes.iter().filter(|(k, _)| !QUEUES.contains(&k.as_str())).cloned().collect();
        let _: () = redis::cmd("DEL").arg(&QUEUES[..]).query_async(conn).await.unwrap();
        cmd::<()>(conn, &["MEMORY", "PURGE"]).await;
        Memory {
            record: of(&[QUEUE_COMPLETE, QUEUE_REJECTED]),
            queues_left: of(&[QUEUE_CUSTOMERS, QUEUE_ORDERS]),
            other_total: others.iter().map(|(_, s)| s).sum(),
            others,
            extra: used_memory(conn).await - used_before,
        }
    }
}

struct Case {
    name: String,
    orders: u64,
    secs: f64,
    memory: Option<Memory>,
}

impl Case {
    fn rate(&self) -> f64 {
        self.orders as f64 / self.secs
    }
}

fn spawn_worker(url: &str, batch: u32, name: &str, dir: &std::path::Path) -> ChildGuard {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_popup-operator"))
            .args(["process", "--redis", url, "--batch-size", &batch.to_string(), "--consumer", name])
            .args(["--metrics-interval-seconds", "5"])
            .env_remove("REDIS_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    ))
}

fn stop_worker(mut w: ChildGuard) -> String {
    Command::new("kill").args(["-TERM", &w.pid().to_string()]).status().unwrap();
    let out = w.0.take().unwrap().wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh sale on the same Redis: no keys, no triggers library.
async fn reset(conn: &mut MultiplexedConnection) -> i64 {
    let _: redis::RedisResult<()> = redis::cmd("TFUNCTION").arg("DELETE").arg("popup").query_async(conn).await;
    cmd::<()>(conn, &["FLUSHALL"]).await;
    cmd::<()>(conn, &["MEMORY", "PURGE"]).await;
    used_memory(conn).await
}

async fn triggers_case(conn: &mut MultiplexedConnection, orders: usize) -> Case {
    let before = reset(conn).await;
    let fill = prefill(conn, orders).await;
    eprintln!("  queued {orders} orders in {:.2} s", fill.as_secs_f64());
    let start = Instant::now();
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(5) };
    sale::load_scripts(conn, EngineKind::Triggers, &settings).await.unwrap();
    let secs = until_decided(conn, orders as u64, start).await;
    let memory = Memory::measure(conn, before).await;
    Case {
        name: "triggers (RedisGears 2, one order per trigger call)".into(),
        orders: orders as u64,
        secs,
        memory: Some(memory),
    }
}

async fn native_case(
    conn: &mut MultiplexedConnection,
    server: &RedisServer,
    orders: usize,
    batch: u32,
    workers: usize,
) -> Case {
    let before = reset(conn).await;
    let fill = prefill(conn, orders).await;
    eprintln!("  queued {orders} orders in {:.2} s", fill.as_secs_f64());
    // As the operator does before the processor runs: load its functions.
    sale::load_scripts(conn, EngineKind::Native, &ProcessingSettings::default()).await.unwrap();
    let start = Instant::now();
    let running: Vec<ChildGuard> =
        (0..workers).map(|i| spawn_worker(&server.url(), batch, &format!("bench-{batch}-{i}"), &server.dir)).collect();
    let secs = until_decided(conn, orders as u64, start).await;
    for w in running {
        eprintln!("  worker: {}", stop_worker(w));
    }
    let memory = Memory::measure(conn, before).await;
    let name = match workers {
        1 => format!("native, batch {batch} (one `process` worker)"),
        n => format!("native, batch {batch}, {n} workers"),
    };
    Case { name, orders: orders as u64, secs, memory: Some(memory) }
}

/// `popup-operator simulate … --json` with no engine running; its JSON summary.
fn simulate(url: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_popup-operator"))
        .args(["simulate", "--redis", url, "--reset", "--max-order-delay-millis", "0", "--json"])
        .args(args)
        .env_remove("REDIS_PASSWORD")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "simulate {args:?} failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("simulate --json: {e}: {out:?}"))
}

fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(f64::NAN)
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[tokio::test]
#[ignore = "benchmark: run by hand, see docs/benchmarks.md"]
async fn engines_benchmark() {
    let orders = env_u64("POPUP_BENCH_ORDERS", 1_000_000) as usize;
    let sim_customers = env_u64("POPUP_BENCH_SIM_CUSTOMERS", 300_000);
    let rate = env_u64("POPUP_BENCH_RATE", 20_000);
    let rate_secs = env_u64("POPUP_BENCH_RATE_SECONDS", 10);
    let load_at_start = load();
    let server = RedisServer::start();
    // No response timeout: Gears 2 may hold Redis for a long while when a library is loaded next
    // to a million queued entries, and the clock must simply wait for it.
    let client = redis::Client::open(server.url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
    let version: String = cmd(&mut conn, &["INFO", "server"]).await;
    let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
    eprintln!("Redis {version} on port {}, load {load_at_start}, {orders} orders per engine case", server.port);

    // The ceiling: XADDs of order-sized entries, pipelined, as fast as one client gets them in.
    reset(&mut conn).await;
    let start = Instant::now();
    pipelined(&conn, orders, |i, p| {
        p.cmd("XADD").arg("bench:ceiling").arg("*").arg("id").arg(i).arg("customer").arg("1795658323203-0");
    })
    .await;
    let ceiling = Case {
        name: "pipelined XADD (the ceiling)".into(),
        orders: orders as u64,
        secs: start.elapsed().as_secs_f64(),
        memory: None,
    };
    eprintln!("{}: {:.0}/s", ceiling.name, ceiling.rate());

    let mut cases = Vec::new();
    eprintln!("triggers …");
    cases.push(triggers_case(&mut conn, orders).await);
    for (batch, workers) in [(3, 1), (50, 1), (3, 2)] {
        eprintln!("native batch {batch}, {workers} worker(s) …");
        cases.push(native_case(&mut conn, &server, orders, batch, workers).await);
    }

    // For scale: the set of served customers the engines kept before, for the same sale.
    reset(&mut conn).await;
    let ids = queue_customers(&conn, orders).await;
    pipelined(&conn, ids.len(), |i, p| {
        p.cmd("SADD").arg("popup:customers:served").arg(&ids[i]);
    })
    .await;
    let served_set: i64 = cmd::<Option<i64>>(&mut conn, &["MEMORY", "USAGE", "popup:customers:served", "SAMPLES", "0"])
        .await
        .unwrap_or(0);
    reset(&mut conn).await;

    eprintln!("simulate at full speed …");
    let full = simulate(
        &server.url(),
        &["--stock", &sim_customers.to_string(), "--customers", &sim_customers.to_string(), "--rate", "1000000"],
    );
    let sim_full = Case {
        name: format!("simulate --rate 1000000 ({} customers/s)", num(&full, "customersPerSec").round()),
        orders: full["orders"].as_u64().unwrap_or(0),
        secs: num(&full, "sendSecs"),
        memory: None,
    };
    eprintln!("simulate --rate {rate} for {rate_secs} s …");
    let paced_customers = rate * rate_secs;
    let paced = simulate(
        &server.url(),
        &[
            "--stock",
            &paced_customers.to_string(),
            "--customers",
            &paced_customers.to_string(),
            "--rate",
            &rate.to_string(),
        ],
    );
    let sim_rate = Case {
        name: format!("simulate --rate {rate} ({} customers/s)", num(&paced, "customersPerSec").round()),
        orders: paced["orders"].as_u64().unwrap_or(0),
        secs: num(&paced, "sendSecs"),
        memory: None,
    };
    let load_at_end = load();

    let triggers = cases[0].rate();
    println!();
    println!(
        "Redis {version}, {orders} orders per engine case ({} units), load {load_at_start} at the start, {load_at_end} at the end",
        orders / 2
    );
    println!();
    println!("| case | orders | time | orders/s | × triggers | × ceiling |");
    println!("|---|---|---|---|---|---|");
    for c in std::iter::once(&ceiling).chain(&cases).chain([&sim_full, &sim_rate]) {
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.2} | {:.2} |",
            c.name,
            c.orders,
            c.secs,
            c.rate(),
            c.rate() / triggers,
            c.rate() / ceiling.rate()
        );
    }
    println!();
    println!(
        "simulate at full speed: {} customers and {} orders, {:.0} customers/s. simulate --rate {rate}: {} customers in {:.2} s of arrivals = {:.0}/s ({:+.2}% of the rate), slowest window {:.0}/s{}",
        full["customers"],
        full["orders"],
        num(&full, "customersPerSec"),
        paced["customers"],
        num(&paced, "arrivalSecs"),
        num(&paced, "customersPerSec"),
        (num(&paced, "customersPerSec") / rate as f64 - 1.0) * 100.0,
        num(&paced, "lowestRate"),
        if paced["behindRate"].as_bool() == Some(true) { ", BEHIND" } else { "" },
    );
    println!();
    println!(
        "Memory after {orders} orders (MEMORY USAGE … SAMPLES 0 of each key; used_memory − mem_clients_normal after a Lua garbage collection, once the four queue streams are deleted, minus the same before the case):"
    );
    println!();
    println!(
        "| case | the record: queue:complete + queue:rejected | queue:customers + queue:orders after the sale | other keys | used_memory beyond the four streams |"
    );
    println!("|---|---|---|---|---|");
    for c in &cases {
        let m = c.memory.as_ref().unwrap();
        println!(
            "| {} | {} | {} B | {} B ({} keys) | {} KiB |",
            c.name,
            mib(m.record),
            m.queues_left,
            m.other_total,
            m.others.len(),
            m.extra / 1024
        );
    }
    let m = cases[1].memory.as_ref().unwrap();
    println!();
    println!("other keys after native batch 3: {:?}", m.others);
    println!(
        "for scale, the set popup:customers:served the engines kept before would hold {} ids: {}",
        ids.len(),
        mib(served_set)
    );
}
