//! The dashboard against a real sale: every panel's query runs on a real redis-stack-server exactly as the
//! Redis datasource plugin sends it (`command` + `keyName`; `TS.RANGE key from to AGGREGATION agg bucket`
//! over the panel's time range), logged in as the store's Grafana user, and the answers must be of the
//! panel's type and show the sale. The same user cannot write: not through a panel query, not through the
//! plugin's custom-command path that any Viewer can use.

pub mod support;
use support::{acl_users, poll, redis_server};

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acl_users::Users;
use popup_operator::crd::Engine;
use popup_operator::render::acl::Role;
use popup_operator::render::grafana::DASHBOARD_JSON;
use popup_operator::sale::{self, ProcessingSettings};
use redis::Value;
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
    every_panel_shows_the_sale(Engine::Triggers).await;
}

/// The store's default engine and the original demo's pair: RedisGears 1 feeding the dashboard, on the
/// real runtime when `$POPUP_REDISGEARS1` gives it.
#[tokio::test]
async fn every_panel_shows_a_gears_sale_from_real_redisgears_1() {
    if redis_server::redisgears1().is_none() {
        eprintln!("SKIPPED: POPUP_REDISGEARS1 is unset: the dashboard over a gears sale needs real RedisGears 1");
        return;
    }
    every_panel_shows_the_sale(Engine::Gears).await;
}

