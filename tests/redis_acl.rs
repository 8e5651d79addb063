//! Each component's Redis user on a real redis-stack-server, exactly as the operator renders it
//! (`render::acl`, loaded with `--aclfile` as the Redis pod does). The processor and the simulator complete
//! sales logged in as themselves, run as the very commands their pods run, with no command refused on
//! the way (the ACL log stays empty), and each user is refused what it does not need, also from inside a
//! script. The processor runs only the functions the operator loaded (tests/redis_attacks.rs runs the
//! attacks on each user). The triggers library and the gears scripts (under the CPython shim) run in Redis as the user
//! who loaded them, the operator, so the simulator's user is all a sale needs there too.

pub mod support;
use support::{acl_users, poll, redis_server};

use std::process::{Command, Stdio};
use std::time::Duration;

use acl_users::{Users, acl_log, is_noperm, refused, refused_by_acl};
use popup_operator::crd::Engine;
use popup_operator::render::acl::Role;
use popup_operator::sale::marker;
use popup_operator::sale::{self, ProcessingSettings, read_sale};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_server::{ChildGuard, RedisServer};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_popup-operator")
}

/// `popup-operator <args>` logged in as `role`, the user name in the URL and the password in
/// `REDIS_PASSWORD`, as the component's pod runs it. Its stderr goes to `<server dir>/<name>.log`.
fn command(users: &Users, server: &RedisServer, role: Role, name: &str, args: &[&str]) -> Command {
    let log = std::fs::File::create(server.dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .args(["--redis", &users.url(server, role)])
        .env("REDIS_PASSWORD", users.password(role))
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(log);
    cmd
}

fn log_of(server: &RedisServer, name: &str) -> String {
    std::fs::read_to_string(server.dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// The operator starts the sale (as its own user), then the simulator Job's command joins it
/// (`simulate --join-sale`), waiting until every order is decided; its summary.
async fn simulate(
    users: &Users,
    server: &RedisServer,
    operator: &mut MultiplexedConnection,
    stock: u64,
    customers: u64,
) -> serde_json::Value {
    marker::start(operator, "acl-sale", stock as i64).await.unwrap();
    let customers = customers.to_string();
    let args = [
        "simulate",
        "--join-sale",
        "acl-sale",
        "--customers",
        &customers,
        "--max-arrival-millis",
        "2",
        "--max-order-delay-millis",
        "20",
        "--wait-complete",
        "60",
        "--json",
    ];
    let out = command(users, server, Role::Simulator, "simulator", &args).output().unwrap();
    assert!(out.status.success(), "simulate failed ({}):\n{}", out.status, log_of(server, "simulator"));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A store of `engine`: its Redis loading its users, and the engine's scripts loaded by the operator as its
/// own user (batches of 3, a sample every `metrics_interval`). The users, Redis and the operator's
/// connection.
async fn with_scripts_loaded(
    engine: Engine,
    metrics_interval: Duration,
) -> (Users, RedisServer, MultiplexedConnection) {
    let users = Users::new(engine);
    let server = users.start_server();
    let mut operator = users.conn(&server, Role::Operator).await;
    let settings = ProcessingSettings { batch_size: 3, metrics_interval };
    sale::load_scripts(&mut operator, engine, &settings).await.unwrap();
    (users, server, operator)
}

/// [`simulate`]: every customer processed, then the sale's exact end ([`assert_exact_end`]).
async fn sell_out(
    users: &Users,
    server: &RedisServer,
    operator: &mut MultiplexedConnection,
    stock: u64,
    customers: u64,
) {
    let summary = simulate(users, server, operator, stock, customers).await;
    assert_eq!(summary["allProcessed"], true, "{summary}");
    assert_exact_end(operator, stock, customers).await;
}

/// Every order decided, exactly: `stock` sold, the rest rejected, nobody waiting.
async fn assert_exact_end(admin: &mut MultiplexedConnection, stock: u64, customers: u64) {
    let sale = read_sale(admin).await.unwrap();
    assert_eq!(
        (sale.product, sale.completed, sale.rejected, sale.customers_waiting, sale.orders_queued),
        (Some(0), stock, customers - stock, 0, 0),
        "{sale:?}"
    );
}

/// Until `key` (a TimeSeries) has a sample.
async fn wait_for_samples(admin: &mut MultiplexedConnection, key: &str) {
    poll::wait(&format!("a sample in {key}"), Duration::from_secs(15), Duration::from_millis(100), async || {
        let r: redis::RedisResult<Vec<Value>> =
            redis::cmd("TS.RANGE").arg(key).arg("-").arg("+").query_async(admin).await;
        if r.as_ref().is_ok_and(|s| !s.is_empty()) { Ok(()) } else { Err(format!("{r:?}")) }
    })
    .await;
}

/// What no component user may do, whatever its job.
async fn refused_admin_commands(conn: &mut MultiplexedConnection) {
    for args in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "SET", "appendonly", "no"],
        &["EVAL", "return 1", "0"],
        &["SCRIPT", "FLUSH"],
        &["ACL", "LIST"],
        &["ACL", "SETUSER", "intruder", "on", ">x", "+@all", "~*"],
        &["KEYS", "*"],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "TYPE", "normal"],
        &["SHUTDOWN", "NOSAVE"],
        &["GET", "someone:else"],
        &["SET", "someone:else", "1"],
        &["DEL", "someone:else"],
    ] {
        refused_by_acl(conn, args).await;
    }
    // The engines' module commands: refused by the ACL where the module is loaded, unknown where not
    // (TFUNCTION on Redis 6.2 with RedisGears 1, RG.* on redis-stack).
    for args in [&["TFUNCTION", "LIST"][..], &["RG.PYEXECUTE", "GB().run()"], &["RG.UNREGISTER", "x"]] {
        let e = refused(conn, args).await;
        assert!(is_noperm(&e) || e.contains("unknown command"), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn the_processor_and_the_simulator_sell_out_as_themselves_and_are_refused_the_rest() {
    // What the operator does for a native store: check that RedisTimeSeries is there, load the processor's
    // functions.
    let (users, server, mut admin) = with_scripts_loaded(Engine::Native, Duration::from_millis(200)).await;

    // The processor pod's command, as the processor user.
    let args = ["process", "--batch-size", "3", "--metrics-interval-seconds", "0.2", "--consumer", "processor-0"];
    let processor = ChildGuard(Some(command(&users, &server, Role::Processor, "processor", &args).spawn().unwrap()));
    sell_out(&users, &server, &mut admin, 40, 60).await;
    wait_for_samples(&mut admin, "ts:len:queue:orders").await;
    wait_for_samples(&mut admin, "ts:enqueue:queue:complete").await;
    // SIGTERM: the worker removes its heartbeat and exits cleanly.
    let status = Command::new("kill").args(["-TERM", &processor.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let mut processor = processor;
    let exit = processor.0.take().unwrap().wait_with_output().unwrap();
    assert!(exit.status.success(), "process: {exit:?}\n{}", log_of(&server, "processor"));
    // Not one refusal on the way, not even of a command whose error the client ignores.
    assert_eq!(acl_log(&mut admin).await, Vec::<(String, String, String)>::new(), "{}", log_of(&server, "processor"));

    // The processor: no admin commands, no other keys, and each write only where it writes: it can take
    // stock and orders, add results and samples, not set the stock, forge orders or delete the sale.
    let mut p = users.conn(&server, Role::Processor).await;
    refused_admin_commands(&mut p).await;
    for args in [
        &["SET", "product", "1000000"][..],
        &["INCRBY", "product", "100"],
        &["DEL", "product"],
        &["DEL", "queue:complete"],
        &["XADD", "queue:orders", "*", "id", "1", "customer", "1-1"],
        &["XADD", "queue:customers", "*", "id", "1"],
        &["XDEL", "queue:complete", "0-1"],
        &["HSET", "queue:x", "a", "b"],
        &["SET", "ts:len:queue:orders", "1"],
        &["TS.CREATE", "ts:x"],
        &["SCAN", "0"],
    ] {
        refused_by_acl(&mut p, args).await;
    }
    // No code of its own (tests/redis_attacks.rs runs the attacks): only the operator's functions.
    for args in [
        &["SCRIPT", "LOAD", "return 1"][..],
        &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() return 1 end)"],
        &["FUNCTION", "DELETE", "popup"],
        &["DECRBY", "product", "-1000000"],
        &["XTRIM", "queue:orders", "MAXLEN", "0"],
    ] {
        refused_by_acl(&mut p, args).await;
    }

    // The simulator: no deciding of orders, no writing of results or metrics, and none of the ways to
    // cheat the sale found against its earlier rules (issue 19): the stock, a second unit for one
    // customer, a frozen dashboard, a stalled engine, the operator's marker.
    let mut s = users.conn(&server, Role::Simulator).await;
    refused_admin_commands(&mut s).await;
    for args in [
        &["SET", "product", "1000"][..],
        &["DEL", "queue:customers"],
        &["XADD", "queue:complete", "*", "id", "1", "customer", "1-1"],
        &["XADD", "queue:rejected", "*", "id", "1"],
        &["SET", "popup:ts:last", "9999999999999999"],
        &["HSET", "queue:complete", "a", "b"],
        &["HSET", "popup:sale", "id", "forged"],
        &["SET", "popup:sale:acl-sale", "1000"],
        &["PEXPIRE", "product", "1"],
        &["SCAN", "0"],
        &["DECR", "product"],
        &["DECRBY", "product", "1"],
        &["XDEL", "queue:orders", "0-1"],
        &["XTRIM", "queue:orders", "MAXLEN", "0"],
        &["XRANGE", "queue:orders", "-", "+"],
        &["XREAD", "STREAMS", "queue:orders", "0-0"],
        &["TS.ADD", "ts:len:queue:orders", "*", "1"],
        &["MODULE", "LIST"],
    ] {
        refused_by_acl(&mut s, args).await;
    }
    // No script of its own to try them from: it may only FCALL the operator's (tests/redis_attacks.rs).
    refused_by_acl(&mut s, &["SCRIPT", "LOAD", "return redis.call('SET', 'product', '1000')"]).await;
    refused_by_acl(&mut s, &["EVAL", "return redis.call('FLUSHALL')", "0"]).await;

    // Without logging in, nothing at all (what the probes see: NOAUTH); no user takes any password.
    let anonymous = sale::connect(&server.url(), None).await.map(|_| ()).unwrap_err().to_string();
    assert!(anonymous.contains("NOAUTH") || anonymous.contains("credentials"), "{anonymous}");
    // The sale is as it ended: none of the refused commands changed anything.
    assert_exact_end(&mut admin, 40, 60).await;
}

#[tokio::test]
async fn a_triggers_sale_needs_only_the_simulator_user() {
    let (users, server, mut admin) = with_scripts_loaded(Engine::Triggers, Duration::from_millis(500)).await;
    sell_out(&users, &server, &mut admin, 30, 45).await;
    wait_for_samples(&mut admin, "ts:enqueue:queue:customers").await;
    assert_eq!(acl_log(&mut admin).await, Vec::<(String, String, String)>::new());
    // The library runs as the user who loaded it, not as the simulator whose writes trigger it.
    let libs: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut admin).await.unwrap();
    assert!(format!("{libs:?}").contains("popup-operator"), "{libs:?}");
    let mut s = users.conn(&server, Role::Simulator).await;
    refused_by_acl(&mut s, &["TFUNCTION", "DELETE", "popup"]).await;
    refused_by_acl(&mut s, &["TFCALL", "popup.x", "0"]).await;
}

#[tokio::test]
async fn the_gears_scripts_need_only_the_simulator_user() {
    let users = Users::new(Engine::Gears);
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_millis(500) };
    // RedisGears 1 runs a registration as the user who registered it: the operator. On the real
    // runtime the operator's user loads the scripts as in a store; under the emulation the shim logs
    // in as that user.
    let (server, _shim) = match redis_server::redisgears1() {
        Some(_) => {
            let server = RedisServer::start_gears1(&["--aclfile", &users.write_acl_file()]);
            let mut operator = users.conn(&server, Role::Operator).await;
            sale::load_scripts(&mut operator, Engine::Gears, &settings).await.unwrap();
            (server, None)
        }
        None => {
            eprintln!("NOTE: the gears scripts ran on the CPython emulation only: POPUP_REDISGEARS1 is unset");
            let server = users.start_server();
            let operator_url = format!(
                "redis://{}:{}@127.0.0.1:{}",
                Role::Operator.user(),
                users.password(Role::Operator),
                server.port
            );
            let shim = redis_server::start_gears_shim_at(&server, &operator_url, &settings);
            (server, Some(shim))
        }
    };
    let mut admin = users.conn(&server, Role::Operator).await;
    sell_out(&users, &server, &mut admin, 25, 40).await;
    wait_for_samples(&mut admin, "ts:enqueue:queue:customers").await;
    assert_eq!(acl_log(&mut admin).await, Vec::<(String, String, String)>::new());
    let mut s = users.conn(&server, Role::Simulator).await;
    refused_admin_commands(&mut s).await;
}
