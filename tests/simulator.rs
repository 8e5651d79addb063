//! `popup-operator simulate` against a real redis-stack-server: exact counts at full speed and at
//! a fixed rate (every customer once, numbered 1..=N, each with exactly one order), the batch
//! script's write log (retries answered from it, late copies refused, at most 4 batches kept), a
//! Redis restart in the middle of a slow run and of a full-speed run with batches executed but
//! never answered, lost replies, a Redis that stays away, no stock, deadlines cutting long sleeps,
//! a rate it cannot hold. Correctness only, no timing assertions. No engine runs unless said: the
//! tests read the streams the simulator wrote.

pub mod support;
use support::redis_server;

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use popup_operator::sale::simulator::{self, SimulatorConfig};
use redis::aio::MultiplexedConnection;
use redis_server::RedisServer;
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_popup-operator");

fn simulate(server: &RedisServer, args: &[&str]) -> Child {
    simulate_at(&server.url(), args)
}

fn simulate_at(url: &str, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("simulate")
        .args(["--redis", url, "--json"])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for the process to end (killing it after `limit`, which only guards against a hang).
async fn finish(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("simulate did not finish within {}s", limit.as_secs());
        }
    }
}

struct Run {
    code: Option<i32>,
    summary: Json,
    stderr: String,
}

fn parse(out: Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON summary on stdout ({e}):\n{stdout}\nstderr:\n{stderr}"));
    Run { code: out.status.code(), summary, stderr }
}

fn num(summary: &Json, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {summary}"))
}

async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// Poll until `queue:customers` has at least `n` entries: the run is under way.
async fn wait_for_customers(conn: &mut MultiplexedConnection, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while xlen(conn, "queue:customers").await < n {
        assert!(Instant::now() < deadline, "the simulator did not send {n} customers within 60s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Entry id -> fields of every entry of a stream.
async fn entries(conn: &mut MultiplexedConnection, key: &str) -> Vec<(String, HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(conn).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields =
                e.map.iter().map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap())).collect();
            (e.id, fields)
        })
        .collect()
}

/// Every customer in `queue:customers` has exactly one order in `queue:orders` and every order
/// names one of those customers; the customers are numbered 1..=N without gaps or repeats, and
/// each order carries its customer's number. Returns N.
async fn assert_one_order_per_customer(conn: &mut MultiplexedConnection) -> usize {
    let customers = entries(conn, "queue:customers").await;
    let orders = entries(conn, "queue:orders").await;
    let number_of: HashMap<&str, &str> = customers.iter().map(|(id, f)| (id.as_str(), f["id"].as_str())).collect();
    assert_eq!(number_of.len(), customers.len(), "an entry id appears twice in queue:customers");
    let mut numbers: Vec<u64> = customers.iter().map(|(_, f)| f["id"].parse().unwrap()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), customers.len(), "a customer number appears twice in queue:customers");
    assert!(
        numbers.iter().copied().eq(1..=customers.len() as u64),
        "customers are not numbered 1..={} (first {:?}, last {:?})",
        customers.len(),
        numbers.first(),
        numbers.last()
    );
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for (order, fields) in &orders {
        let customer = fields["customer"].as_str();
        let Some(number) = number_of.get(customer) else {
            panic!("order {order} names customer {customer}, who is not in queue:customers")
        };
        assert_eq!(fields["id"], *number, "order {order} does not carry its customer's number");
        *per_customer.entry(customer).or_default() += 1;
    }
    for id in number_of.keys() {
        assert_eq!(per_customer.get(id).copied().unwrap_or(0), 1, "customer {id} has not exactly one order");
    }
    assert_eq!(orders.len(), customers.len());
    customers.len()
}

/// The run's write log is gone once a run finished.
async fn assert_no_write_log(conn: &mut MultiplexedConnection) {
    let leftovers: Vec<String> = redis::cmd("KEYS").arg("popup:simulator:*").query_async(conn).await.unwrap();
    assert!(leftovers.is_empty(), "the run's write log is removed at the end: {leftovers:?}");
}

