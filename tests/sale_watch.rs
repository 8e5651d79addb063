//! `popup-operator sale --watch` against a real redis-stack-server and a real sale (the native
//! worker deciding the orders `simulate` sends): it ends by itself, exit code 0, once the sale is
//! over; its numbers only move forward; plain output has no escape codes; it rides out a Redis
//! restart; ctrl-c ends it with a summary and the engine's problems. Every wait is for a line the
//! watch printed or a process to end, never a fixed sleep.

pub mod support;
use support::redis_server;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis_server::{ChildGuard, RedisServer};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_popup-operator");

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("REDIS_URL").env_remove("REDIS_PASSWORD").env_remove("POPUP_ENGINE");
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Run a command to its end (killed after `limit`, which only guards against a hang).
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let child = command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("popup-operator {args:?} did not finish within {}s", limit.as_secs());
    });
    let out = out.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The native engine's worker on `server`, killed on drop.
fn worker(server: &RedisServer) -> ChildGuard {
    let (code, _, stderr) = run(&["load", "--engine", "native", "--redis", &server.url()], Duration::from_secs(60));
    assert_eq!(code, Some(0), "load: {stderr}");
    let args = ["process", "--redis", &server.url(), "--batch-size", "3"];
    ChildGuard(Some(command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()))
}

/// A running `sale --watch`; its stdout lines arrive as they are written.
struct Watch {
    child: ChildGuard,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: JoinHandle<String>,
}

impl Watch {
    fn start(server: &RedisServer, extra: &[&str]) -> Watch {
        let url = server.url();
        let args = [&["sale", "--watch", "--redis", &url, "--interval-millis", "50"], extra].concat();
        let mut child = command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Watch { child: ChildGuard(Some(child)), lines, seen: Vec::new(), stderr }
    }

    /// The next line that satisfies `wanted`, within `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {what} within {}s; lines:\n{}", limit.as_secs(), self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the watch ended before a line with {what}; lines:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// The next JSON reading that satisfies `wanted`.
    fn wait_for_json(&mut self, what: &str, limit: Duration, wanted: impl Fn(&Json) -> bool) -> Json {
        let line = self.wait_for(what, limit, |l| serde_json::from_str(l).is_ok_and(|v| wanted(&v)));
        serde_json::from_str(&line).unwrap()
    }

    fn interrupt(&self) {
        let status = Command::new("kill").args(["-INT", &self.child.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Wait until the watch ends by itself (within `limit`): its exit code, every stdout line, stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the watch did not end within {}s; lines:\n{}", limit.as_secs(), self.seen.join("\n"))
                }
            }
        }
        let mut child = self.child.0.take().unwrap();
        let status = child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (status.code(), self.seen, stderr)
    }
}

fn parse(lines: &[String]) -> Vec<Json> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn num(v: &Json, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Completed and rejected never go down from one reading to the next.
fn assert_monotonic(readings: &[Json]) {
    for pair in readings.windows(2) {
        for key in ["completed", "rejected"] {
            assert!(num(&pair[1], key) >= num(&pair[0], key), "{key} went down:\n{}\n{}", pair[0], pair[1]);
        }
    }
}

/// The `key=value` fields of a plain line (up to the first ` | ` note).
fn fields(line: &str) -> Vec<(String, String)> {
    let numbers = line.split(" | ").next().unwrap();
    let numbers = numbers.split_once(": ").map_or(numbers, |(_, rest)| rest);
    numbers.split(' ').map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap()).collect()
}

fn field(line: &str, key: &str) -> String {
    fields(line).into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key} in {line}")).1
}

fn redis_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

#[test]
fn watch_follows_a_sale_until_it_is_over() {
    let server = RedisServer::start();
    let _worker = worker(&server);
    let mut json = Watch::start(&server, &["--json", "--engine", "native"]);
    let mut plain = Watch::start(&server, &[]);
    // both watch before the sale exists: no `product` yet, not over
    let first = json.wait_for_json("a first reading", Duration::from_secs(30), |_| true);
    assert!(first["available"].is_null() && first["over"] == false, "{first}");
    plain.wait_for("no sale yet", Duration::from_secs(30), |l| l.contains("no sale yet"));

    let args = ["simulate", "--redis", &server.url(), "--stock", "40", "--max-arrival-millis", "10"];
    let (code, summary, stderr) = run(
        &[&args[..], &["--max-order-delay-millis", "50", "--wait-complete", "60", "--json"]].concat(),
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "simulate: {summary}\n{stderr}");

    let (code, lines, stderr) = json.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}\n{}", lines.join("\n"));
    let readings = parse(&lines);
    let keys: Vec<Vec<&String>> = readings.iter().map(|r| r.as_object().unwrap().keys().collect()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "every reading has the same fields: {keys:?}");
    assert_monotonic(&readings);
    let last = readings.last().unwrap();
    assert_eq!(last["final"], true, "{last}");
    assert!(readings[..readings.len() - 1].iter().all(|r| r["final"] == false), "only the last reading is final");
    assert_eq!(last["over"], true, "{last}");
    assert_eq!((num(last, "available"), num(last, "stock"), num(last, "completed")), (0, 40, 40), "{last}");
    assert_eq!((num(last, "customersWaiting"), num(last, "ordersWaiting")), (0, 0), "{last}");
    assert_eq!(last["connected"], true, "{last}");
    assert_eq!(last["problems"], serde_json::json!([]), "{last}");
    assert_eq!(last["engine"]["healthy"], true, "{last}");
    assert!(readings.iter().any(|r| r["available"].is_u64() && r["over"] == false), "the sale was seen under way");

    let (code, lines, stderr) = plain.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}\n{}", lines.join("\n"));
    let text = lines.join("\n");
    assert!(!text.contains('\x1b') && !stderr.contains('\x1b'), "escape codes in plain output:\n{text}\n{stderr}");
    let (summary, changes) = lines.split_last().unwrap();
    assert!(summary.starts_with("sale over: available=0 completed=40 "), "{text}");
    assert_eq!((field(summary, "customers_waiting"), field(summary, "orders_waiting")), ("0".into(), "0".into()));
    assert!(changes.iter().all(|l| l.starts_with("available=")), "{text}");
    assert!(changes.windows(2).all(|w| w[0] != w[1]), "a line only when something changed:\n{text}");
    let completed: Vec<u64> = changes.iter().map(|l| field(l, "completed").parse().unwrap()).collect();
    assert!(completed.windows(2).all(|w| w[0] <= w[1]), "completed went down: {completed:?}");

    // the watch's last numbers are Redis's
    let mut conn = redis_conn(&server);
    let product: i64 = redis::cmd("GET").arg("product").query(&mut conn).unwrap();
    let done: u64 = redis::cmd("XLEN").arg("queue:complete").query(&mut conn).unwrap();
    assert_eq!((product, done), (0, 40));
}