async fn every_panel_shows_the_sale(engine: Engine) {
    // The store's users, as its Redis pod loads them; each part logs in as its own user.
    let users = Users::new(engine);
    let server = match engine {
        Engine::Gears => redis_server::RedisServer::start_gears1(&["--aclfile", &users.write_acl_file()]),
        _ => users.start_server(),
    };
    let mut conn = users.conn(&server, Role::Operator).await;
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(1) };
    sale::load_scripts(&mut conn, engine, &settings).await.unwrap();

    // 60 customers over ~3 s for 50 units: several samples, a sell-out and some rejections. The operator
    // starts the sale, the simulator joins it.
    sale::marker::start(&mut conn, "dashboard", 50).await.unwrap();
    // As the simulator Job runs it: its own user, the send-once script.
    users.join_sale(&server, "dashboard", 60, 20.0, Duration::from_secs(30)).await;
    // A sample after the last decision, so the last lengths are in the series: the triggers engine samples
    // on stream activity and the native sampler fills the gap; gears wakes itself at the next boundary.
    let ended = now_ms();
    if engine == Engine::Gears {
        poll::wait(
            "gears to write a sample after the sale",
            Duration::from_secs(10),
            Duration::from_millis(50),
            async || {
                let last: Option<i64> = redis::cmd("GET").arg(sale::SAMPLE_LAST).query_async(&mut conn).await.unwrap();
                if last.is_some_and(|b| b > ended) { Ok(()) } else { Err(format!("last {last:?}")) }
            },
        )
        .await;
    } else {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sale::sample_if_due(&mut conn, &settings).await.unwrap();
    }
    let sale = sale::read_sale(&mut conn).await.unwrap();
    assert_eq!((sale.completed, sale.rejected, sale.product), (50, 10, Some(0)));

    let dashboard: Json = serde_json::from_str(DASHBOARD_JSON).unwrap();
    let (from, to) = (now_ms() - 15 * 60 * 1000, now_ms());
    // The plugin's health check, then every query, as the Grafana user.
    let mut grafana = users.plugin_conn(&server).await;
    let pong: String = redis::cmd("PING").query_async(&mut grafana).await.unwrap();
    assert_eq!(pong, "PONG");
    let mut shown: BTreeMap<String, Answer> = BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap().to_string();
        let mut vars = BTreeMap::new();
        let mut visible = Vec::new();
        for t in panel["targets"].as_array().unwrap() {
            let answer = if t["datasource"]["type"] == "__expr__" {
                evaluate(t["expression"].as_str().unwrap(), &vars)
            } else {
                run_target(&mut grafana, t, from, to).await
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
    // Not one command of the sale or of the dashboard was refused: the users have what they need.
    assert_eq!(acl_users::acl_log(&mut conn).await, Vec::<(String, String, String)>::new());
}

/// The plugin's `shell.Split` (bitbucket.org/creachadair/shell) for the queries used here: words split at
/// blanks, `'…'` literal, `"…"` with `\` escapes, `\x` outside quotes. `None` for an unclosed quote.
fn shell_split(line: &str) -> Option<Vec<String>> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// The plugin's custom-command path (`executeCustomQuery`, redis-datasource 2.2): a target with a
/// non-empty `query` is split like a shell line and sent as is, the command and its arguments, whatever
/// the panel's `command`. Any Viewer can post such a target to `/api/ds/query`.
async fn custom_query(conn: &mut redis::aio::MultiplexedConnection, query: &str) -> Result<Value, String> {
    let words = shell_split(query).ok_or("query is not valid")?;
    let (command, params) = words.split_first().ok_or("command is empty")?;
    let mut cmd = redis::cmd(command);
    cmd.arg(params);
    cmd.query_async(conn).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_viewer_cannot_write_through_the_datasource() {
    let users = Users::new(Engine::Triggers);
    let server = users.start_server();
    let mut admin = users.conn(&server, Role::Operator).await;
    let _: () = redis::cmd("SET").arg("product").arg(7).query_async(&mut admin).await.unwrap();
    let _: String =
        redis::cmd("XADD").arg("queue:customers").arg("*").arg("id").arg(1).query_async(&mut admin).await.unwrap();
    let _: () = redis::cmd("SET").arg("popup:engine:error").arg("internal").query_async(&mut admin).await.unwrap();
    let before = sale::read_sale(&mut admin).await.unwrap();

    // What the datasource logs in as: the Grafana user and the password in its Secret.
    let mut grafana = users.plugin_conn(&server).await;
    // The custom path reaches what the dashboard shows…
    assert_eq!(custom_query(&mut grafana, "GET product").await, Ok(Value::BulkString(b"7".to_vec())));
    assert_eq!(custom_query(&mut grafana, "XLEN queue:customers").await, Ok(Value::Int(1)));
    // …and nothing else. Writes, admin commands, scripts, other keys, other clients:
    for attack in [
        "FLUSHALL",
        "FLUSHDB",
        "SET product 1000000",
        "DEL product",
        "DEL queue:customers",
        "INCRBY product 100",
        "XADD queue:complete * order 1-1 customer 1-1",
        "XADD queue:orders * id 2 customer 1-1",
        "XTRIM queue:customers MAXLEN 0",
        "TS.ADD ts:len:queue:orders * 0",
        "CONFIG SET requirepass x",
        "CONFIG GET *",
        "EVAL \"return redis.call('SET','product','1000000')\" 0",
        "SCRIPT LOAD \"return 1\"",
        "TFUNCTION LIST",
        "ACL LIST",
        "ACL SETUSER popup-grafana +@all",
        "GET popup:engine:error",
        "KEYS *",
        "CLIENT LIST",
        "INFO",
        "SHUTDOWN NOSAVE",
    ] {
        let refused = custom_query(&mut grafana, attack).await.expect_err(attack);
        assert!(acl_users::is_noperm(&refused), "{attack}: refused, but not by the ACL: {refused}");
    }
    // The panel path with a write command in `command` is refused the same way.
    let t = serde_json::json!({"type": "command", "command": "del", "keyName": "product"});
    let panel = redis::cmd("DEL").arg(t["keyName"].as_str().unwrap()).query_async::<Value>(&mut grafana).await;
    assert!(acl_users::is_noperm(&panel.unwrap_err().to_string()));

    // Nothing changed, and Redis logged each refusal under the Grafana user.
    assert_eq!(sale::read_sale(&mut admin).await.unwrap(), before);
    let _: String = redis::cmd("PING").query_async(&mut grafana).await.unwrap();
    let log = acl_users::acl_log(&mut admin).await;
    assert!(!log.is_empty() && log.iter().all(|(user, _, _)| user == "popup-grafana"), "{log:?}");
}
