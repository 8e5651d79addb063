//! The attacks found on a store's Redis (issue 19), run against the **rendered** ACL file and the
//! **rendered** Redis command line (its memory settings) on real Redis: redis-stack 7.4 for the native
//! engine, and the real RedisGears 1 runtime (Redis 6.2) when `$POPUP_REDISGEARS1` gives it. Each is
//! refused, or shown harmless with the numbers measured, or, where Redis' ACLs cannot refuse it, shown
//! as what remains (docs/security.md says the same).
//!
//! - the processor: raising or setting the stock, emptying a queue, running code of its own (a busy
//!   loop that blocks Redis for everyone), `SCRIPT KILL`; what it can still do, shown;
//! - every user's rules are exactly what its code uses: the processor's, by watching the real binary
//!   (MONITOR) sell out and fail once, and comparing with every permission granted (one too many
//!   fails the test); the others as literal lists;
//! - no `nopass` user (the old probe user); the probes' command works without one;
//! - a flood of 50 MB requests from clients that do not read: errors and disconnections, memory
//!   bounded, the sale's keys kept; a data flood gets OOM errors, never an eviction;
//! - Grafana's user: `TS.RANGE … AGGREGATION avg 1 EMPTY` (Redis cannot refuse arguments), measured;
//!   anonymous Viewers are opt-in.
//!
//! The simulator user's attacks go in the section marked `SIMULATOR USER` below.

pub mod support;
use support::{acl_users, redis_server};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acl_users::{ADMIN_PASSWORD, Users, acl_log, refused, refused_by_acl};
use popup_operator::crd::{Engine, PopUpStore, PopUpStoreSpec};
use popup_operator::render::acl::{self, Role};
use popup_operator::render::{self, BuildInputs, ValidatedStore};
use popup_operator::sale::{self, EngineKind, ProcessingSettings, functions, read_sale};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_server::{ChildGuard, RedisServer, find_server};

const MIB: u64 = 1024 * 1024;

// ---- the rendered store -----------------------------------------------------------------------------

/// A store `shop` of `engine` with every component, `edit` applied to its spec.
fn store(engine: Engine, edit: impl FnOnce(&mut serde_json::Value)) -> ValidatedStore {
    let mut spec = serde_json::json!({ "engine": engine });
    edit(&mut spec);
    let spec: PopUpStoreSpec = serde_json::from_value(spec).unwrap();
    let mut s = PopUpStore::new("shop", spec);
    s.metadata.namespace = Some("sales".into());
    render::validate(&s).unwrap()
}

/// The Redis container's args as the StatefulSet renders them, for a test server: the port, `/data`,
/// persistence and the image's modules are the test server's own; the ACL file is the store's (as
/// the pod mounts it); everything else (the memory settings) is passed as rendered.
fn rendered_args(users: &Users) -> Vec<String> {
    let inputs = BuildInputs {
        redis_password: Some(ADMIN_PASSWORD.into()),
        grafana_admin_password: "g".into(),
        credentials: users.creds.clone(),
        operator_image: "example.invalid/popup-operator:test".into(),
        operator_pods: None,
        scripts: BTreeMap::new(),
    };
    let children = render::build_children(&users.store, &inputs);
    let container = children.redis.spec.unwrap().template.spec.unwrap().containers.remove(0);
    let rendered = container.args.unwrap();
    let mut args = Vec::new();
    let mut i = 0;
    while i < rendered.len() {
        let name = rendered[i].as_str();
        let values: Vec<&String> = rendered[i + 1..].iter().take_while(|a| !a.starts_with("--")).collect();
        match name {
            "--port" | "--dir" | "--appendonly" | "--loadmodule" => {}
            "--aclfile" => args.extend(["--aclfile".to_string(), users.write_acl_file()]),
            _ => {
                args.push(name.to_string());
                args.extend(values.iter().map(|v| v.to_string()));
            }
        }
        i += 1 + values.len();
    }
    assert!(args.iter().any(|a| a == "--maxmemory"), "the rendered memory settings: {rendered:?}");
    args
}

