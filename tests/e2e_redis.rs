//! The whole chain with no stand-in but the kubelet: a real control plane, the operator with the chart's
//! RBAC and its real Redis gateway, and a real redis-stack-server (the operator reaches it through the
//! documented `--redis-address` override). Scripts get loaded into that Redis, a sale runs through it,
//! and the store's status shows the sale's real numbers.

pub mod support;
use support::redis_server;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use popup_operator::controller::redis::LiveRedis;
use popup_operator::crd::PopUpStore;
use popup_operator::status::{self, reason};
use redis::Value;
use redis_server::{RedisServer, quick_sale, simulate};
use serde_json::json;
use support::cluster::Operator;

const PASSWORD: &str = "e2e-redis-password";
const WAIT: Duration = Duration::from_secs(60);

async fn condition(api: &Api<PopUpStore>, name: &str, type_: &str) -> Result<(String, String, String), String> {
    let s = api.get(name).await.map_err(|e| e.to_string())?;
    let c = status::find(s.status.as_ref(), type_).ok_or(format!("no {type_} yet"))?;
    Ok((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn libraries(server: &RedisServer) -> String {
    let (mut conn, _) = popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    let v: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut conn).await.unwrap();
    format!("{v:?}")
}

#[tokio::test]
async fn the_operator_loads_scripts_into_real_redis_and_reports_the_real_sale() {
    let mut server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let env = support::cluster::env("redis").await;
    let id = support::cluster::install_chart_rbac(&env, "popup", Some(&env.ns)).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.api();
    let secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-pass"},
        "stringData": {"password": PASSWORD},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let op = Operator::start_with_redis_address(
        id.client.clone(),
        Arc::new(LiveRedis::default()),
        Some(env.ns.clone()),
        Some(format!("127.0.0.1:{}", server.port)),
    );
    let stores: Api<PopUpStore> = env.api();
    let store: PopUpStore = serde_json::from_value(json!({
        "apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore", "metadata": {"name": "shop"},
        "spec": {
            "engine": "triggers",
            "stock": 30,
            "redis": {"passwordSecretRef": {"name": "shop-pass"}},
            "processing": {"metricsIntervalSeconds": 1},
            "grafana": {"mode": "none"},
        },
    }))
    .unwrap();
    stores.create(&PostParams::default(), &store).await.unwrap();

    // Play kubelet for the Redis pod; the operator then loads the triggers library into the real Redis.
    support::cluster::make_pods_ready(&env, "app.kubernetes.io/instance=shop,app.kubernetes.io/component=redis", 1)
        .await;
    let (_, reason, message) = env
        .eventually("ScriptsLoaded=True", WAIT, || async {
            let c = condition(&stores, "shop", status::SCRIPTS_LOADED).await?;
            if c.0 == "True" { Ok(c) } else { Err(format!("{c:?}")) }
        })
        .await;
    assert_eq!(reason, reason::LOADED);
    assert!(message.contains("triggers scripts"), "{message}");
    assert!(libraries(&server).await.contains("popup"), "the library is in Redis");
    env.eventually("Ready=True", WAIT, || async {
        let c = condition(&stores, "shop", status::READY).await?;
        if c.0 == "True" { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .await;

    // The simulator Job cannot run without a kubelet: run the simulator here, as the Job would.
    let (mut conn, _) = popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    simulate(&mut conn, &quick_sale(30, 40)).await;

    // The status follows the real sale (the store is requeued every metrics interval while simulating).
    // Wait for the finished sale, every order decided: `completed` reaches 30 before the last
    // rejections land, so waiting on it alone would assert a state on the way.
    let sale = env
        .eventually("status.sale shows the finished sale", WAIT, || async {
            let s = stores.get("shop").await.map_err(|e| e.to_string())?;
            let sale = s.status.and_then(|st| st.sale).ok_or("no sale yet")?;
            if sale.completed + sale.rejected == 40 { Ok(sale) } else { Err(format!("{sale:?}")) }
        })
        .await;
    assert_eq!(
        (sale.completed, sale.rejected, sale.available, sale.customers_waiting, sale.orders_queued),
        (30, 10, Some(0), 0, 0)
    );

    // Redis restarts empty (no persistence here): the operator puts the scripts back by itself.
    server.restart();
    env.eventually("the library is reloaded after the restart", WAIT, || async {
        let (mut c, _) =
            popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.map_err(|e| e.to_string())?;
        let v: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut c).await.map_err(|e| e.to_string())?;
        if format!("{v:?}").contains("popup") { Ok(()) } else { Err("no library yet".to_string()) }
    })
    .await;

    assert!(support::cluster::forbidden_requests(env.cp, &id.username).is_empty(), "the chart's RBAC covers it all");
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
}

// ---- password rotation -----------------------------------------------------------------------------

use std::process::{Command, Stdio};
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use redis_server::ChildGuard;

/// A Secret's key, as a pod reading it would get it.
async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, String> {
    let s = secrets.get(name).await.map_err(|e| format!("{name}: {e}"))?;
    let v = s.data.and_then(|d| d.get(key).cloned()).ok_or(format!("{name} has no {key}"))?;
    String::from_utf8(v.0).map_err(|e| e.to_string())
}

async fn set_password(secrets: &Api<Secret>, name: &str, password: &str) {
    let patch = json!({"stringData": {"password": password}});
    secrets.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Whether `user` can log in with `password` on a new connection.
async fn logs_in(server: &RedisServer, user: &str, password: &str) -> bool {
    let url = if user == "default" { server.url() } else { server.url_as(user) };
    popup_operator::sale::connect(&url, Some(password)).await.is_ok()
}

/// `INFO server`'s run_id and uptime: a restarted Redis has a new run_id.
async fn run_id_and_uptime(conn: &mut redis::aio::MultiplexedConnection) -> (String, u64) {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.unwrap();
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    (field("run_id:"), field("uptime_in_seconds:").parse().unwrap())
}

/// `popup-operator <args>` logged in as `user` with `password`, as its pod would run it.
fn component(server: &RedisServer, user: &str, password: &str, log: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popup-operator"));
    cmd.args(args)
        .args(["--redis", &server.url_as(user)])
        .env("REDIS_PASSWORD", password)
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(server.dir.join(log)).unwrap());
    cmd
}

fn processor(server: &RedisServer, password: &str, name: &str) -> ChildGuard {
    let args = ["process", "--batch-size", "5", "--metrics-interval-seconds", "1", "--consumer", name];
    ChildGuard(Some(component(server, "popup-processor", password, &format!("{name}.log"), &args).spawn().unwrap()))
}

/// Every user's password changes mid-sale; Redis takes each without a restart, keeps the old one as long
/// as something may still use it, and the sale ends exactly.
#[tokio::test]
async fn passwords_rotate_mid_sale_without_a_redis_restart_and_the_sale_ends_exactly() {
    let env = support::cluster::env("rotate").await;
    let id = support::cluster::install_chart_rbac(&env, "popup", Some(&env.ns)).await;
    let secrets: Api<Secret> = env.api();
    let admin_secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-pass"},
        "stringData": {"password": "admin-one"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &admin_secret).await.unwrap();
    let port = redis_server::free_port();
    let op = Operator::start_with_redis_address(
        id.client.clone(),
        Arc::new(LiveRedis::default()),
        Some(env.ns.clone()),
        Some(format!("127.0.0.1:{port}")),
    );
    let stores: Api<PopUpStore> = env.api();
    let (stock, customers) = (300u64, 450u64);
    let store: PopUpStore = serde_json::from_value(json!({
        "apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore", "metadata": {"name": "shop"},
        "spec": {
            "engine": "native",
            "stock": stock,
            "redis": {"passwordSecretRef": {"name": "shop-pass"}},
            "processing": {"metricsIntervalSeconds": 1, "batchSize": 5},
            "simulator": {"customers": customers, "ratePerSecond": 30},
        },
    }))
    .unwrap();
    stores.create(&PostParams::default(), &store).await.unwrap();

    // Play kubelet for the Redis pod: the server loads the ACL file of the Secret the pod mounts.
    let acl_file = env
        .eventually("the ACL Secret", WAIT, || async { secret_value(&secrets, "shop-redis-acl", "users.acl").await })
        .await;
    let acl_path = std::env::temp_dir().join(format!("popup-rotate-{}-{port}.acl", std::process::id()));
    std::fs::write(&acl_path, &acl_file).unwrap();
    let server = RedisServer::start_on(port, &["--aclfile", acl_path.to_str().unwrap()]);
    for component in ["redis", "grafana", "processor"] {
        let selector = format!("app.kubernetes.io/instance=shop,app.kubernetes.io/component={component}");
        support::cluster::make_pods_ready(&env, &selector, 1).await;
    }
    env.eventually("Ready=True", WAIT, || async {
        let c = condition(&stores, "shop", status::READY).await?;
        if c.0 == "True" { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .await;
    let mut admin = server.conn_as(None, "admin-one").await;
    let (run_id, _) = run_id_and_uptime(&mut admin).await;
    let started = Instant::now();

    // The pods' passwords, as their env would have them.
    let password = |name: &'static str| {
        let secrets = secrets.clone();
        async move { secret_value(&secrets, name, "password").await.unwrap() }
    };
    let (processor_1, simulator_1, grafana_1) = (
        password("shop-redis-processor").await,
        password("shop-redis-simulator").await,
        password("shop-redis-grafana").await,
    );
    let mut first_processor = processor(&server, &processor_1, "processor-1");
    // The simulator Job's run, as its pod would run it (the test's kubelet does not run Jobs): it joins
    // the sale the operator started, whose stock the operator set.
    let sale_started =
        stores.get("shop").await.unwrap().status.and_then(|s| s.started_sale).expect("the sale was started");
    assert_eq!(sale_started.stock, stock as i64);
    let customers_arg = customers.to_string();
    let simulate_args = [
        "simulate",
        "--join-sale",
        &sale_started.id,
        "--customers",
        &customers_arg,
        "--rate",
        "30",
        "--max-order-delay-millis",
        "300",
        "--wait-complete",
        "60",
        "--json",
    ];
    let simulator =
        component(&server, "popup-simulator", &simulator_1, "simulator.log", &simulate_args).spawn().unwrap();
    // Grafana's datasource connection, made before the rotation.
    let mut grafana = server.conn_as(Some("popup-grafana"), &grafana_1).await;

    // Mid-sale: every password changes at once.
    env.eventually("the sale is under way", WAIT, || async {
        let sale = popup_operator::sale::read_sale(&mut admin.clone()).await.map_err(|e| e.to_string())?;
        if sale.decided() >= 30 { Ok(()) } else { Err(format!("{sale:?}")) }
    })
    .await;
    set_password(&secrets, "shop-redis-processor", "processor-two").await;
    set_password(&secrets, "shop-redis-simulator", "simulator-two").await;
    set_password(&secrets, "shop-redis-grafana", "grafana-two").await;
    set_password(&secrets, "shop-pass", "admin-two").await;
    env.eventually("Redis accepts every new password", WAIT, || async {
        for (user, new) in [
            ("popup-processor", "processor-two"),
            ("popup-simulator", "simulator-two"),
            ("popup-grafana", "grafana-two"),
            ("default", "admin-two"),
        ] {
            if !logs_in(&server, user, new).await {
                return Err(format!("{user} not yet"));
            }
        }
        Ok(())
    })
    .await;
    // The running simulator Job still uses the old password: it stays valid while the Job runs.
    assert!(logs_in(&server, "popup-simulator", &simulator_1).await, "the Job's password is still valid");
    // The processor Deployment rolls (the test's kubelet starts the new pod): a worker with the new
    // password takes over, the old one stops.
    let second_processor = processor(&server, "processor-two", "processor-2");
    Command::new("kill").args(["-TERM", &first_processor.pid().to_string()]).status().unwrap();
    let exit = first_processor.0.take().unwrap().wait_with_output().unwrap();
    assert!(exit.status.success(), "the old worker stops cleanly: {exit:?}");

    // The sale goes on to its exact end.
    let out = simulator.wait_with_output().unwrap();
    let log = std::fs::read_to_string(server.dir.join("simulator.log")).unwrap_or_default();
    assert!(out.status.success(), "simulate: {}\n{log}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["allProcessed"].as_bool(), summary["reconnects"].as_u64()), (Some(true), Some(0)), "{summary}");
    let sale = popup_operator::sale::read_sale(&mut admin).await.unwrap();
    assert_eq!(
        (sale.product, sale.completed, sale.rejected, sale.customers_waiting, sale.orders_queued),
        (Some(0), stock, customers - stock, 0, 0),
        "{sale:?}"
    );
    // Until its Job has finished, the simulator's old password stays; then it goes.
    assert!(logs_in(&server, "popup-simulator", &simulator_1).await);
    let job = stores.get("shop").await.unwrap().status.unwrap().simulator_job.unwrap();
    support::cluster::make_job_pods_succeed(&env, &job).await;
    env.eventually("every old password is refused", WAIT, || async {
        for (user, old) in [
            ("popup-processor", processor_1.as_str()),
            ("popup-simulator", simulator_1.as_str()),
            ("popup-grafana", grafana_1.as_str()),
            ("default", "admin-one"),
        ] {
            if logs_in(&server, user, old).await {
                return Err(format!("{user} still takes its old password"));
            }
        }
        Ok(())
    })
    .await;
    for (user, new) in [
        ("popup-processor", "processor-two"),
        ("popup-simulator", "simulator-two"),
        ("popup-grafana", "grafana-two"),
        ("default", "admin-two"),
    ] {
        assert!(logs_in(&server, user, new).await, "{user} takes its new password");
    }
    // Grafana's connection from before still reads (Redis does not drop logged-in clients), and Redis
    // never restarted.
    let _: Option<String> = redis::cmd("GET").arg("product").query_async(&mut grafana).await.unwrap();
    let mut admin = server.conn_as(None, "admin-two").await;
    let (run_id_now, uptime) = run_id_and_uptime(&mut admin).await;
    assert_eq!(run_id_now, run_id, "the same Redis process throughout");
    assert!(uptime + 1 >= started.elapsed().as_secs(), "uptime {uptime} s");
    drop(second_processor);

    // Settled: a change of the user's Secret is seen by the watch, not by the next poll (60 s away).
    env.eventually("the store is idle", WAIT, || async {
        let c = condition(&stores, "shop", status::SIMULATION_COMPLETE).await?;
        if c.0 == "True" { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let changed = Instant::now();
    set_password(&secrets, "shop-pass", "admin-three").await;
    env.eventually("the new admin password", Duration::from_secs(30), || async {
        if logs_in(&server, "default", "admin-three").await { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(8), "applied after {took:?}: a watch, not a poll");

    assert!(support::cluster::forbidden_requests(env.cp, &id.username).is_empty(), "the chart's RBAC covers it all");
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
    let _ = std::fs::remove_file(&acl_path);
}