/// Samples the size of every run's write log (entries of `popup:simulator:*`) until stopped;
/// returns the largest seen.
fn watch_write_log(server: &RedisServer) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, done) = (server.url(), stop.clone());
    let task = tokio::spawn(async move {
        let mut largest = 0;
        let mut conn = None;
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if conn.is_none() {
                // (again) after a Redis restart
                conn = popup_operator::sale::connect(&url, None).await.ok().map(|(c, _)| c);
            }
            let Some(c) = conn.as_mut() else { continue };
            let keys: redis::RedisResult<Vec<String>> =
                redis::cmd("KEYS").arg("popup:simulator:*").query_async(c).await;
            let Ok(keys) = keys else {
                conn = None;
                continue;
            };
            for key in keys {
                let len: redis::RedisResult<u64> = redis::cmd("HLEN").arg(&key).query_async(c).await;
                largest = largest.max(len.unwrap_or(0));
            }
        }
        largest
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_persistence_loses_no_order_and_duplicates_none() {
    // AOF with fsync on every write: what Redis acknowledged survives the restart
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut conn = server.conn().await;
    let child = simulate(
        &server,
        &["--reset", "--stock", "100000", "--customers", "800", "--rate", "200", "--max-order-delay-millis", "300"],
    );
    wait_for_customers(&mut conn, 50).await;
    server.restart(); // SIGKILL, then a new process on the same port and data directory
    let run = parse(finish(child, Duration::from_secs(120)).await);
    assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
    let s = &run.summary;
    assert!(num(s, "reconnects") >= 1, "the simulator did not notice the restart: {s}");
    assert_eq!(num(s, "customers"), 800, "{s}");
    assert_eq!(num(s, "orders"), 800, "{s}");
    assert_eq!(num(s, "ordersNotSent"), 0, "{s}");
    assert!(s.get("error").is_none(), "{s}");

    let mut conn = server.conn().await;
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 800);
    let product: Option<i64> = redis::cmd("GET").arg("product").query_async(&mut conn).await.unwrap();
    assert_eq!(product, Some(100_000), "nobody decided orders, so the stock is untouched");
    assert_no_write_log(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_a_full_speed_run_writes_every_customer_and_order_once() {
    // Batches of hundreds of customers and orders, several in flight, when Redis is killed. A
    // proxy makes sure that some of them were executed (and, with fsync always, persisted) but
    // never answered: after the restart the simulator must find them in its log.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut conn = server.conn().await;
    let proxy = LostReplyProxy::start_with(server.port, true).await;
    let (stop, log_size) = watch_write_log(&server);
    let args = [
        "--reset",
        "--stock",
        "1000000",
        "--customers",
        "60000",
        "--rate",
        "1000000",
        "--max-order-delay-millis",
        "20",
    ];
    let child = simulate_at(&format!("redis://127.0.0.1:{}", proxy.port), &args);
    wait_for_customers(&mut conn, 8000).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.cuts.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no batch went through the proxy after it was armed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // Redis runs and persists what it got
    let written_before: u64 = xlen(&mut conn, "queue:customers").await;
    server.restart();
    let run = parse(finish(child, Duration::from_secs(180)).await);
    stop.store(true, Ordering::SeqCst);
    let largest_log = log_size.await.unwrap();
    assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
    let s = &run.summary;
    assert!(num(s, "reconnects") >= 1, "the simulator did not notice the restart: {s}");
    assert!(num(s, "customers") > written_before, "the run went on after the restart: {s}");
    assert_eq!((num(s, "customers"), num(s, "orders"), num(s, "ordersNotSent")), (60_000, 60_000, 0), "{s}");

    let mut conn = server.conn().await;
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 60_000);
    assert_no_write_log(&mut conn).await;
    assert!((1..=5).contains(&largest_log), "the write log keeps at most 4 batches and its mark, saw {largest_log}");
}

/// One call of the batch script, as the simulator makes it (window 4): batch `number` with
/// customers `first..first + customers` and the given (number, customer entry id) orders.
async fn send_batch(
    conn: &mut MultiplexedConnection,
    number: u64,
    first: u64,
    customers: u64,
    orders: &[(u64, String)],
) -> redis::RedisResult<Option<String>> {
    let script = redis::Script::new(simulator::SEND_BATCH_LUA);
    let mut inv = script.prepare_invoke();
    inv.key("queue:customers").key("queue:orders").key("popup:simulator:test");
    inv.arg(number).arg(simulator::WINDOW).arg(60_000).arg(first).arg(customers).arg("product");
    for (n, customer) in orders {
        inv.arg(*n).arg(customer);
    }
    inv.invoke_async(conn).await
}

/// The fields of the test's write log (sorted) and its `acked` mark.
async fn write_log(conn: &mut MultiplexedConnection) -> (Vec<String>, String) {
    let mut fields: Vec<String> = redis::cmd("HKEYS").arg("popup:simulator:test").query_async(conn).await.unwrap();
    fields.sort();
    let acked: String = redis::cmd("HGET").arg("popup:simulator:test").arg("acked").query_async(conn).await.unwrap();
    (fields, acked)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_script_writes_each_batch_once_and_keeps_a_small_log() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET").arg("product").arg(10).query_async(&mut conn).await.unwrap();
    let mut replies = Vec::new();
    let mut pending: Vec<(u64, String)> = Vec::new();
    for b in 1..=10u64 {
        // three customers per batch; each batch also carries the orders of the previous one
        let reply = send_batch(&mut conn, b, 3 * b - 2, 3, &pending).await.unwrap().expect("the sale is there");
        let ids: Vec<String> = reply.split(' ').map(str::to_string).collect();
        assert_eq!(ids.len(), 3, "{reply}");
        pending = ids.iter().enumerate().map(|(i, id)| (3 * b - 2 + i as u64, id.clone())).collect();
        replies.push(reply);
    }
    let last = send_batch(&mut conn, 11, 31, 0, &pending).await.unwrap();
    assert_eq!(last.as_deref(), Some(""), "a batch of orders only has no customer ids");
    assert_eq!(xlen(&mut conn, "queue:customers").await, 30);
    assert_eq!(xlen(&mut conn, "queue:orders").await, 30);

    // a retry of a batch still in the window is answered from the log, without writing
    let again = send_batch(&mut conn, 10, 28, 3, &[]).await.unwrap();
    assert_eq!(again.as_deref(), Some(replies[9].as_str()));
    // a late copy of a batch that left the window is refused, without writing
    let stale = send_batch(&mut conn, 2, 4, 3, &[]).await.unwrap_err();
    assert!(stale.to_string().contains("batch 2 was written and acknowledged already"), "{stale}");
    assert_eq!(xlen(&mut conn, "queue:customers").await, 30);
    assert_eq!(xlen(&mut conn, "queue:orders").await, 30);
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 30);

    // the log: the last 4 batches and the mark up to which batches were acknowledged
    assert_eq!(write_log(&mut conn).await, (strings(&["10", "11", "8", "9", "acked"]), "7".into()));
    // batches can reach Redis out of order (retries, tasks): 13 before 12 still trims the log
    assert_eq!(send_batch(&mut conn, 13, 31, 0, &[]).await.unwrap().as_deref(), Some(""));
    assert_eq!(send_batch(&mut conn, 12, 31, 0, &[]).await.unwrap().as_deref(), Some(""));
    assert_eq!(write_log(&mut conn).await, (strings(&["10", "11", "12", "13", "acked"]), "9".into()));
    let ttl: i64 = redis::cmd("PTTL").arg("popup:simulator:test").query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    // no sale, no writes
    let _: () = redis::cmd("DEL").arg("product").query_async(&mut conn).await.unwrap();
    assert_eq!(send_batch(&mut conn, 14, 31, 2, &[]).await.unwrap(), None);
    assert_eq!(xlen(&mut conn, "queue:customers").await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_speed_writes_every_customer_once_with_one_order() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let (stop, log_size) = watch_write_log(&server);
    // orders right after their customer, then orders spread over 300 ms (interleaved with arrivals)
    for delay in ["0", "300"] {
        let args =
            ["--reset", "--stock", "7", "--customers", "30000", "--rate", "1000000", "--max-order-delay-millis", delay];
        let run = parse(finish(simulate(&server, &args), Duration::from_secs(120)).await);
        assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
        let s = &run.summary;
        assert_eq!((num(s, "customers"), num(s, "orders"), num(s, "ordersNotSent")), (30_000, 30_000, 0), "{s}");
        assert_eq!(num(s, "reconnects"), 0, "{s}");
        for key in ["customersPerSec", "arrivalSecs", "sendSecs", "durationSecs"] {
            assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {s}");
        }
        assert!(s["arrivalSecs"].as_f64() <= s["sendSecs"].as_f64(), "{s}");
        assert_eq!(assert_one_order_per_customer(&mut conn).await, 30_000);
        assert_no_write_log(&mut conn).await;
    }
    stop.store(true, Ordering::SeqCst);
    let largest_log = log_size.await.unwrap();
    assert!(largest_log <= 5, "the write log keeps at most 4 batches and its mark, saw {largest_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_sends_exactly_the_customers_due() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // customer k arrives at k/rate s: 2 s at 1500/s are customers 0..2999, whatever the timer does
    let args = ["--reset", "--stock", "100", "--rate", "1500", "--max-seconds", "2", "--max-order-delay-millis", "100"];
    let run = parse(finish(simulate(&server, &args), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!((num(&run.summary, "customers"), num(&run.summary, "orders")), (3000, 3000), "{}", run.summary);
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 3000);

    // --customers ends a paced run exactly, before any deadline
    let args =
        ["--reset", "--customers", "2500", "--rate", "5000", "--max-seconds", "60", "--max-order-delay-millis", "0"];
    let run = parse(finish(simulate(&server, &args), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!((num(&run.summary, "customers"), num(&run.summary, "orders")), (2500, 2500), "{}", run.summary);
    assert!(!run.stderr.contains("max duration reached"), "{}", run.stderr);
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_run_pipelines_plain_writes_exactly_once() {
    // `simulator::run` (used by the engine tests) writes plain XADD pipelines, no write log
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = SimulatorConfig {
        stock: 5,
        customers: 12_345,
        rate: Some(1_000_000.0),
        max_order_delay: Duration::from_millis(50),
        reset: true,
        ..Default::default()
    };
    let mut readings = Vec::new();
    let summary = simulator::run(&mut conn.clone(), &cfg, |p| readings.push(*p)).await.unwrap();
    assert_eq!((summary.customers, summary.orders, summary.orders_not_sent), (12_345, 12_345, 0), "{summary:?}");
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 12_345);
    assert_no_write_log(&mut conn).await;
    assert!(readings.windows(2).all(|w| w[0].customers <= w[1].customers && w[0].orders <= w[1].orders));
    assert!(readings.iter().all(|p| p.orders <= p.customers && p.customers <= 12_345), "{readings:?}");
}

/// The simulator binary with `args`, and Redis taken away by `interrupt` once `arrived` customers are
/// in: the run must fail (exit code 1). Returns it and Redis' address, which its error should name.
async fn run_interrupted(
    server: &mut RedisServer,
    args: &[&str],
    arrived: u64,
    interrupt: impl FnOnce(&mut RedisServer),
) -> (Run, String) {
    let mut conn = server.conn().await;
    let child = simulate(server, args);
    wait_for_customers(&mut conn, arrived).await;
    interrupt(server);
    let run = parse(finish(child, Duration::from_secs(120)).await);
    assert_eq!(run.code, Some(1), "{}\n{}", run.summary, run.stderr);
    (run, format!("127.0.0.1:{}", server.port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_is_a_lost_sale_and_writes_nothing_more() {
    let mut server = RedisServer::start();
    let args =
        ["--reset", "--stock", "100000", "--customers", "5000", "--rate", "200", "--max-order-delay-millis", "300"];
    let (run, addr) = run_interrupted(&mut server, &args, 50, RedisServer::restart).await;
    let s = &run.summary;
    assert!(
        run.stderr.contains(&format!("Redis at {addr} came back without the `product` key")),
        "the error names the address and the lost sale:\n{}",
        run.stderr
    );
    assert!(s["error"].as_str().is_some_and(|e| e.contains("without persistence")), "{s}");
    let (customers, orders, not_sent) = (num(s, "customers"), num(s, "orders"), num(s, "ordersNotSent"));
    assert!((50..5000).contains(&customers), "{s}");
    assert_eq!(orders + not_sent, customers, "the summary accounts for every customer: {s}");
    assert!(s["productLeft"].is_null(), "the stock is unknown after a lost sale: {s}");

    // nothing was written into the empty Redis, and `product` was not set again behind the user's back
    let mut conn = server.conn().await;
    assert_eq!(xlen(&mut conn, "queue:customers").await, 0);
    assert_eq!(xlen(&mut conn, "queue:orders").await, 0);
    let exists: i64 = redis::cmd("EXISTS").arg("product").query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_stays_away_ends_the_run_with_a_summary() {
    let mut server = RedisServer::start();
    let args = ["--reset", "--stock", "100000", "--rate", "200", "--reconnect-seconds", "1"];
    let (run, addr) = run_interrupted(&mut server, &args, 20, RedisServer::stop).await;
    let s = &run.summary;
    assert!(run.stderr.contains(&format!("Redis at {addr} did not answer for 1s")), "{}", run.stderr);
    assert!(run.stderr.contains("customers got no order"), "the error repeats the counts: {}", run.stderr);
    let customers = num(s, "customers");
    assert!(customers >= 20, "{s}");
    assert_eq!(num(s, "orders") + num(s, "ordersNotSent"), customers, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stock_sends_no_customers() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let run = parse(finish(simulate(&server, &["--stock", "0", "--customers", "10"]), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(num(&run.summary, "customers"), 0, "{}", run.summary);
    assert_eq!(num(&run.summary, "orders"), 0);
    assert_eq!(xlen(&mut conn, "queue:customers").await, 0);
    let product: Option<i64> = redis::cmd("GET").arg("product").query_async(&mut conn).await.unwrap();
    assert_eq!(product, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_seconds_cuts_an_hour_long_gap_or_delay() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // an arrival gap of up to an hour: the run still ends at the deadline (the limit only catches a hang)
    let args = ["--reset", "--customers", "5", "--max-arrival-millis", "3600000", "--max-seconds", "1"];
    let run = parse(finish(simulate(&server, &args), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(num(&run.summary, "orders"), num(&run.summary, "customers"), "{}", run.summary);

    // order delays of up to an hour: at the deadline the pending orders are sent, none is lost
    let args = [
        "--reset",
        "--customers",
        "3",
        "--max-arrival-millis",
        "0",
        "--max-order-delay-millis",
        "3600000",
        "--max-seconds",
        "1",
    ];
    let run = parse(finish(simulate(&server, &args), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(num(&run.summary, "customers"), 3, "{}", run.summary);
    assert_eq!(num(&run.summary, "orders"), 3, "{}", run.summary);
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_at_once_without_a_count_ends_at_the_deadline() {
    // random gaps of 0 ms and no --customers: an endless crowd, which only the deadline stops
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let args = ["--reset", "--stock", "1000000", "--max-arrival-millis", "0", "--max-order-delay-millis", "0"];
    let run =
        parse(finish(simulate(&server, &[&args[..], &["--max-seconds", "1"]].concat()), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("max duration reached"), "{}", run.stderr);
    let customers = num(&run.summary, "customers");
    assert!(customers > 0, "{}", run.summary);
    assert_eq!(num(&run.summary, "orders"), customers, "{}", run.summary);
    assert_eq!(assert_one_order_per_customer(&mut conn).await as u64, customers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_it_cannot_hold_is_reported_once() {
    let server = RedisServer::start();
    // a million customers per second: beyond this machine, even in batches
    let args = ["--reset", "--stock", "1000000000", "--rate", "1000000", "--max-order-delay-millis", "0"];
    let run =
        parse(finish(simulate(&server, &[&args[..], &["--max-seconds", "2"]].concat()), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr.matches("cannot hold --rate 1000000").count(), 1, "one warning:\n{}", run.stderr);
    let s = &run.summary;
    assert_eq!(s["behindRate"], true, "{s}");
    assert_eq!(s["targetRate"].as_f64(), Some(1_000_000.0), "{s}");
    assert!(s["lowestRate"].as_f64().is_some_and(|r| r < 950_000.0), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_clears_the_sale_but_keeps_worker_heartbeats() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    for key in ["popup:customers:served", "popup:orders:done", "popup:something:new"] {
        let _: () = redis::cmd("SADD").arg(key).arg("x").query_async(&mut conn).await.unwrap();
    }
    let _: () = redis::cmd("SET").arg("popup:worker:w1").arg("{}").query_async(&mut conn).await.unwrap();
    let _: String =
        redis::cmd("XADD").arg("queue:rejected").arg("*").arg("a").arg("b").query_async(&mut conn).await.unwrap();
    let run = parse(finish(simulate(&server, &["--reset", "--stock", "0"]), Duration::from_secs(60)).await);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["popup:worker:w1", "product"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_engine_decides_orders_the_resilient_simulator_writes() {
    // customers and orders are written from a Lua script; stream triggers must still fire on them
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let settings = popup_operator::sale::ProcessingSettings::default();
    popup_operator::sale::load_scripts(&mut conn, popup_operator::sale::EngineKind::Triggers, &settings).await.unwrap();
    let args = [
        "--reset",
        "--stock",
        "30",
        "--customers",
        "50",
        "--max-arrival-millis",
        "2",
        "--max-order-delay-millis",
        "10",
        "--wait-complete",
        "30",
    ];
    let run = parse(finish(simulate(&server, &args), Duration::from_secs(90)).await);
    assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
    assert_eq!(num(&run.summary, "completed"), 30, "{}", run.summary);
    assert_eq!(num(&run.summary, "rejected"), 20, "{}", run.summary);
    assert_eq!(run.summary["productLeft"], 0);
}

/// A TCP proxy in front of Redis that, once armed, forwards the next client chunk containing an
/// `EVALSHA` (a simulator write) to Redis and swallows every reply on that connection from then
/// on: Redis has executed the write, the client never hears about it — the case a plain retry
/// would turn into a duplicate. Then it either cuts the connection (after 300 ms) or, holding,
/// keeps it open until Redis goes away (the test restarts Redis meanwhile).
struct LostReplyProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    /// Connections whose replies were swallowed.
    cuts: Arc<AtomicU64>,
}

impl LostReplyProxy {
    async fn start(redis_port: u16) -> LostReplyProxy {
        Self::start_with(redis_port, false).await
    }

    async fn start_with(redis_port: u16, hold: bool) -> LostReplyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU64::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // while Redis restarts, refusing the client is what a missing Redis does too
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else { continue };
                tokio::spawn(Self::pipe(client, server, a.clone(), c.clone(), hold));
            }
        });
        LostReplyProxy { port, armed, cuts }
    }

    async fn pipe(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        armed: Arc<AtomicBool>,
        cuts: Arc<AtomicU64>,
        hold: bool,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let swallow = Arc::new(AtomicBool::new(false));
        let s = swallow.clone();
        let replies = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                if s.load(Ordering::SeqCst) {
                    if hold {
                        continue;
                    }
                    break;
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            let chunk = &buf[..n];
            let cut = chunk.windows(7).any(|w| w == b"EVALSHA") && armed.swap(false, Ordering::SeqCst);
            if cut {
                swallow.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                break;
            }
            if cut {
                let _ = server_write.flush().await;
                if hold {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                // let Redis execute what it was sent, then drop both sides with the replies unsent
                tokio::time::sleep(Duration::from_millis(300)).await;
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        if hold {
            // until Redis goes away; then the client sees its connection close
            let _ = replies.await;
        } else {
            replies.abort();
        }
    }
}

/// A finished simulator run whose Redis answered through a [`LostReplyProxy`].
struct LostReplyRun {
    /// Bind it (`_server`, not `..`): Redis stops when it is dropped.
    _server: RedisServer,
    /// To Redis directly.
    conn: MultiplexedConnection,
    proxy: LostReplyProxy,
    run: Run,
}

/// The simulator binary selling `customers` (from a stock that never runs out) at `rate` a second,
/// each ordering within `delay_ms` milliseconds, through a [`LostReplyProxy`] armed once `arm_after`
/// customers arrived; run to its end (at most 120 s).
async fn run_losing_a_reply(customers: &str, rate: &str, delay_ms: &str, arm_after: u64) -> LostReplyRun {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let proxy = LostReplyProxy::start(server.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let args = [
        "--reset",
        "--stock",
        "100000",
        "--customers",
        customers,
        "--rate",
        rate,
        "--max-order-delay-millis",
        delay_ms,
    ];
    let child = simulate_at(&url, &args);
    wait_for_customers(&mut conn, arm_after).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let run = parse(finish(child, Duration::from_secs(120)).await);
    LostReplyRun { _server: server, conn, proxy, run }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_was_lost_is_not_sent_twice() {
    let LostReplyRun { _server, mut conn, proxy, run } = run_losing_a_reply("300", "100", "50", 20).await;
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut a connection after a write");
    let s = &run.summary;
    assert_eq!(run.code, Some(0), "{s}\n{}", run.stderr);
    assert!(num(s, "reconnects") >= 1, "{s}");
    assert_eq!((num(s, "customers"), num(s, "orders")), (300, 300), "{s}");
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_was_lost_at_full_speed_is_not_sent_twice() {
    // the cut hits a connection carrying several pipelined batches: Redis ran them, no reply came back
    let LostReplyRun { _server, mut conn, proxy, run } = run_losing_a_reply("40000", "1000000", "0", 5000).await;
    let s = &run.summary;
    assert_eq!(run.code, Some(0), "{s}\n{}", run.stderr);
    // the client may be done before the proxy counts its cut (it sees the connection close early)
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.cuts.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut a connection after a write: {s}");
    assert!(num(s, "reconnects") >= 1, "{s}");
    assert_eq!((num(s, "customers"), num(s, "orders")), (40_000, 40_000), "{s}");
    assert_eq!(assert_one_order_per_customer(&mut conn).await, 40_000);
    assert_no_write_log(&mut conn).await;
}

/// A simulator Job's pod can start before Redis is reachable from it (a NetworkPolicy engine admits a
/// new pod's address a moment later; Redis may be restarting): its first connection is retried like
/// any later one, and the run joins the operator's sale once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connection_is_retried_until_redis_answers() {
    // Redis with the operator's scripts and sale, not reachable yet at the address the simulator is given.
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    popup_operator::sale::functions::ensure(&mut conn, &[popup_operator::sale::functions::SEND_BATCH]).await.unwrap();
    popup_operator::sale::marker::start(&mut conn, "late", 100).await.unwrap();
    let port = redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let child = simulate_at(&url, &["--join-sale", "late", "--customers", "20", "--reconnect-seconds", "30"]);
    // Nothing listens there yet; the simulator keeps trying. Then the address starts to lead to Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let forward = forward(port, server.port).await;
    let run = parse(finish(child, Duration::from_secs(60)).await);
    forward.abort();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach Redis"), "it said it waited: {}", run.stderr);
    assert_eq!(num(&run.summary, "customers"), 20, "{}", run.summary);
    assert_eq!(xlen(&mut conn, "queue:customers").await, 20);
}

/// A run for a sale Redis does not hold (lost, or replaced by a newer one) sends nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_a_sale_redis_does_not_hold_sends_nothing() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    popup_operator::sale::marker::start(&mut conn, "newer", 100).await.unwrap();
    let out = finish(simulate(&server, &["--join-sale", "older", "--customers", "5"]), Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not hold sale older (no popup:sale:older key)"), "{stderr}");
    assert_eq!(xlen(&mut conn, "queue:customers").await, 0);
}

/// Connections to `from` (on loopback) carried to `to`, until the task is aborted.
async fn forward(from: u16, to: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", from)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}
