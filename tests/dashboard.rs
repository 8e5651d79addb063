//! The dashboard against a real sale: every panel's query runs on a real redis-stack-server exactly as the
//! Redis datasource plugin sends it (`command` + `keyName`; `TS.RANGE key from to AGGREGATION agg bucket`
//! over the panel's time range), and the answers must be of the panel's type and show the sale.

#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use popup_operator::engine::{self, EngineKind, ProcessingSettings};
use popup_operator::render::grafana::DASHBOARD_JSON;
use popup_operator::simulator::{self, SimulatorConfig};
use redis::Value;
use redis_server::RedisServer;
use serde_json::Value as Json;

/// What one query answered: a single number (stat panels) or samples (time series).
#[derive(Clone, Debug)]
enum Answer {
    Scalar(f64),
    Series(Vec<(i64, f64)>),
}

impl Answer {
    fn scalar(&self) -> f64 {
        match self {
            Answer::Scalar(v) => *v,
            Answer::Series(s) => panic!("expected a number, got a series of {}", s.len()),
        }
    }
    fn series(&self) -> &[(i64, f64)] {
        match self {
            Answer::Series(s) => s,
            Answer::Scalar(v) => panic!("expected a series, got {v}"),
        }
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Double(d) => *d,
        Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap(),
        Value::SimpleString(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

/// Runs one target the way redis-datasource 2.x does.
async fn run_target(conn: &mut redis::aio::MultiplexedConnection, t: &Json, from: i64, to: i64) -> Answer {
    let key = t["keyName"].as_str().unwrap();
    let command = t["command"].as_str().unwrap();
    match t["type"].as_str().unwrap() {
        "command" => {
            let reply: Value = redis::cmd(&command.to_uppercase()).arg(key).query_async(conn).await.unwrap();
            Answer::Scalar(number(&reply))
        }
        "timeSeries" => {
            let mut cmd = redis::cmd("TS.RANGE");
            cmd.arg(key).arg(from).arg(to);
            if let Some(agg) = t["aggregation"].as_str().filter(|a| !a.is_empty()) {
                cmd.arg("AGGREGATION").arg(agg).arg(t["bucket"].as_u64().unwrap());
            }
            let reply: Value = cmd.query_async(conn).await.unwrap_or_else(|e| panic!("TS.RANGE {key}: {e}"));
            let Value::Array(samples) = reply else { panic!("TS.RANGE {key}: {reply:?}") };
            Answer::Series(
                samples
                    .iter()
                    .map(|s| match s {
                        Value::Array(pair) => (number(&pair[0]) as i64, number(&pair[1])),
                        other => panic!("sample {other:?}"),
                    })
                    .collect(),
            )
        }
        other => panic!("query type {other}"),
    }
}

/// Grafana's math expressions as the dashboard uses them: `$A / ($A + $B) * 100`, `$A / 60`.
fn evaluate(expr: &str, vars: &BTreeMap<String, Answer>) -> Answer {
    let scalar = |name: &str| vars[name].scalar();
    match expr {
        "$A / ($A + $B) * 100" => Answer::Scalar(scalar("A") / (scalar("A") + scalar("B")) * 100.0),
        "$A / 60" => Answer::Series(vars["A"].series().iter().map(|(t, v)| (*t, v / 60.0)).collect()),
        other => panic!("the test does not know the expression {other}; teach it"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn every_panel_shows_the_sale_from_real_redis() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(1) };
    engine::load_scripts(&mut conn, EngineKind::Triggers, &settings).await.unwrap();

    // 60 customers over ~3 s for 50 units: several samples, a sell-out and some rejections.
    let config = SimulatorConfig {
        stock: 50,
        customers: 60,
        rate: Some(20.0),
        max_order_delay: Duration::from_millis(200),
        reset: true,
        wait_complete: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let summary = simulator::run(&mut conn, &config, |_| {}).await.unwrap();
    assert!(summary.all_processed, "{summary:?}");
    // One more interval so the last lengths are sampled (the triggers engine samples on stream activity).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    engine::sample_if_due(&mut conn, &settings).await.unwrap();
    let sale = engine::read_sale(&mut conn).await.unwrap();
    assert_eq!((sale.completed, sale.rejected, sale.product), (50, 10, Some(0)));

    let dashboard: Json = serde_json::from_str(DASHBOARD_JSON).unwrap();
    let (from, to) = (now_ms() - 15 * 60 * 1000, now_ms());
    let mut shown: BTreeMap<String, Answer> = BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap().to_string();
        let mut vars = BTreeMap::new();
        let mut visible = Vec::new();
        for t in panel["targets"].as_array().unwrap() {
            let answer = if t["datasource"]["type"] == "__expr__" {
                evaluate(t["expression"].as_str().unwrap(), &vars)
            } else {
                run_target(&mut conn, t, from, to).await
            };
            if !t["hide"].as_bool().unwrap_or(false) {
                visible.push(answer.clone());
            }
            vars.insert(t["refId"].as_str().unwrap().to_string(), answer);
        }
        assert!(!visible.is_empty(), "{title}: nothing visible");
        // Stat panels show one number, time series panels samples.
        for a in &visible {
            match (panel["type"].as_str().unwrap(), a) {
                ("stat", Answer::Scalar(_)) => {}
                ("timeseries", Answer::Series(s)) => {
                    assert!(!s.is_empty(), "{title}: no samples in the last 15 minutes");
                }
                (kind, a) => panic!("{title}: a {kind} panel got {a:?}"),
            }
        }
        // The seed has a stat and a graph both called "Customers Ordering": key by kind too.
        shown.insert(format!("{}:{title}", panel["type"].as_str().unwrap()), visible[0].clone());
    }

    let stat = |t: &str| shown[&format!("stat:{t}")].scalar();
    let series = |t: &str| shown[&format!("timeseries:{t}")].series().to_vec();
    let peak = |t: &str| series(t).iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let total = |t: &str| series(t).iter().map(|(_, v)| *v).sum::<f64>();
    // The seed's panels.
    assert_eq!(stat("Product Available"), 0.0, "sold out");
    assert_eq!(stat("Customers Ordering"), 0.0, "every customer was served or turned away");
    assert_eq!(stat("Orders Processing"), 0.0);
    assert_eq!(stat("Orders Completed"), 50.0);
    assert_eq!(total("Customers Overflow"), 60.0, "every arrival is counted once across the intervals");
    assert!(peak("Customers Ordering") > 0.0, "customers were waiting at some point");
    assert!(!series("Orders In Queue").is_empty());
    assert_eq!(total("Completed Flow"), 50.0);
    // Beyond the seed.
    assert_eq!(stat("Percent Sold"), 100.0);
    assert_eq!(stat("Orders Rejected"), 10.0);
    assert_eq!(total("Rejected Flow"), 10.0);
    assert!((total("Throughput") * 60.0 - 50.0).abs() < 1e-6, "orders/s over minute buckets adds up to the sale");
    assert!(!series("Backlog").is_empty());
    assert_eq!(shown.len(), 13, "{:?}", shown.keys().collect::<Vec<_>>());
}
