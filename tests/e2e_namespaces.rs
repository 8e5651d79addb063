//! The operator watching a list of namespaces (chart value `watchNamespaces`: a Role and RoleBinding in
//! each listed namespace, nothing cluster-wide) against a real control plane. A test binary of its own, so
//! no other operator shares its control plane.

pub mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ApiResource;
use popup_operator::controller::WatchScope;
use popup_operator::crd::PopUpStore;
use serde_json::Value;
use support::cluster::{Operator, TestEnv};
use support::fakes::FakeRedis;
use support::store::{Child, child_kinds, kind};

fn kinds_in(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["metadata"]["namespace"].as_str().unwrap_or("<cluster>").to_string())
        .collect()
}

/// `Kind/name` of each object of `kinds` carrying the instance label of the store `demo`.
async fn labelled(env: &TestEnv, kinds: &[ApiResource]) -> Vec<String> {
    support::store::children(env, "demo", kinds).await.iter().map(Child::id).collect()
}

#[tokio::test]
async fn an_operator_watching_a_list_of_namespaces_reconciles_them_and_leaves_the_rest_alone() {
    let system = support::cluster::env("popup-system").await;
    let watched = [support::cluster::env("team-a").await, support::cluster::env("team-b").await];
    let unwatched = support::cluster::env("team-c").await;
    let list = format!("watchNamespaces={{{},{}}}", watched[0].ns, watched[1].ns);

    // The chart: a Role and a RoleBinding in each listed namespace, nothing cluster-wide.
    let docs = support::cluster::helm_template_with("popup", &system.ns, std::slice::from_ref(&list));
    let listed = vec![watched[0].ns.clone(), watched[1].ns.clone()];
    assert_eq!(kinds_in(&docs, "Role"), listed);
    assert_eq!(kinds_in(&docs, "RoleBinding"), listed);
    assert!(kinds_in(&docs, "ClusterRole").is_empty() && kinds_in(&docs, "ClusterRoleBinding").is_empty());
    // The operator reads the chart's WATCH_NAMESPACE as the binary does.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("the operator's Deployment");
    let watch_env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WATCH_NAMESPACE")
        .and_then(|e| e["value"].as_str())
        .expect("WATCH_NAMESPACE")
        .to_string();
    let scope = WatchScope::from_flags(&[watch_env]).unwrap();
    assert_eq!(scope, WatchScope::Namespaces(listed.clone()));

    let id = support::cluster::install_chart_rbac_with(&system, "popup", &[list]).await;
    let op = Operator::start_in(id.client.clone(), Arc::new(FakeRedis::default()), scope);
    let example = std::fs::read_to_string(support::cluster::root().join("examples/popup.yaml")).unwrap();
    for env in watched.iter().chain([&unwatched]) {
        env.apply_yaml(&example).await;
    }

    for env in &watched {
        let store = support::store::bring_up(env, "demo", true).await;
        support::store::the_only_job(env, &store).await;
        let mut policies = labelled(env, &[kind::<NetworkPolicy>()]).await;
        policies.sort();
        assert_eq!(policies, ["NetworkPolicy/demo-grafana", "NetworkPolicy/demo-redis"], "{}", env.ns);
    }

    // The store nobody watches: by now its twins are Ready; it has no status and not one child.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left_alone = unwatched.api::<PopUpStore>().get("demo").await.unwrap();
    assert!(left_alone.status.is_none(), "{:?}", left_alone.status);
    let children = labelled(&unwatched, &child_kinds()).await;
    assert!(children.is_empty(), "the unwatched namespace got children: {children:?}");

    // From the API server's audit log: never refused, never outside the list, never cluster-wide (the
    // Roles could not allow that anyway; this shows the operator does not even try).
    let requests = support::cluster::audited_requests(system.cp, &id.username);
    let forbidden: Vec<String> = requests.iter().filter(|r| r.code == 403).map(ToString::to_string).collect();
    assert!(forbidden.is_empty(), "the chart's Roles lack permissions:\n{}", forbidden.join("\n"));
    let outside: Vec<String> =
        requests.iter().filter(|r| !listed.contains(&r.namespace)).map(ToString::to_string).collect();
    assert!(outside.is_empty(), "requests outside the watched namespaces:\n{}", outside.join("\n"));
    for ns in &listed {
        assert!(requests.iter().any(|r| &r.namespace == ns && r.resource == "popupstores"), "no watch in {ns}");
    }
    assert!(op.failures().is_empty(), "{}", op.failures());
    op.kill().await;
}
