//! The cluster-wide installation (Helm chart with `watchNamespace` empty: ClusterRole + ClusterRoleBinding)
//! against a real control plane. A separate test binary, so it has a control plane of its own: an operator
//! watching every namespace would otherwise reconcile the stores of the namespaced tests in `e2e.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::ListParams;
use popup_operator::crd::PopUpStore;
use popup_operator::status;
use support::{FakeRedis, Operator};

#[tokio::test]
async fn a_cluster_wide_operator_reconciles_stores_in_every_namespace() {
    let system = support::env("popup-system").await;
    let id = support::install_chart_rbac(&system, "popup", None).await;
    let op = Operator::start(id.client.clone(), Arc::new(FakeRedis::default()), None);

    let stores = [support::env("team-a").await, support::env("team-b").await];
    for env in &stores {
        env.apply_yaml(&std::fs::read_to_string(support::root().join("examples/popup.yaml")).unwrap()).await;
    }
    for env in &stores {
        let sel = |c: &str| format!("app.kubernetes.io/instance=demo,app.kubernetes.io/component={c}");
        support::make_pods_ready(env, &sel("redis"), 1).await;
        support::make_pods_ready(env, &sel("grafana"), 1).await;
        let store = env
            .eventually("the store is Ready", Duration::from_secs(60), || async {
                let s = env.api::<PopUpStore>().get("demo").await.map_err(|e| e.to_string())?;
                match status::find(s.status.as_ref(), status::READY) {
                    Some(c) if c.status == "True" => Ok(s),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        let jobs = env.api::<Job>().list(&ListParams::default()).await.unwrap().items;
        assert_eq!(jobs.len(), 1, "one simulator Job in {}", env.ns);
        let owner = &jobs[0].owner_references()[0];
        assert_eq!(Some(&owner.uid), store.metadata.uid.as_ref());
    }
    let forbidden = support::forbidden_requests(system.cp, &id.username);
    assert!(forbidden.is_empty(), "the chart's ClusterRole lacks permissions:\n{}", forbidden.join("\n"));
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
}
