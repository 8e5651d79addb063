//! The whole chain with no stand-in but the kubelet: a real control plane, the operator with the chart's
//! RBAC and its real Redis gateway, and a real redis-stack-server (the operator reaches it through the
//! documented `--redis-address` override). Scripts get loaded into that Redis, a sale runs through it,
//! and the store's status shows the sale's real numbers.

mod support;

#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use popup_operator::controller::redis::LiveRedis;
use popup_operator::crd::PopUpStore;
use popup_operator::simulator::{self, SimulatorConfig};
use popup_operator::status;
use redis::Value;
use redis_server::RedisServer;
use serde_json::json;
use support::Operator;

const PASSWORD: &str = "e2e-redis-password";
const WAIT: Duration = Duration::from_secs(60);

async fn condition(api: &Api<PopUpStore>, name: &str, type_: &str) -> Result<(String, String, String), String> {
    let s = api.get(name).await.map_err(|e| e.to_string())?;
    let c = status::find(s.status.as_ref(), type_).ok_or(format!("no {type_} yet"))?;
    Ok((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn libraries(server: &RedisServer) -> String {
    let (mut conn, _) = popup_operator::engine::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    let v: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut conn).await.unwrap();
    format!("{v:?}")
}

#[tokio::test]
async fn the_operator_loads_scripts_into_real_redis_and_reports_the_real_sale() {
    let mut server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let env = support::env("redis").await;
    let id = support::install_chart_rbac(&env, "popup", Some(&env.ns)).await;
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
    support::make_pods_ready(&env, "app.kubernetes.io/instance=shop,app.kubernetes.io/component=redis", 1).await;
    let (_, reason, message) = env
        .eventually("ScriptsLoaded=True", WAIT, || async {
            let c = condition(&stores, "shop", status::SCRIPTS_LOADED).await?;
            if c.0 == "True" { Ok(c) } else { Err(format!("{c:?}")) }
        })
        .await;
    assert_eq!(reason, "Loaded");
    assert!(message.contains("triggers scripts"), "{message}");
    assert!(libraries(&server).await.contains("popup"), "the library is in Redis");
    env.eventually("Ready=True", WAIT, || async {
        let c = condition(&stores, "shop", status::READY).await?;
        if c.0 == "True" { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .await;

    // The simulator Job cannot run without a kubelet: run the simulator here, as the Job would.
    let (mut conn, _) = popup_operator::engine::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    let config = SimulatorConfig {
        stock: 30,
        customers: 40,
        max_arrival: Duration::from_millis(3),
        max_order_delay: Duration::from_millis(10),
        reset: true,
        wait_complete: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let summary = simulator::run(&mut conn, &config, |_| {}).await.unwrap();
    assert!(summary.all_processed, "{summary:?}");

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
            popup_operator::engine::connect(&server.url(), Some(PASSWORD)).await.map_err(|e| e.to_string())?;
        let v: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut c).await.map_err(|e| e.to_string())?;
        if format!("{v:?}").contains("popup") { Ok(()) } else { Err("no library yet".to_string()) }
    })
    .await;

    assert!(support::forbidden_requests(env.cp, &id.username).is_empty(), "the chart's RBAC covers it all");
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
}
