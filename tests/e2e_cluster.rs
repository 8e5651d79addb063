//! The cluster-wide installation (Helm chart with `watchNamespace` empty: ClusterRole + ClusterRoleBinding)
//! against a real control plane. A separate test binary, so it has a control plane of its own: an operator
//! watching every namespace would otherwise reconcile the stores of the namespaced tests in `e2e.rs`.

pub mod support;

use std::sync::Arc;

use support::cluster::Operator;
use support::fakes::FakeRedis;

#[tokio::test]
async fn a_cluster_wide_operator_reconciles_stores_in_every_namespace() {
    let system = support::cluster::env("popup-system").await;
    let id = support::cluster::install_chart_rbac(&system, "popup", None).await;
    let op = Operator::start(id.client.clone(), Arc::new(FakeRedis::default()), None);

    let stores = [support::cluster::env("team-a").await, support::cluster::env("team-b").await];
    for env in &stores {
        env.apply_yaml(&std::fs::read_to_string(support::cluster::root().join("examples/popup.yaml")).unwrap()).await;
    }
    for env in &stores {
        let store = support::store::bring_up(env, "demo", true).await;
        support::store::the_only_job(env, &store).await;
    }
    let forbidden = support::cluster::forbidden_requests(system.cp, &id.username);
    assert!(forbidden.is_empty(), "the chart's ClusterRole lacks permissions:\n{}", forbidden.join("\n"));
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
}
