//! Waiting on a store as the e2e tests do: its conditions, its pods played by the "kubelet", its
//! simulator Job, its children of every kind and their ownerReferences.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Resource, ResourceExt};
use popup_operator::crd::PopUpStore;
use popup_operator::status;

use super::cluster::{TestEnv, make_pods_ready};

/// How long a store may take to reach a state.
pub const WAIT: Duration = Duration::from_secs(60);

/// The label selector of one component (`redis`, `grafana`, `processor`, `simulator`) of a store.
pub fn selector(store: &str, component: &str) -> String {
    format!("app.kubernetes.io/instance={store},app.kubernetes.io/component={component}")
}

pub async fn get(env: &TestEnv, name: &str) -> Result<PopUpStore, String> {
    env.api::<PopUpStore>().get(name).await.map_err(|e| format!("get popupstore {name}: {e}"))
}

pub fn condition<'a>(s: &'a PopUpStore, type_: &str) -> Option<&'a Condition> {
    status::find(s.status.as_ref(), type_)
}

/// The status in a few lines, for a test that waited in vain.
pub fn describe(s: &PopUpStore) -> String {
    let Some(st) = &s.status else { return "no status".into() };
    let conds: Vec<String> = st
        .conditions
        .iter()
        .map(|c| format!("{}={} ({}: {}; gen {:?})", c.type_, c.status, c.reason, c.message, c.observed_generation))
        .collect();
    format!(
        "generation {:?}, observedGeneration {:?}, job {:?}, sale {:?}\n  {}",
        s.metadata.generation,
        st.observed_generation,
        st.simulator_job,
        st.sale,
        conds.join("\n  ")
    )
}

/// Waits until the store's condition `type_` has `status` (and, when given, `reason`) for the current
/// generation.
pub async fn wait_condition(env: &TestEnv, name: &str, type_: &str, want: &str, reason: Option<&str>) -> PopUpStore {
    env.eventually(&format!("{name}: {type_}={want} {reason:?}"), WAIT, || async {
        let s = get(env, name).await?;
        let current = s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation;
        match condition(&s, type_) {
            Some(c)
                if current
                    && c.status == want
                    && reason.is_none_or(|r| c.reason == r)
                    && c.observed_generation == s.metadata.generation =>
            {
                Ok(s)
            }
            _ => Err(describe(&s)),
        }
    })
    .await
}

/// Plays kubelet for one component's pod (`redis`, `grafana`, `processor`) of a store: it runs and is Ready.
pub async fn make_ready(env: &TestEnv, store: &str, component: &str) {
    make_pods_ready(env, &selector(store, component), 1).await;
}

/// Plays kubelet for Redis (and Grafana, when enabled) until the store is Ready; returns the store.
pub async fn bring_up(env: &TestEnv, name: &str, grafana: bool) -> PopUpStore {
    make_ready(env, name, "redis").await;
    if grafana {
        make_ready(env, name, "grafana").await;
    }
    wait_condition(env, name, status::READY, "True", None).await
}

/// Simulator Jobs of a store (not being deleted).
pub async fn simulator_jobs(env: &TestEnv, store: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&selector(store, "simulator"));
    env.api::<Job>()
        .list(&lp)
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The one Job of the namespace: the store's simulator, owned by it.
pub async fn the_only_job(env: &TestEnv, store: &PopUpStore) -> Job {
    let mut jobs = env.api::<Job>().list(&ListParams::default()).await.expect("list jobs").items;
    assert_eq!(jobs.len(), 1, "one Job in {}: {:?}", env.ns, jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>());
    let job = jobs.remove(0);
    assert_eq!(job.labels().get("app.kubernetes.io/component").map(String::as_str), Some("simulator"));
    assert_owned(&job, store);
    job
}

/// Exactly one ownerReference: the store, as controller.
pub fn assert_owned<K: ResourceExt>(obj: &K, owner: &PopUpStore) {
    let refs = obj.owner_references();
    assert_eq!(refs.len(), 1, "{} should have one ownerReference: {refs:?}", obj.name_any());
    let r = &refs[0];
    assert_eq!((r.kind.as_str(), r.api_version.as_str()), ("PopUpStore", "popup.dev/v1alpha1"), "{r:?}");
    assert_eq!(Some(&r.uid), owner.metadata.uid.as_ref(), "{} owner uid", obj.name_any());
    assert_eq!(r.name, owner.name_any());
    assert_eq!(r.controller, Some(true), "{} ownerReference is the controller", obj.name_any());
}

/// One kind of object to list (`kind::<Secret>()`).
pub fn kind<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Every kind a store's children come in (its workloads' Pods are not its own).
pub fn child_kinds() -> Vec<ApiResource> {
    vec![
        kind::<Secret>(),
        kind::<ConfigMap>(),
        kind::<Service>(),
        kind::<NetworkPolicy>(),
        kind::<StatefulSet>(),
        kind::<Deployment>(),
        kind::<Job>(),
    ]
}

/// An object carrying a store's instance label, and its kind.
pub struct Child {
    pub kind: String,
    pub object: DynamicObject,
}

impl Child {
    /// `Kind/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.object.name_any())
    }
}

/// The objects of `kinds` in the test's namespace that carry the instance label of `store`, kind by kind
/// in the order of `kinds`.
pub async fn children(env: &TestEnv, store: &str, kinds: &[ApiResource]) -> Vec<Child> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={store}"));
    let mut out = Vec::new();
    for ar in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), &env.ns, ar);
        let list = api.list(&lp).await.unwrap_or_else(|e| panic!("list {} of {store}: {e}", ar.plural));
        out.extend(list.items.into_iter().map(|object| Child { kind: ar.kind.clone(), object }));
    }
    out
}