/// redis-stack 7.4 with the store's users and its rendered memory settings.
fn start_native(users: &Users) -> RedisServer {
    let args = rendered_args(users);
    RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn config(admin: &mut MultiplexedConnection, name: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(admin).await.unwrap();
    v.get(1).cloned().unwrap_or_default()
}

async fn info_field(conn: &mut MultiplexedConnection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_string()
}

/// The Redis process' peak resident memory (VmHWM), what a container's memory limit is checked against.
async fn peak_rss(admin: &mut MultiplexedConnection) -> u64 {
    let pid = info_field(admin, "server", "process_id").await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A sale in progress: `stock` units, three customers waiting, an order from each. Returns the orders' ids.
async fn sale_in_progress(admin: &mut MultiplexedConnection, stock: i64) -> Vec<String> {
    let _: () = cmd(admin, &["SET", "product", &stock.to_string()]).await;
    let mut orders = Vec::new();
    for n in 0..3 {
        let customer: String = cmd(admin, &["XADD", "queue:customers", "*", "id", &n.to_string()]).await;
        orders.push(cmd(admin, &["XADD", "queue:orders", "*", "id", &n.to_string(), "customer", &customer]).await);
    }
    orders
}

/// A busy loop that writes a key first: once it wrote, `SCRIPT KILL` cannot stop it (UNKILLABLE) and
/// Redis answers BUSY to everyone until it ends.
const BUSY_LOOP: &str = "redis.call('SET', KEYS[1], '1') while true do end";

// ---- the processor ----------------------------------------------------------------------------------

#[tokio::test]
async fn the_processor_cannot_raise_the_stock_empty_a_queue_or_run_code_of_its_own() {
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    let settings = ProcessingSettings::default();
    sale::load_scripts(&mut op, EngineKind::Native, &settings).await.unwrap();
    let orders = sale_in_progress(&mut op, 10).await;
    let mut p = users.conn(&server, Role::Processor).await;

    // The stock: never up, never set (DECRBY of a negative amount was the attack).
    for args in [
        &["DECRBY", "product", "-1000000"][..],
        &["DECRBY", "product", "1"],
        &["INCRBY", "product", "1000000"],
        &["INCR", "product"],
        &["INCRBYFLOAT", "product", "1e6"],
        &["SET", "product", "1000000"],
        &["GETSET", "product", "1000000"],
        &["SETRANGE", "product", "0", "9"],
        &["APPEND", "product", "0"],
        &["DEL", "product"],
        &["RENAME", "queue:orders", "product"],
        &["COPY", "queue:orders", "product", "REPLACE"],
    ] {
        refused_by_acl(&mut p, args).await;
    }
    // The queues: no emptying at once, no new orders or customers.
    for args in [
        &["XTRIM", "queue:orders", "MAXLEN", "0"][..],
        &["XTRIM", "queue:customers", "MINID", "99999999999999-0"],
        &["DEL", "queue:orders"],
        &["UNLINK", "queue:customers"],
        &["XADD", "queue:orders", "*", "id", "x", "customer", "1-1"],
        &["XADD", "queue:customers", "*", "id", "x"],
        &["XADD", "queue:orders", "MAXLEN", "0", "*", "id", "x"],
        &["XDEL", "queue:complete", "0-1"],
        &["XGROUP", "CREATE", "queue:orders", "g", "$"],
    ] {
        refused_by_acl(&mut p, args).await;
    }
    // No code of its own: nothing to load or run a busy loop with, nothing to kill one with.
    let busy_sha: String = cmd(&mut op, &["SCRIPT", "LOAD", BUSY_LOOP]).await;
    for args in [
        &["SCRIPT", "LOAD", BUSY_LOOP][..],
        &["EVAL", BUSY_LOOP, "1", "popup:ts:last"],
        &["EVAL_RO", "return 1", "0"],
        &["EVALSHA", &busy_sha, "1", "popup:ts:last"],
        &["EVALSHA_RO", &busy_sha, "0"],
        &["FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('evil', function() while true do end end)"],
        &["FUNCTION", "LOAD", "REPLACE", "#!lua name=popup\nredis.register_function('popup_decide', function() end)"],
        &["FUNCTION", "DELETE", "popup"],
        &["FUNCTION", "FLUSH"],
        &["FUNCTION", "RESTORE", "x"],
        &["FUNCTION", "KILL"],
        &["FUNCTION", "DUMP"],
        &["SCRIPT", "KILL"],
        &["SCRIPT", "FLUSH"],
        &["FCALL_RO", "popup_sample", "0"],
        &["TFUNCTION", "LOAD", "#!js api_version=1.0 name=evil\nredis.registerFunction('f', () => 1)"],
        &["TFCALL", "popup.x", "0"],
    ] {
        refused_by_acl(&mut p, args).await;
    }
    // The functions it may call are the operator's, and only those: a name of its choosing is not there.
    let e = refused(&mut p, &["FCALL", "evil", "0"]).await;
    assert!(e.contains("Function not found"), "{e}");
    // Redis answers everyone: nothing above started a script.
    let pong: String = cmd(&mut op, &["PING"]).await;
    assert_eq!(pong, "PONG");
    assert_eq!(cmd::<String>(&mut op, &["GET", "product"]).await, "10", "the stock did not move");
    assert_eq!(read_sale(&mut op).await.unwrap().orders_queued, 3, "every order still waits");

    // What remains (docs/security.md, "Redis users"): whatever its functions write, it may write itself.
    // Take one unit without selling it (the sale undersells, never oversells):
    let left: i64 = cmd(&mut p, &["DECR", "product"]).await;
    assert_eq!(left, 9);
    // record a decision for an order (a completion or rejection that is not the engine's):
    let _: String = cmd(&mut p, &["XADD", "queue:complete", "*", "order", &orders[0], "customer", "0-1"]).await;
    // delete a waiting order or customer it names (it may read them; the customer gets no answer):
    let deleted: i64 = cmd(&mut p, &["XDEL", "queue:orders", &orders[0]]).await;
    assert_eq!(deleted, 1);
    // and call the operator's functions with keys of its choosing among its own: they run as it, so
    // they can do no more than the commands above (here: the orders left are decided by the rules).
    let decided: Vec<i64> = cmd(
        &mut p,
        &[
            "FCALL",
            "popup_decide",
            "5",
            "product",
            "queue:customers",
            "queue:orders",
            "queue:complete",
            "queue:rejected",
            "100",
        ],
    )
    .await;
    assert_eq!(decided, [2, 0]);
    assert_eq!(cmd::<String>(&mut op, &["GET", "product"]).await, "7");
}

/// One permission more than its code uses fails this test; one fewer fails the sale (the ACL log).
#[tokio::test]
async fn the_processor_uses_every_permission_it_has_and_no_other() {
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    sale::load_scripts(&mut op, EngineKind::Native, &ProcessingSettings::default()).await.unwrap();
    let admin_addr = client_addr(&mut op).await;
    // Everything Redis runs, inner commands of functions included ("[0 lua]").
    let (info, _) =
        sale::connection_info(&users.url(&server, Role::Operator), Some(&users.password(Role::Operator))).unwrap();
    let monitor = redis::Client::open(info).unwrap().get_async_monitor().await.unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collector = {
        let lines = lines.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = monitor.into_on_message::<String>();
            while let Some(line) = stream.next().await {
                lines.lock().unwrap().push(line);
            }
        })
    };
    // Orders of every kind: sold, sold out, a duplicate, one from a customer who never came.
    let _: () = cmd(&mut op, &["SET", "product", "2"]).await;
    let mut customers: Vec<String> = Vec::new();
    for n in 0..3 {
        customers.push(cmd(&mut op, &["XADD", "queue:customers", "*", "id", &n.to_string()]).await);
    }
    for (n, c) in customers.iter().chain([&customers[0], &"99999999999999-0".to_string()]).enumerate() {
        let _: String = cmd(&mut op, &["XADD", "queue:orders", "*", "id", &n.to_string(), "customer", c]).await;
    }
    // The processor pod's command, as its user.
    let log = std::fs::File::create(server.dir.join("processor.log")).unwrap();
    let mut processor = ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_popup-operator"))
            .args(["process", "--batch-size", "3", "--metrics-interval-seconds", "0.2", "--consumer", "p0"])
            .args(["--redis", &users.url(&server, Role::Processor)])
            .env("REDIS_PASSWORD", users.password(Role::Processor))
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    wait_until(&mut op, "every order decided and a sample written", |s| {
        s.orders_queued == 0 && s.completed == 2 && s.rejected == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A failure, which the processor records: a results queue that is not a stream.
    let _: () = cmd(&mut op, &["SET", "queue:rejected", "not a stream"]).await;
    let _: String = cmd(&mut op, &["XADD", "queue:orders", "*", "id", "9", "customer", &customers[2]]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cmd::<Option<String>>(&mut op, &["GET", "popup:engine:error"]).await.is_none() {
        assert!(Instant::now() < deadline, "the processor recorded no failure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: it deletes its heartbeat.
    assert!(Command::new("kill").args(["-TERM", &processor.pid().to_string()]).status().unwrap().success());
    let exit = processor.0.take().unwrap().wait().unwrap();
    assert!(exit.success(), "process: {exit:?}");
    assert_eq!(acl_log(&mut op).await, Vec::<(String, String, String)>::new(), "a permission is missing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    collector.abort();

    // What the processor ran: every line but the operator's own.
    let text = lines.lock().unwrap().join("\n");
    let used: Vec<(String, Vec<String>)> = text
        .lines()
        .filter_map(parse_monitor_line)
        .filter(|(client, _)| client != &admin_addr)
        .map(|(_, words)| command_and_keys(&words))
        .collect();
    assert!(used.iter().any(|(c, _)| c == "fcall"), "no FCALL seen:\n{text}");
    let unused = unused_permissions(acl::Role::Processor.rules(Engine::Native), &used);
    // MONITOR does not show admin commands; MODULE LIST runs at start (`process` checks RedisTimeSeries),
    // and the empty ACL log above shows it was allowed and needed no more.
    let unused: Vec<String> = unused.into_iter().filter(|u| u != "+module|list").collect();
    assert!(unused.is_empty(), "popup-processor has permissions its code never uses: {unused:?}");
}

async fn client_addr(conn: &mut MultiplexedConnection) -> String {
    let info: String = cmd(conn, &["CLIENT", "INFO"]).await;
    info.split_whitespace().find_map(|kv| kv.strip_prefix("addr=")).unwrap().to_string()
}

async fn wait_until(conn: &mut MultiplexedConnection, what: &str, done: impl Fn(&sale::SaleSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = read_sale(conn).await.unwrap();
        if done(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `1700000000.123456 [0 127.0.0.1:5555] "XADD" "k" …` → (client, words); `lua` for a script's commands.
fn parse_monitor_line(line: &str) -> Option<(String, Vec<String>)> {
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    let client = line[open + 1..close].split_whitespace().nth(1)?.to_string();
    let mut words = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next()? {
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        word.push(u8::from_str_radix(&hex, 16).ok()? as char);
                    }
                    'n' => word.push('\n'),
                    'r' => word.push('\r'),
                    't' => word.push('\t'),
                    other => word.push(other),
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
    (!words.is_empty()).then_some((client, words))
}

/// The ACL name of a command (`xinfo|stream` for a subcommand) and the keys it names.
fn command_and_keys(words: &[String]) -> (String, Vec<String>) {
    let name = words[0].to_lowercase();
    let args = &words[1..];
    let with_sub = |n: &str| format!("{n}|{}", args.first().map(|s| s.to_lowercase()).unwrap_or_default());
    match name.as_str() {
        "ping" | "time" => (name, vec![]),
        "client" | "module" => (with_sub(&name), vec![]),
        "xinfo" => (with_sub(&name), args.get(1).cloned().into_iter().collect()),
        "del" | "exists" => (name, args.to_vec()),
        "xread" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case("streams")).unwrap() + 1;
            let n = (args.len() - at) / 2;
            (name, args[at..at + n].to_vec())
        }
        "fcall" => {
            let n: usize = args[1].parse().unwrap();
            (name, args[2..2 + n].to_vec())
        }
        _ => (name, args.first().cloned().into_iter().collect()),
    }
}

fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

/// Every `+command` and `~pattern` of `rules` (root and each selector) that no command of `used` needed.
fn unused_permissions(rules: &[&str], used: &[(String, Vec<String>)]) -> Vec<String> {
    let mut scopes: Vec<(Vec<String>, Vec<String>, &str)> = Vec::new(); // (patterns, commands, scope)
    let (mut root_keys, mut root_cmds) = (Vec::new(), Vec::new());
    for rule in rules {
        if let Some(inner) = rule.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            let words: Vec<String> = inner.split(' ').map(str::to_string).collect();
            let keys = words.iter().filter_map(|w| w.strip_prefix('~')).map(str::to_string).collect();
            let cmds = words.iter().filter_map(|w| w.strip_prefix('+')).map(str::to_string).collect();
            scopes.push((keys, cmds, rule));
        } else if let Some(k) = rule.strip_prefix('~') {
            root_keys.push(k.to_string());
        } else if let Some(c) = rule.strip_prefix('+') {
            root_cmds.push(c.to_string());
        }
    }
    scopes.insert(0, (root_keys, root_cmds, "root"));
    let mut unused = Vec::new();
    for (keys, cmds, scope) in &scopes {
        // A use in this scope: the command is granted here and, if it names keys, all match a pattern here.
        let in_scope = |(c, ks): &&(String, Vec<String>)| {
            cmds.contains(c) && ks.iter().all(|k| keys.iter().any(|p| matches(p, k)))
        };
        for c in cmds {
            if !used.iter().filter(in_scope).any(|(u, _)| u == c) {
                unused.push(if *scope == "root" { format!("+{c}") } else { format!("+{c} in {scope}") });
            }
        }
        for p in keys {
            if !used.iter().filter(in_scope).any(|(_, ks)| ks.iter().any(|k| matches(p, k))) {
                unused.push(if *scope == "root" { format!("~{p}") } else { format!("~{p} in {scope}") });
            }
        }
    }
    unused
}

#[test]
fn the_permission_check_sees_a_permission_too_many() {
    let used = vec![
        ("get".to_string(), vec!["product".to_string()]),
        ("decr".to_string(), vec!["product".to_string()]),
        ("fcall".to_string(), vec!["product".to_string(), "queue:orders".to_string()]),
    ];
    let rules = ["~product", "~queue:*", "+get", "+fcall", "(~product +decr)"];
    assert_eq!(unused_permissions(&rules, &used), Vec::<String>::new());
    let more = ["~product", "~queue:*", "~ts:*", "+get", "+fcall", "+set", "(~product ~x +decr +decrby)"];
    assert_eq!(
        unused_permissions(&more, &used),
        ["+set", "~ts:*", "+decrby in (~product ~x +decr +decrby)", "~x in (~product ~x +decr +decrby)"]
    );
    let words = parse_monitor_line(r#"1.5 [0 lua] "XINFO" "STREAM" "queue:customers""#).unwrap();
    assert_eq!(command_and_keys(&words.1), ("xinfo|stream".to_string(), vec!["queue:customers".to_string()]));
    let words = parse_monitor_line(r#"1.5 [0 127.0.0.1:1] "SET" "a\"b" "\xff""#).unwrap();
    assert_eq!(words, ("127.0.0.1:1".to_string(), vec!["SET".into(), "a\"b".into(), "\u{ff}".into()]));
}

/// The users' rules, exactly: a permission added or dropped here has to be added or dropped on purpose.
#[test]
fn every_users_rules_are_exactly_these() {
    assert_eq!(
        Role::Grafana.rules(Engine::Native),
        ["resetkeys", "~product", "~queue:*", "~ts:*", "resetchannels", "-@all", "+ping", "+get", "+xlen", "+ts.range"]
    );
    assert_eq!(
        Role::Processor.rules(Engine::Native).join(" "),
        "resetkeys ~product ~queue:* ~ts:* ~popup:ts:* resetchannels -@all +ping +client|setinfo +module|list +fcall \
         +time +xread +type +exists +get +xrange +xinfo|stream +xlen clearselectors (~product +decr) \
         (~queue:complete ~queue:rejected +xadd) (~queue:orders ~queue:customers +xdel) (~ts:* +ts.add) \
         (~popup:engine:error ~popup:ts:last +set) (~popup:worker:* +set +del) (~popup:ts:added +hget +hset)"
    );
    assert_eq!(
        Role::Simulator.rules(Engine::Native).join(" "),
        "resetkeys %R~product %R~queue:complete %R~queue:rejected %R~popup:sale:* ~queue:customers ~queue:orders \
         ~popup:simulator:* resetchannels -@all +ping +client|setinfo +get +xlen +exists +fcall +xadd +hget +hset +hdel"
    );
    assert_eq!(
        Role::Simulator.rules(Engine::Gears).join(" "),
        "resetkeys ~product ~queue:* ~popup:sale:* ~popup:simulator:* resetchannels -@all +ping +client|setinfo \
         +get +xlen +exists +evalsha +xadd +hget +hset +hdel",
        "Redis 6.2: no read-only key permissions, no FCALL"
    );
}

// ---- no user without a password ----------------------------------------------------------------------

#[tokio::test]
async fn no_user_logs_in_without_its_password_and_the_probes_need_none() {
    for engine in [Engine::Native, Engine::Triggers, Engine::Gears] {
        let users = Users::new(engine);
        let file = acl::acl_file(&users.store, &users.creds);
        assert!(!file.contains("nopass") && !file.contains(" >"), "{engine}: {file}");
        assert!(!file.contains("popup-probe"), "{engine}: {file}");
    }
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut anonymous = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // The attack: log in as the nopass probe user with any password, then lift the limits Redis puts on
    // unauthenticated clients.
    let e = refused(&mut anonymous, &["AUTH", "popup-probe", "x"]).await;
    assert!(e.contains("WRONGPASS"), "{e}");
    for role in [Role::Grafana, Role::Simulator, Role::Processor, Role::Operator, Role::Admin] {
        let e = refused(&mut anonymous, &["AUTH", role.user(), "x"]).await;
        assert!(e.contains("WRONGPASS"), "{}: {e}", role.user());
    }
    let e = refused(&mut anonymous, &["PING"]).await;
    assert!(e.contains("NOAUTH"), "{e}");
    // The rendered probe command, as the kubelet runs it in the pod (no password anywhere).
    let probe = render::redis::PROBE_COMMAND.replace("-p 6379", &format!("-p {}", server.port));
    let path = format!("{}:{}", find_server().parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let run = |cmd: &str| {
        Command::new("sh").args(["-c", cmd]).env("PATH", &path).env_remove("REDISCLI_AUTH").status().unwrap().success()
    };
    assert!(run(&probe), "the probe takes NOAUTH as up");
    let closed = render::redis::PROBE_COMMAND.replace("-p 6379", &format!("-p {}", redis_server::free_port()));
    assert!(!run(&closed), "nothing listening fails the probe");
    if redis_server::redisgears1().is_some() {
        let users = Users::new(Engine::Gears);
        let args = rendered_args(&users);
        let gears = RedisServer::start_gears1(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let root = redis_server::redisgears1().unwrap();
        let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let probe = render::redis::PROBE_COMMAND.replace("-p 6379", &format!("-p {}", gears.port));
        let ok = Command::new("sh").args(["-c", &probe]).env("PATH", &path).status().unwrap().success();
        assert!(ok, "Redis 6.2's redis-cli and NOAUTH too");
    }
}

// ---- memory -------------------------------------------------------------------------------------------

/// What one flooding client got: an error Redis wrote, or the connection closed under it.
#[derive(Debug)]
struct FloodOutcome {
    sent_mib: u64,
    closed: bool,
    reply: String,
}

/// `requests` × `PING <bulk bytes>` on a fresh connection (after `AUTH user password` when given),
/// never reading until it stops: Redis closed the connection, or everything was sent.
fn flood(port: u16, auth: Option<(String, String)>, bulk: usize, requests: usize) -> FloodOutcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    if let Some((user, password)) = auth {
        let auth = format!("*3\r\n$4\r\nAUTH\r\n${}\r\n{user}\r\n${}\r\n{password}\r\n", user.len(), password.len());
        s.write_all(auth.as_bytes()).unwrap();
    }
    let header = format!("*2\r\n$4\r\nPING\r\n${bulk}\r\n");
    let chunk = vec![b'x'; MIB as usize];
    let mut sent: u64 = 0;
    let mut closed = false;
    'all: for _ in 0..requests {
        let mut parts: Vec<&[u8]> = vec![header.as_bytes()];
        let mut left = bulk;
        while left > 0 {
            let n = left.min(chunk.len());
            parts.push(&chunk[..n]);
            left -= n;
        }
        parts.push(b"\r\n");
        for p in parts {
            if s.write_all(p).is_err() {
                closed = true;
                break 'all;
            }
            sent += p.len() as u64;
        }
    }
    // What Redis answered first (an error, or the start of a reply), then whether it is closed.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 256];
    let reply = match s.read(&mut buf) {
        Ok(0) => {
            closed = true;
            String::new()
        }
        Ok(n) => String::from_utf8_lossy(&buf[..n.min(120)]).into_owned(),
        Err(_) => {
            closed = true;
            String::new()
        }
    };
    FloodOutcome { sent_mib: sent / MIB, closed, reply }
}

#[tokio::test]
async fn a_flood_of_big_requests_gets_errors_and_memory_stays_bounded() {
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    sale_in_progress(&mut op, 10).await;
    let maxmemory: u64 = config(&mut op, "maxmemory").await.parse().unwrap();
    assert_eq!(maxmemory, 512 * MIB * 7 / 10, "70% of the default 512Mi limit");
    assert_eq!(config(&mut op, "maxmemory-policy").await, "noeviction");
    let before = peak_rss(&mut op).await;
    let grafana = Some((Role::Grafana.user().to_string(), users.password(Role::Grafana)));

    // The attack: three clients sending 50 MB PINGs, not reading (PING is all Grafana's user needs, and
    // what the old probe user had). Each bulk is over proto-max-bulk-len: refused as it arrives.
    let port = server.port;
    let big: Vec<_> = (0..3)
        .map(|_| {
            let auth = grafana.clone();
            std::thread::spawn(move || flood(port, auth, 50 * MIB as usize, 4))
        })
        .collect();
    for t in big {
        let o = t.join().unwrap();
        assert!(o.closed, "{o:?}");
        assert!(o.reply.is_empty() || o.reply.contains("invalid bulk length"), "{o:?}");
        assert!(o.sent_mib < 50, "Redis stopped taking it long before one request: {o:?}");
        eprintln!("50 MB PINGs: {o:?}");
    }
    // Under the bulk limit: 4 MB PINGs whose replies are never read. The output buffer limit disconnects
    // each client; the anonymous one is refused at once (Redis' own limit before AUTH).
    let small: Vec<_> = (0..3)
        .map(|i| {
            let auth = if i < 2 { grafana.clone() } else { None };
            std::thread::spawn(move || flood(port, auth, 4 * MIB as usize, 40))
        })
        .collect();
    for t in small {
        let o = t.join().unwrap();
        assert!(o.closed, "still connected after {} MiB of unread replies: {o:?}", o.sent_mib);
        assert!(o.sent_mib < 160, "{o:?}");
        eprintln!("4 MB PINGs: {o:?}");
    }
    let peak_used: u64 = info_field(&mut op, "memory", "used_memory_peak").await.parse().unwrap();
    let peak = peak_rss(&mut op).await;
    eprintln!(
        "memory: peak RSS {} MiB (before the flood {} MiB), used_memory_peak {} MiB, maxmemory {} MiB, limit 512 MiB",
        peak / MIB,
        before / MIB,
        peak_used / MIB,
        maxmemory / MIB
    );
    assert!(peak < 512 * MIB, "the container would be killed: peak RSS {} MiB", peak / MIB);
    assert!(peak_used < maxmemory, "used_memory_peak {peak_used}");
    let pong: String = cmd(&mut op, &["PING"]).await;
    assert_eq!(pong, "PONG");
    let s = read_sale(&mut op).await.unwrap();
    assert_eq!((s.product, s.customers_waiting, s.orders_queued), (Some(10), 3, 3), "the sale is intact");
}

#[tokio::test]
async fn a_data_flood_gets_oom_errors_and_no_key_is_evicted() {
    // A small container, so that filling it is quick: maxmemory is 70% of 64Mi.
    let users = Users::with_store(store(Engine::Native, |s| {
        s["redis"] = serde_json::json!({"resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}});
    }));
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    sale_in_progress(&mut op, 10).await;
    let maxmemory: u64 = config(&mut op, "maxmemory").await.parse().unwrap();
    assert_eq!(maxmemory, 64 * MIB * 7 / 10);
    // As a component that may add to the queues (the simulator): 512 KiB entries until Redis refuses.
    let mut s = users.conn(&server, Role::Simulator).await;
    let value = "x".repeat(512 * 1024);
    let mut added = 0;
    let refusal = loop {
        let r: redis::RedisResult<String> =
            redis::cmd("XADD").arg("queue:customers").arg("*").arg("id").arg(&value).query_async(&mut s).await;
        match r {
            Ok(_) => added += 1,
            Err(e) => break e.to_string(),
        }
        assert!(added < 1000, "Redis took {added} × 512 KiB past a maxmemory of {maxmemory}");
    };
    eprintln!("data flood: {added} × 512 KiB taken, then: {refusal}");
    assert!(refusal.contains("OOM"), "{refusal}");
    assert_eq!(info_field(&mut op, "stats", "evicted_keys").await, "0");
    assert_eq!(cmd::<String>(&mut op, &["GET", "product"]).await, "10", "the stock is kept");
    let waiting: u64 = cmd(&mut op, &["XLEN", "queue:orders"]).await;
    assert_eq!(waiting, 3, "the orders are kept");
}

// ---- Grafana's user ---------------------------------------------------------------------------------------

#[tokio::test]
async fn grafanas_user_can_ask_for_a_row_per_millisecond_so_anonymous_viewers_are_opt_in() {
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    let t0: u64 = 1_700_000_000_000;
    let span: u64 = 180_000;
    for t in [t0, t0 + span] {
        let _: Value = cmd(&mut op, &["TS.ADD", "ts:len:queue:orders", &t.to_string(), "1"]).await;
    }
    // As the datasource plugin sends a custom command: ACLs cannot refuse an argument (a command's
    // arguments are not part of any rule), so the bucket of 1 ms with EMPTY is allowed.
    let mut g = grafana_conn(&users, &server).await;
    let rows: Vec<Value> =
        cmd(&mut g, &["TS.RANGE", "ts:len:queue:orders", "-", "+", "AGGREGATION", "avg", "1", "EMPTY"]).await;
    let blocked = redis_usec(&mut op, "ts.range").await;
    eprintln!(
        "TS.RANGE of a {} s series, bucket 1 ms, EMPTY: {} rows, Redis busy {} ms (redis-stack 7.4)",
        span / 1000,
        rows.len(),
        blocked / 1000
    );
    assert_eq!(rows.len() as u64, span + 1, "one row per millisecond of the span");
    // The reply fits the output buffer limit (32 MiB of a 512Mi container) here; a day-long series would
    // be ~480 times as many rows: the managed Grafana lets nobody send queries without logging in.
    let children = render::build_children(
        &users.store,
        &BuildInputs {
            redis_password: Some(ADMIN_PASSWORD.into()),
            grafana_admin_password: "g".into(),
            credentials: users.creds.clone(),
            operator_image: "x".into(),
            operator_pods: None,
            scripts: BTreeMap::new(),
        },
    );
    let grafana = children.deployments.iter().find(|d| d.metadata.name.as_deref() == Some("shop-grafana")).unwrap();
    let env = grafana.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    let anonymous = env.iter().find(|e| e.name == "GF_AUTH_ANONYMOUS_ENABLED").unwrap();
    assert_eq!(anonymous.value.as_deref(), Some("false"), "anonymous Viewers only with spec.grafana.anonymousViewers");
    // Everything but its four commands is still refused.
    for args in [
        &["TS.CREATE", "ts:x"][..],
        &["TS.DEL", "ts:len:queue:orders", "-", "+"],
        &["TS.MRANGE", "-", "+", "FILTER", "a=b"],
        &["SET", "product", "1"],
    ] {
        refused_by_acl(&mut g, args).await;
    }

    // On Redis 6.2 with RedisTimeSeries 1.4 (the gears engine) EMPTY is ignored: a row per sample only.
    if redis_server::redisgears1().is_some() {
        let users = Users::new(Engine::Gears);
        let args = rendered_args(&users);
        let gears = RedisServer::start_gears1(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut op = users.conn(&gears, Role::Operator).await;
        for t in [t0, t0 + span] {
            let _: Value = cmd(&mut op, &["TS.ADD", "ts:len:queue:orders", &t.to_string(), "1"]).await;
        }
        let mut g = grafana_conn(&users, &gears).await;
        let rows: Vec<Value> =
            cmd(&mut g, &["TS.RANGE", "ts:len:queue:orders", "-", "+", "AGGREGATION", "avg", "1", "EMPTY"]).await;
        eprintln!("the same on Redis 6.2 + RedisTimeSeries 1.4: {} rows", rows.len());
        assert_eq!(rows.len(), 2);
        // Redis 6.2 took the rendered memory settings too.
        assert_eq!(config(&mut op, "maxmemory-policy").await, "noeviction");
        let limit = config(&mut op, "client-output-buffer-limit").await;
        assert!(limit.starts_with("normal 33554432 16777216 10"), "{limit}");
    }
}

/// Logged in as Grafana's user, with time for a long reply.
async fn grafana_conn(users: &Users, server: &RedisServer) -> MultiplexedConnection {
    let (info, _) =
        sale::connection_info(&users.url(server, Role::Grafana), Some(&users.password(Role::Grafana))).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    redis::Client::open(info).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

/// Microseconds Redis spent in `command` so far (`INFO commandstats`).
async fn redis_usec(admin: &mut MultiplexedConnection, command: &str) -> u64 {
    let stats = info_field(admin, "commandstats", &format!("cmdstat_{command}")).await;
    stats.split(',').find_map(|kv| kv.strip_prefix("usec=")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

// ---- the mechanism: the operator loads, components call ------------------------------------------------

/// `sale::functions` on Redis 7 (a Functions library) and on Redis 6.2 (the script cache, when the
/// RedisGears 1 runtime is given): loaded once, already there the second time, back after a flush; a
/// caller gets the script's reply, or `ScriptMissing` before it is loaded.
#[tokio::test]
async fn the_operators_scripts_are_functions_on_redis_7_and_cached_scripts_on_6_2() {
    use popup_operator::sale::functions::{self, Caller, ServerScript};
    use popup_operator::sale::{EngineError, LoadOutcome};
    const ECHO: ServerScript = ServerScript { name: "popup_test_echo", body: "return KEYS[1] .. ':' .. ARGV[1]" };
    let mut servers = vec![RedisServer::start()];
    if redis_server::redisgears1().is_some() {
        servers.push(RedisServer::start_gears1(&[]));
    }
    for server in &servers {
        let mut op = server.conn().await;
        let caller = Caller::new();
        let missing = caller.call::<String, _>(&mut op, &ECHO, &["k"], &["a"]).await.unwrap_err();
        assert!(matches!(missing, EngineError::ScriptMissing { name: "popup_test_echo", .. }), "{missing:?}");
        assert_eq!(functions::ensure(&mut op, &[ECHO]).await.unwrap(), LoadOutcome::Loaded);
        assert_eq!(functions::ensure(&mut op, &[ECHO]).await.unwrap(), LoadOutcome::AlreadyLoaded);
        let reply: String = caller.call(&mut op, &ECHO, &["k"], &["a"]).await.unwrap();
        assert_eq!(reply, "k:a", "gears1: {}", server.is_gears1());
        // A fresh caller finds the way again (FCALL, or EVALSHA once FCALL is unknown).
        let reply: String = Caller::new().call(&mut op, &ECHO, &["k"], &[7]).await.unwrap();
        assert_eq!(reply, "k:7");
        let flush: &[&str] = if server.is_gears1() { &["SCRIPT", "FLUSH"] } else { &["FUNCTION", "FLUSH"] };
        let _: () = cmd(&mut op, flush).await;
        let gone = caller.call::<String, _>(&mut op, &ECHO, &["k"], &["a"]).await.unwrap_err();
        assert!(matches!(gone, EngineError::ScriptMissing { .. }), "{gone:?}");
        assert_eq!(functions::ensure(&mut op, &[ECHO]).await.unwrap(), LoadOutcome::Loaded);
        let reply: String = caller.call(&mut op, &ECHO, &["k"], &["b"]).await.unwrap();
        assert_eq!(reply, "k:b");
    }
}

// ---- SIMULATOR USER ---------------------------------------------------------------------------------------
//
// The simulator's attacks go here once its send-batch script is the operator's (`sale::functions`):
// no SCRIPT LOAD / EVAL / FUNCTION, only FCALL (EVALSHA on Redis 6.2) of its script, what its
// `--reset` may still delete, and its exact rules in `every_users_rules_are_exactly_these`.

/// The simulator's send-batch script as the simulator calls it: batch `n`, one customer (id `n`), for the
/// sale whose key is `sale_key`.
async fn send_one_customer<T: redis::FromRedisValue>(s: &mut MultiplexedConnection, n: &str, sale_key: &str) -> T {
    let keys = ["queue:customers", "queue:orders", "popup:simulator:t"];
    functions::Caller::new().call(s, &functions::SEND_BATCH, &keys, &[n, "4", "0", n, "1", sale_key]).await.unwrap()
}

/// The simulator plays the crowd of the sale the operator started: it cannot load or run code of its
/// own, only the operator's send-batch script, and none of the cheats found against its earlier rules
/// works (the rest of its refusals: `tests/redis_acl.rs`).
#[tokio::test]
async fn the_simulator_runs_only_the_operators_script_and_cannot_restock() {
    let users = Users::new(Engine::Native);
    let server = start_native(&users);
    let mut op = users.conn(&server, Role::Operator).await;
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(1) };
    sale::load_scripts(&mut op, EngineKind::Native, &settings).await.unwrap();
    sale::marker::start(&mut op, "attack", 10).await.unwrap();
    let mut s = users.conn(&server, Role::Simulator).await;
    let busy_sha: String = cmd(&mut op, &["SCRIPT", "LOAD", BUSY_LOOP]).await;
    for args in [
        &["SCRIPT", "LOAD", BUSY_LOOP][..],
        &["EVAL", BUSY_LOOP, "1", "popup:simulator:x"],
        &["EVALSHA", &busy_sha, "1", "popup:simulator:x"],
        &["FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('evil', function() while true do end end)"],
        &["FUNCTION", "DELETE", "popup"],
        &["SCRIPT", "KILL"],
        &["SET", "product", "1000"],
        &["DEL", "queue:customers"],
        &["XTRIM", "queue:customers", "MAXLEN", "0"],
        &["SET", "popup:ts:last", "9999999999999999"],
        &["HSET", "queue:complete", "a", "b"],
        &["XADD", "queue:complete", "*", "id", "1"],
        &["SET", "popup:sale:attack", "1000"],
        &["PEXPIRE", "product", "1"],
    ] {
        refused_by_acl(&mut s, args).await;
    }
    // Its own script, as the operator loaded it, writes a customer of the sale it joined.
    let reply: String = send_one_customer(&mut s, "1", "popup:sale:attack").await;
    assert_eq!(reply.split(' ').count(), 1, "{reply}");
    // Of another sale, nothing.
    let none: Option<String> = send_one_customer(&mut s, "2", "popup:sale:other").await;
    assert_eq!(none, None);
    assert_eq!(cmd::<String>(&mut op, &["GET", "product"]).await, "10", "the stock did not move");
    assert_eq!(cmd::<String>(&mut op, &["PING"]).await, "PONG");
}