#[test]
fn watch_rides_out_a_redis_restart() {
    // AOF with fsync on every write: the sale survives the restart, so it can still end
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let _worker = worker(&server);
    let mut watch = Watch::start(&server, &["--json"]);
    watch.wait_for_json("a first reading", Duration::from_secs(30), |_| true);
    let args =
        ["simulate", "--redis", &server.url(), "--stock", "150", "--rate", "100", "--max-order-delay-millis", "50"];
    let mut sim = ChildGuard(Some(
        command(&[&args[..], &["--reconnect-seconds", "120", "--wait-complete", "120"]].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let before = watch.wait_for_json("10 orders completed", Duration::from_secs(60), |r| {
        r["completed"].as_u64().is_some_and(|c| c >= 10)
    });
    assert_eq!(before["connected"], true);

    server.stop();
    let away = watch.wait_for_json("Redis unreachable", Duration::from_secs(30), |r| r["connected"] == false);
    assert!(away["error"].as_str().is_some_and(|e| !e.is_empty()), "the reason is given: {away}");
    server.restart();

    let (code, lines, stderr) = watch.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}\n{}", lines.join("\n"));
    let readings = parse(&lines);
    assert_monotonic(&readings);
    let last = readings.last().unwrap();
    assert!(last["final"] == true && last["over"] == true && last["connected"] == true, "{last}");
    assert_eq!((num(last, "available"), num(last, "completed"), num(last, "stock")), (0, 150, 150), "{last}");
    let back = readings.iter().skip_while(|r| r["connected"] == true).skip_while(|r| r["connected"] == false).count();
    assert!(back >= 1, "readings after Redis came back");

    let out = sim.0.take().unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ctrl_c_ends_the_watch_with_a_summary_and_the_engine_problems() {
    let server = RedisServer::start();
    let mut conn = redis_conn(&server);
    // a sale with one order and no engine to decide it: never over
    let _: () = redis::cmd("SET").arg("product").arg(5).query(&mut conn).unwrap();
    let customer: String =
        redis::cmd("XADD").arg("queue:customers").arg("*").arg("id").arg(1).query(&mut conn).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("queue:orders")
        .arg("*")
        .arg("id")
        .arg(1)
        .arg("customer")
        .arg(&customer)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET").arg("popup:engine:error").arg("boom").arg("EX").arg(60).query(&mut conn).unwrap();

    let mut json = Watch::start(&server, &["--json", "--engine", "native"]);
    let seen = json.wait_for_json("the engine's problems", Duration::from_secs(30), |r| {
        r["problems"].to_string().contains("no native worker heartbeat")
    });
    assert_eq!(seen["engine"]["healthy"], false, "{seen}");
    json.interrupt();
    let (code, lines, stderr) = json.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "ctrl-c is a normal end: {stderr}");
    let last = parse(&lines).pop().unwrap();
    assert!(last["final"] == true && last["over"] == false, "{last}");
    assert_eq!((num(&last, "available"), num(&last, "ordersWaiting"), num(&last, "customersWaiting")), (5, 1, 1));
    assert!(last["problems"].to_string().contains("boom"), "{last}");

    let mut plain = Watch::start(&server, &[]);
    plain.wait_for("the recorded failure", Duration::from_secs(30), |l| l.contains("engine failing:"));
    plain.interrupt();
    let (code, lines, stderr) = plain.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let text = lines.join("\n");
    assert!(!text.contains('\x1b'), "{text}");
    let summary = lines.iter().find(|l| l.starts_with("stopped: ")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert_eq!(
        summary,
        "stopped: available=5 completed=0 rejected=0 customers_waiting=1 orders_waiting=1 orders_per_s=0.0"
    );
    assert!(
        lines.last().unwrap().starts_with("engine failing: the engine failed to decide an order")
            && lines.last().unwrap().ends_with(": boom"),
        "the problems follow the summary:\n{text}"
    );
}
