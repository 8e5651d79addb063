//! End-to-end lifecycle tests against a real control plane (etcd, kube-apiserver, kube-controller-manager
//! built by `bash hack/control-plane.sh`; see docs/testing.md).
//!
//! The operator runs in-process (`controller::run`, scoped to the test's namespace) with the identity the
//! Helm chart gives it: the chart's ServiceAccount, Role and RoleBinding are applied and the operator uses a
//! token of that ServiceAccount, so a missing RBAC verb fails the test. Redis is a fake `RedisGateway`.
//! There is no kubelet: the tests write Pod status the way a kubelet would, and the real StatefulSet,
//! ReplicaSet, Deployment and Job controllers turn that into workload status.

pub mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use popup_operator::crd::PopUpStore;
use popup_operator::status::{self, reason};
use serde_json::{Value, json};
use support::cluster::{Operator, OperatorIdentity, TestEnv};
use support::fakes::FakeRedis;
use support::store::{
    Child, WAIT, assert_owned, bring_up, child_kinds, condition, describe, get as store, kind, make_ready,
    simulator_jobs, wait_condition,
};

fn example(name: &str) -> String {
    std::fs::read_to_string(support::cluster::root().join("examples").join(name)).unwrap()
}

/// The test's namespace, the chart's RBAC for it and the operator's client.
async fn setup(prefix: &str) -> (TestEnv, OperatorIdentity) {
    let env = support::cluster::env(prefix).await;
    let id = support::cluster::install_chart_rbac(&env, "popup", Some(&env.ns)).await;
    (env, id)
}

/// The operator in-process with the chart's identity, watching the test's namespace, `redis` its Redis.
fn start_operator(env: &TestEnv, id: &OperatorIdentity, redis: Arc<FakeRedis>) -> Operator {
    Operator::start(id.client.clone(), redis, Some(env.ns.clone()))
}

/// [`setup`], and the operator started in it.
async fn setup_with_operator(prefix: &str, redis: Arc<FakeRedis>) -> (TestEnv, OperatorIdentity, Operator) {
    let (env, id) = setup(prefix).await;
    let op = start_operator(&env, &id, redis);
    (env, id, op)
}

/// Applies a store called `name` with `spec`.
async fn apply_store(env: &TestEnv, name: &str, spec: Value) {
    env.apply_yaml(&serde_yaml::to_string(&store_json(name, spec)).unwrap()).await;
}

/// The names of the objects of one kind carrying the store's instance label.
async fn children<K>(env: &TestEnv, store: &str) -> Vec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={store}"));
    env.api::<K>().list(&lp).await.expect("list children").items
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn name_set<K: ResourceExt>(items: &[K]) -> BTreeSet<String> {
    items.iter().map(|o| o.name_any()).collect()
}

/// The children a store should have, by kind.
struct Expected {
    secrets: Vec<String>,
    config_maps: Vec<String>,
    services: Vec<String>,
    statefulsets: Vec<String>,
    deployments: Vec<String>,
}

/// `<store>-<suffix>` of each suffix.
fn named(store: &str, suffixes: &[&str]) -> Vec<String> {
    suffixes.iter().map(|s| format!("{store}-{s}")).collect()
}

impl Expected {
    /// A store with a managed Grafana and generated passwords, its engine not native (no processor).
    fn with_grafana(store: &str) -> Expected {
        Expected {
            secrets: named(store, &["redis", "grafana", "redis-acl", "redis-grafana", "redis-simulator"]),
            config_maps: named(store, &["scripts", "grafana-provisioning", "grafana-dashboards"]),
            services: named(store, &["redis", "redis-headless", "grafana"]),
            statefulsets: named(store, &["redis"]),
            deployments: named(store, &["grafana"]),
        }
    }

    /// The same store without Grafana.
    fn without_grafana(store: &str) -> Expected {
        Expected {
            secrets: named(store, &["redis", "redis-acl", "redis-simulator"]),
            config_maps: named(store, &["scripts"]),
            services: named(store, &["redis", "redis-headless"]),
            statefulsets: named(store, &["redis"]),
            deployments: Vec::new(),
        }
    }
}

/// Waits until the store's children of the kinds of `want` are exactly those; then each is owned by the store.
async fn wait_children(env: &TestEnv, name: &str, want: &Expected) {
    let wanted = [
        (kind::<Secret>(), &want.secrets),
        (kind::<ConfigMap>(), &want.config_maps),
        (kind::<Service>(), &want.services),
        (kind::<StatefulSet>(), &want.statefulsets),
        (kind::<Deployment>(), &want.deployments),
    ];
    let kinds: Vec<_> = wanted.iter().map(|(k, _)| k.clone()).collect();
    let expected: BTreeSet<String> =
        wanted.iter().flat_map(|(k, names)| names.iter().map(move |n| format!("{}/{n}", k.kind))).collect();
    env.eventually(&format!("the children of {name}"), WAIT, || async {
        let got: BTreeSet<String> = support::store::children(env, name, &kinds).await.iter().map(Child::id).collect();
        if got == expected { Ok(()) } else { Err(format!("got {got:?}\nwant {expected:?}")) }
    })
    .await;
    let owner = store(env, name).await.unwrap();
    for child in support::store::children(env, name, &kinds).await {
        assert_owned(&child.object, &owner);
    }
}

/// No request of the operator was refused: its RBAC (the chart's) covers everything it does.
fn assert_rbac_sufficient(env: &TestEnv, id: &OperatorIdentity, op: &Operator) {
    let forbidden = support::cluster::forbidden_requests(env.cp, &id.username);
    assert!(forbidden.is_empty(), "the chart's RBAC lacks permissions the operator uses:\n{}", forbidden.join("\n"));
    let failures = op.failures();
    assert!(
        failures.is_empty(),
        "reconciles failed:\n{failures}\n\noperator log:\n{}",
        support::cluster::operator_log(&env.ns, 30)
    );
}

/// Stops the operator, its RBAC found sufficient ([`assert_rbac_sufficient`]).
async fn stop_checking_rbac(env: &TestEnv, id: &OperatorIdentity, op: Operator) {
    assert_rbac_sufficient(env, id, &op);
    op.kill().await;
}

/// [`setup`], the example store `demo` with its Redis pod Ready, and an operator held at its first call to
/// its Redis (which hangs until released): returned once it is there, the children applied and no Job yet.
async fn setup_held_in_redis(prefix: &str) -> (TestEnv, OperatorIdentity, Arc<FakeRedis>, Operator) {
    let (env, id) = setup(prefix).await;
    let redis = Arc::new(FakeRedis::default());
    redis.hang.store(true, Ordering::SeqCst);
    let op = start_operator(&env, &id, redis.clone());
    env.apply_yaml(&example("popup.yaml")).await;
    make_ready(&env, "demo", "redis").await;
    tokio::time::timeout(WAIT, redis.entered.notified()).await.expect("the operator reaches Redis");
    (env, id, redis, op)
}

/// Waits until the StatefulSet controller has created the store `demo`'s Redis pod.
async fn demo_redis_pod(env: &TestEnv) -> Pod {
    env.eventually("the StatefulSet controller creates the Redis pod", WAIT, || async {
        env.api::<Pod>().get_opt("demo-redis-0").await.map_err(|e| e.to_string())?.ok_or("no pod yet".to_string())
    })
    .await
}

/// The namespace's Events (events.k8s.io/v1) once `done` holds for them. The operator publishes a
/// transition's Event after it has written the status, so a test that saw the status waits for it.
async fn events_when(env: &TestEnv, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(env.admin.clone(), &env.ns);
    let started = std::time::Instant::now();
    loop {
        let events = api.list(&ListParams::default()).await.unwrap().items;
        if done(&events) {
            return events;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let seen: Vec<_> = events.iter().map(|e| (e.reason.clone(), e.note.clone())).collect();
            panic!("{what}: not within 30 s; the Events were {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The arguments of a Job's container.
fn job_args(job: Job) -> Vec<String> {
    job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap_or_default()
}

async fn patch_store(env: &TestEnv, name: &str, patch: Value) -> PopUpStore {
    env.api::<PopUpStore>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name} with {patch}: {e}"))
}

// ---- tests ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn crd_installs_and_becomes_established() {
    let env = support::cluster::env("crd").await;
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.admin.clone());
    let crd = api.get("popupstores.popup.dev").await.unwrap();
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"),
        "CRD not established: {conditions:?}"
    );
    // The API server serves the resource with the printer columns of the CRD.
    let list = env.api::<PopUpStore>().list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty());
}

#[tokio::test]
async fn minimal_example_reconciles_to_ready_and_the_simulation_completes() {
    let redis = Arc::new(FakeRedis::default());
    let (env, id, op) = setup_with_operator("minimal", redis.clone()).await;
    env.apply_yaml(&example("popup.yaml")).await;

    wait_children(&env, "demo", &Expected::with_grafana("demo")).await;
    // Before any pod runs: conditions for the current generation, Redis starting, no simulator yet.
    let s = wait_condition(&env, "demo", status::REDIS_READY, "False", Some(reason::STARTING)).await;
    assert_eq!(s.status.as_ref().unwrap().observed_generation, s.metadata.generation);
    assert_eq!(condition(&s, status::READY).unwrap().status, "False");
    assert!(simulator_jobs(&env, "demo").await.is_empty(), "no simulator before the scripts are loaded");

    let s = bring_up(&env, "demo", true).await;
    let st = s.status.clone().unwrap();
    let sale = st.sale.clone().expect("sale numbers in the status");
    // The operator started the sale before its Job: the stock, nothing decided yet.
    assert_eq!((sale.available, sale.completed), (Some(10000), 0), "{sale:?}");
    assert_eq!(st.started_sale.as_ref().map(|s| s.stock), Some(10000));
    assert_eq!(condition(&s, status::SALE_INTACT).unwrap().status, "True");
    assert_eq!(condition(&s, status::SCRIPTS_LOADED).unwrap().status, "True");
    assert_eq!(condition(&s, status::GRAFANA_READY).unwrap().status, "True");
    let endpoints = st.endpoints.clone().expect("endpoints");
    assert_eq!(endpoints.redis, format!("demo-redis.{}.svc:6379", env.ns));
    assert!(redis.targets.lock().unwrap().iter().all(|t| t.address == endpoints.redis && t.password.len() >= 16));

    // The simulator Job exists, owned by the store, and its name is in the status.
    let job_name = st.simulator_job.clone().expect("status names the simulator Job");
    assert_eq!(support::store::the_only_job(&env, &s).await.name_any(), job_name);
    let s = wait_condition(&env, "demo", status::SIMULATION_COMPLETE, "False", Some(reason::RUNNING)).await;
    assert_eq!(condition(&s, status::READY).unwrap().status, "True", "Ready does not wait for the simulation");

    // The Job's pod exits 0: the Job controller completes the Job, the operator reports it.
    support::cluster::make_job_pods_succeed(&env, &job_name).await;
    let s = wait_condition(&env, "demo", status::SIMULATION_COMPLETE, "True", Some(reason::SUCCEEDED)).await;
    assert_eq!(condition(&s, status::READY).unwrap().status, "True");

    // Each transition was published as an Event about the store (events.k8s.io/v1).
    let reasons = |events: &[Event]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo"))
            .filter_map(|e| e.reason.clone())
            .collect()
    };
    let wanted = [status::REDIS_READY, status::READY, status::SIMULATION_COMPLETE];
    events_when(&env, &format!("an Event about the store for each of {wanted:?}"), |events| {
        let seen = reasons(events);
        wanted.iter().all(|r| seen.contains(*r))
    })
    .await;
    stop_checking_rbac(&env, &id, op).await;
}

#[tokio::test]
async fn full_example_uses_the_user_secret_and_every_setting() {
    let redis = Arc::new(FakeRedis::default());
    let (env, id, op) = setup_with_operator("full", redis.clone()).await;
    env.apply_yaml(&example("popup-full.yaml")).await;

    // The user's password Secret is used, not replaced by a generated one.
    let mut expected = Expected::with_grafana("flash-sale");
    expected.secrets.retain(|s| s != "flash-sale-redis");
    wait_children(&env, "flash-sale", &expected).await;
    let sts = env.api::<StatefulSet>().get("flash-sale-redis").await.unwrap();
    let claims = sts.spec.as_ref().unwrap().volume_claim_templates.clone().unwrap_or_default();
    assert_eq!(claims.len(), 1, "storage: 1Gi makes a volume claim template");
    let svc = env.api::<Service>().get("flash-sale-grafana").await.unwrap();
    assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("ClusterIP"), "the full example keeps Grafana in the cluster");

    let s = bring_up(&env, "flash-sale", true).await;
    assert!(
        redis
            .targets
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.admin_password.as_deref() == Some("change-me-to-something-long")),
        "the admin password of spec.redis.passwordSecretRef is the operator's way into Redis"
    );
    let job_name = s.status.as_ref().unwrap().simulator_job.clone().unwrap();
    let job = env.api::<Job>().get(&job_name).await.unwrap();
    assert_owned(&job, &s);
    support::cluster::make_job_pods_succeed(&env, &job_name).await;
    wait_condition(&env, "flash-sale", status::SIMULATION_COMPLETE, "True", None).await;
    stop_checking_rbac(&env, &id, op).await;
}

#[tokio::test]
async fn native_engine_runs_the_processor_deployment() {
    let (env, id, op) = setup_with_operator("native", Arc::default()).await;
    apply_store(&env, "shop", json!({"engine": "native"})).await;
    // The processor: its Deployment and its Redis user's Secret.
    let mut expected = Expected::with_grafana("shop");
    expected.secrets.push("shop-redis-processor".into());
    expected.deployments.push("shop-processor".into());
    wait_children(&env, "shop", &expected).await;
    make_ready(&env, "shop", "redis").await;
    make_ready(&env, "shop", "grafana").await;
    let s = wait_condition(&env, "shop", status::PROCESSOR_READY, "False", None).await;
    assert_eq!(condition(&s, status::READY).unwrap().status, "False", "not Ready without the processor");
    make_ready(&env, "shop", "processor").await;
    wait_condition(&env, "shop", status::PROCESSOR_READY, "True", None).await;
    wait_condition(&env, "shop", status::READY, "True", None).await;
    stop_checking_rbac(&env, &id, op).await;
}

/// The store's NetworkPolicies on a real API server: created with the store (the Redis one lets in the
/// store's pods and the operator's), recreated when deleted by hand, pruned when Grafana goes or the
/// spec turns them off, back when turned on again.
#[tokio::test]
async fn network_policies_are_created_recreated_and_pruned() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let (env, id, op) = setup_with_operator("netpol", Arc::default()).await;
    env.apply_yaml(&example("popup.yaml")).await;
    let wait_policies = |want: &'static [&'static str]| {
        let env = &env;
        async move {
            env.eventually(&format!("NetworkPolicies {want:?}"), WAIT, || async {
                let got = name_set(&children::<NetworkPolicy>(env, "demo").await);
                if got == set(want) { Ok(()) } else { Err(format!("{got:?}")) }
            })
            .await
        }
    };
    wait_policies(&["demo-redis", "demo-grafana"]).await;
    let s = store(&env, "demo").await.unwrap();
    for p in children::<NetworkPolicy>(&env, "demo").await {
        assert_owned(&p, &s);
    }
    let redis = env.api::<NetworkPolicy>().get("demo-redis").await.unwrap();
    let spec = redis.spec.clone().unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let from = spec.ingress.clone().unwrap()[0].from.clone().unwrap();
    let operator = &from[1];
    let ns_labels = operator.namespace_selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(ns_labels["kubernetes.io/metadata.name"], support::cluster::operator_pods().namespace);
    assert_eq!(
        operator.pod_selector.as_ref().unwrap().match_labels.clone().unwrap(),
        support::cluster::operator_pods().labels
    );
    // The store's own pods, as the StatefulSet controller made the Redis pod, are what the policy selects.
    let pod = demo_redis_pod(&env).await;
    let labels = pod.metadata.labels.unwrap_or_default();
    for selector in [spec.pod_selector.as_ref().unwrap(), from[0].pod_selector.as_ref().unwrap()] {
        for (k, v) in selector.match_labels.clone().unwrap() {
            assert_eq!(labels.get(&k), Some(&v), "the Redis pod carries {k}={v}");
        }
    }

    // Deleted by hand: back at once (the operator watches its policies).
    env.api::<NetworkPolicy>().delete("demo-redis", &DeleteParams::default()).await.unwrap();
    env.eventually("the Redis policy is recreated", WAIT, || async {
        match env.api::<NetworkPolicy>().get_opt("demo-redis").await.map_err(|e| e.to_string())? {
            Some(p) if p.uid() != redis.uid() => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.uid()))),
        }
    })
    .await;

    // Grafana goes: its policy goes; Redis keeps its own.
    patch_store(&env, "demo", json!({"spec": {"grafana": {"mode": "none"}}})).await;
    wait_policies(&["demo-redis"]).await;
    // Turned off: none left. Turned on again: back.
    patch_store(&env, "demo", json!({"spec": {"networkPolicy": {"enabled": false}}})).await;
    wait_policies(&[]).await;
    patch_store(&env, "demo", json!({"spec": {"networkPolicy": {"enabled": true}}})).await;
    wait_policies(&["demo-redis"]).await;
    stop_checking_rbac(&env, &id, op).await;
}

/// `kubectl apply -f` of a store whose password Secret comes later (or is created by hand afterwards): the
/// store says which Secret it misses, then picks it up; Redis is rolled out with the user's password.
#[tokio::test]
async fn a_password_secret_created_after_the_store_is_picked_up() {
    let redis = Arc::new(FakeRedis::default());
    let (env, id, op) = setup_with_operator("secret", redis.clone()).await;
    let spec = json!({"redis": {"passwordSecretRef": {"name": "shop-password", "key": "password"}}});
    apply_store(&env, "shop", spec).await;
    let s = wait_condition(&env, "shop", status::REDIS_READY, "False", Some(reason::PASSWORD_SECRET_MISSING)).await;
    let message = &condition(&s, status::REDIS_READY).unwrap().message;
    assert!(message.contains("shop-password") && message.contains("spec.redis.passwordSecretRef"), "{message}");
    make_ready(&env, "shop", "redis").await;
    make_ready(&env, "shop", "grafana").await;
    assert_eq!(redis.calls(), 0, "Redis is not used without its password");

    env.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: shop-password\nstringData:\n  password: later-but-long-enough\n",
    )
    .await;
    wait_condition(&env, "shop", status::READY, "True", None).await;
    assert!(redis.targets.lock().unwrap().iter().all(|t| t.admin_password.as_deref() == Some("later-but-long-enough")));
    let secrets = name_set(&children::<Secret>(&env, "shop").await);
    assert_eq!(
        secrets,
        set(&["shop-grafana", "shop-redis-acl", "shop-redis-grafana", "shop-redis-simulator"]),
        "no generated Redis password next to the user's Secret"
    );
    stop_checking_rbac(&env, &id, op).await;
}

/// An arm64-only cluster and the default engine: the gears pod (amd64-only redismod) asks for amd64 nodes,
/// the scheduler finds none, and the store says so in words, with the way out.
#[tokio::test]
async fn a_gears_pod_no_node_can_take_is_explained_in_the_status() {
    let (env, id, op) = setup_with_operator("unsched", Arc::default()).await;
    env.apply_yaml(&example("popup.yaml")).await;
    let pod = demo_redis_pod(&env).await;
    let node_selector = pod.spec.unwrap().node_selector.unwrap_or_default();
    assert_eq!(node_selector.get("kubernetes.io/arch").map(String::as_str), Some("amd64"));

    // What kube-scheduler writes when no node matches (there is no scheduler here: the test plays it).
    let scheduler = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    let unschedulable = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduler,
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
    }]}});
    env.api::<Pod>()
        .patch_status("demo-redis-0", &PatchParams::default(), &Patch::Merge(&unschedulable))
        .await
        .unwrap();
    // The operator looks again within 30 s by itself; a metadata change makes it look now.
    patch_store(&env, "demo", json!({"metadata": {"annotations": {"e2e.popup.dev/poke": "1"}}})).await;
    let s = wait_condition(&env, "demo", status::REDIS_READY, "False", Some(reason::UNSCHEDULABLE)).await;
    let message = &condition(&s, status::REDIS_READY).unwrap().message;
    for words in ["gears", "redismod", "amd64 only", "engine: triggers", "engine: native", scheduler] {
        assert!(message.contains(words), "{words:?} missing from: {message}");
    }
    assert!(condition(&s, status::READY).unwrap().message.contains("amd64 only"));
    let unschedulable_event = |e: &Event| {
        e.reason.as_deref() == Some("RedisReadyFalse") && e.note.as_deref().unwrap_or("").contains("Unschedulable")
    };
    let warning = events_when(&env, "a RedisReadyFalse Event for the unschedulable pod", |events| {
        events.iter().any(unschedulable_event)
    })
    .await
    .into_iter()
    .find(unschedulable_event)
    .unwrap();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // An amd64 node appears and the pod runs: the explanation goes.
    make_ready(&env, "demo", "redis").await;
    wait_condition(&env, "demo", status::REDIS_READY, "True", Some(reason::RUNNING)).await;
    stop_checking_rbac(&env, &id, op).await;
}

/// Asserts the API server refuses `obj` with a message naming `field`.
async fn assert_rejected(env: &TestEnv, obj: Value, field: &str) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply(support::cluster::TEST_MANAGER).validation_strict();
    let api = env.api::<PopUpStore>();
    match api.patch(&name, &pp, &Patch::Apply(&obj)).await {
        Ok(_) => panic!("the API server accepted {obj}"),
        // Schema violations are 422 Invalid; an unknown field in a strict apply comes back as a 500 from the
        // apply machinery ("failed to create typed patch object ... field not declared in schema").
        Err(kube::Error::Api(e)) => {
            assert!(e.code == 422 || e.code == 400 || e.code == 500, "{e:?}");
            assert!(e.message.contains(field), "the message should name {field}: {}", e.message)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn store_json(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn invalid_stores_are_rejected_by_the_api_server_naming_the_field() {
    let env = support::cluster::env("invalid").await;
    assert_rejected(&env, store_json("bad-engine", json!({"engine": "mongodb"})), "spec.engine").await;
    assert_rejected(&env, store_json("bad-stock", json!({"stock": -1})), "spec.stock").await;
    assert_rejected(&env, store_json("bad-field", json!({"colour": "red"})), "colour").await;
    assert_rejected(
        &env,
        store_json("bad-size", json!({"redis": {"storage": {"size": "lots"}}})),
        "spec.redis.storage.size",
    )
    .await;
    let long = "a".repeat(41);
    assert_rejected(&env, store_json(&long, json!({})), "metadata.name").await;

    // Unknown fields with a plain create (POST ?fieldValidation=Strict), as `kubectl create` sends it.
    let body = serde_json::to_vec(&store_json("bad-field-post", json!({"colour": "red"}))).unwrap();
    let req = http::Request::post(format!(
        "/apis/popup.dev/v1alpha1/namespaces/{}/popupstores?fieldValidation=Strict",
        env.ns
    ))
    .header("content-type", "application/json")
    .body(body)
    .unwrap();
    let err = env.admin.request_text(req).await.expect_err("strict create with an unknown field fails");
    assert!(err.to_string().contains("spec.colour"), "{err}");

    // Fixed after creation: the engine.
    apply_store(&env, "fixed", json!({"engine": "gears"})).await;
    let err = env
        .api::<PopUpStore>()
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"engine": "native"}})))
        .await
        .expect_err("engine change refused");
    assert!(err.to_string().contains("spec.engine cannot change"), "{err}");
    // A valid update of the same store goes through.
    patch_store(&env, "fixed", json!({"spec": {"stock": 42}})).await;
}

/// `spec.simulator.hold`: the sale is started (stock set, Ready) and no Job is created until the
/// hold is lifted; then one Job for that same sale, with no restock.
#[tokio::test]
async fn a_held_sale_starts_its_job_once_released() {
    let redis = Arc::new(FakeRedis::default());
    let (env, _, op) = setup_with_operator("hold", redis.clone()).await;
    let spec = json!({"grafana": {"enabled": false}, "stock": 300, "simulator": {"hold": true}});
    apply_store(&env, "shop", spec).await;
    bring_up(&env, "shop", false).await;
    let s = wait_condition(&env, "shop", status::SIMULATION_COMPLETE, "False", Some(reason::HELD)).await;
    let st = s.status.clone().unwrap();
    assert_eq!(condition(&s, status::READY).unwrap().status, "True", "a held store is Ready: {}", describe(&s));
    assert_eq!(condition(&s, status::SALE_INTACT).unwrap().status, "True");
    assert_eq!(st.sale.as_ref().and_then(|n| n.available), Some(300), "the stock is set before the customers come");
    let sale = st.started_sale.clone().expect("the held sale is started");
    assert!(st.simulator_job.is_none() && simulator_jobs(&env, "shop").await.is_empty(), "no Job while held");
    let message = &condition(&s, status::SIMULATION_COMPLETE).unwrap().message;
    assert!(message.contains(&format!("kubectl -n {} patch popupstore shop", env.ns)), "{message}");

    patch_store(&env, "shop", json!({"spec": {"simulator": {"hold": false}}})).await;
    let s = wait_condition(&env, "shop", status::SIMULATION_COMPLETE, "False", Some(reason::RUNNING)).await;
    let args = job_args(support::store::the_only_job(&env, &s).await);
    let joined = args.iter().position(|a| a == "--join-sale").map(|i| args[i + 1].clone());
    assert_eq!(joined.as_deref(), Some(sale.id.as_str()), "the Job joins the held sale: {args:?}");
    assert_eq!(s.status.unwrap().started_sale.map(|m| m.nonce), Some(sale.nonce), "the same sale, not a restock");
    op.kill().await;
}

#[tokio::test]
async fn spec_updates_replace_the_simulator_job_and_enabling_grafana_adds_it() {
    let (env, id, op) = setup_with_operator("update", Arc::default()).await;
    apply_store(&env, "shop", json!({"grafana": {"enabled": false}})).await;
    wait_children(&env, "shop", &Expected::without_grafana("shop")).await;
    let s = bring_up(&env, "shop", false).await;
    let redis_generation = || async { env.api::<StatefulSet>().get("shop-redis").await.unwrap().metadata.generation };
    let redis_before = redis_generation().await;
    let grafana = condition(&s, status::GRAFANA_READY).expect("GrafanaReady condition");
    assert_eq!((grafana.status.as_str(), grafana.reason.as_str()), ("True", reason::DISABLED), "{grafana:?}");
    let first = s.status.unwrap().simulator_job.unwrap();

    // A new stock is a new simulation: a new Job; the old one is deleted.
    let updated = patch_store(&env, "shop", json!({"spec": {"stock": 500}})).await;
    let second = wait_new_job(&env, &updated, &[&first]).await;

    // A simulator setting too.
    let updated = patch_store(&env, "shop", json!({"spec": {"simulator": {"ratePerSecond": 50}}})).await;
    let third = wait_new_job(&env, &updated, &[&first, &second]).await;
    let args = job_args(env.api::<Job>().get(&third).await.unwrap());
    let pair = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let started = store(&env, "shop").await.unwrap().status.and_then(|s| s.started_sale);
    let started = started.expect("the operator started the new sale");
    assert_eq!(started.stock, 500, "the new sale has the new stock");
    assert_eq!(
        (pair("--join-sale"), pair("--rate").as_deref()),
        (Some(started.id.clone()), Some("50")),
        "the newest Job joins the new sale at the new rate: {args:?}"
    );
    assert_eq!(third, format!("shop-simulator-{}", started.id));

    // Grafana disabled -> enabled: its objects appear and GrafanaReady follows its pods.
    patch_store(&env, "shop", json!({"spec": {"grafana": {"enabled": true}}})).await;
    wait_children(&env, "shop", &Expected::with_grafana("shop")).await;
    wait_condition(&env, "shop", status::GRAFANA_READY, "False", None).await;
    make_ready(&env, "shop", "grafana").await;
    wait_condition(&env, "shop", status::GRAFANA_READY, "True", None).await;
    wait_condition(&env, "shop", status::READY, "True", None).await;
    assert_eq!(simulator_jobs(&env, "shop").await.len(), 1, "enabling Grafana does not restart the simulation");
    assert_eq!(redis_generation().await, redis_before, "stock, simulator and Grafana changes leave Redis alone");

    // A new Redis image rolls the StatefulSet's pod template, and only that.
    patch_store(&env, "shop", json!({"spec": {"redis": {"image": "redislabs/redismod:edge"}}})).await;
    env.eventually("the Redis StatefulSet runs the new image", WAIT, || async {
        let sts = env.api::<StatefulSet>().get("shop-redis").await.map_err(|e| e.to_string())?;
        let image = sts.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].image.clone()).unwrap_or_default();
        if image.as_deref() == Some("redislabs/redismod:edge") { Ok(()) } else { Err(format!("{image:?}")) }
    })
    .await;
    assert_eq!(simulator_jobs(&env, "shop").await.len(), 1, "a new image is not a new simulation");

    // Grafana off again (mode none): its objects are deleted.
    patch_store(&env, "shop", json!({"spec": {"grafana": {"mode": "none"}}})).await;
    wait_children(&env, "shop", &Expected::without_grafana("shop")).await;
    stop_checking_rbac(&env, &id, op).await;
}

/// Waits until the store, its spec changed to `updated`, has observed that generation and has one simulator
/// Job, none of `old`, named in its status; returns its name.
async fn wait_new_job(env: &TestEnv, updated: &PopUpStore, old: &[&str]) -> String {
    let name = updated.name_any();
    env.eventually(&format!("a simulator Job of {name} replaces {old:?}"), WAIT, || async {
        let s = store(env, &name).await?;
        let jobs = name_set(&simulator_jobs(env, &name).await);
        let job = s.status.as_ref().and_then(|st| st.simulator_job.clone()).unwrap_or_default();
        if s.status.as_ref().and_then(|st| st.observed_generation) == updated.metadata.generation
            && !old.contains(&job.as_str())
            && jobs == set(&[&job])
        {
            Ok(job)
        } else {
            Err(format!("jobs {jobs:?}, status {}", describe(&s)))
        }
    })
    .await
}

/// Resource versions of the store and every child, to show nothing was written.
async fn versions(env: &TestEnv, name: &str) -> Vec<(String, String)> {
    let children = support::store::children(env, name, &child_kinds()).await;
    let mut out: Vec<_> = children.iter().map(|c| (c.id(), c.object.resource_version().unwrap_or_default())).collect();
    let s = store(env, name).await.unwrap();
    out.push((format!("PopUpStore/{name}"), s.resource_version().unwrap_or_default()));
    out
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_in_steady_state() {
    let redis = Arc::new(FakeRedis::default());
    let (env, id, op) = setup_with_operator("steady", redis.clone()).await;
    env.apply_yaml(&example("popup.yaml")).await;
    let s = bring_up(&env, "demo", true).await;
    let job = s.status.unwrap().simulator_job.unwrap();
    support::cluster::make_job_pods_succeed(&env, &job).await;
    wait_condition(&env, "demo", status::SIMULATION_COMPLETE, "True", None).await;
    // Let the settled store go through the Job's last updates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.kill().await;

    let before = versions(&env, "demo").await;
    let audited_before = support::cluster::audited_requests(env.cp, &id.username).len();
    let op = start_operator(&env, &id, redis.clone());
    env.eventually("the restarted operator reconciles", WAIT, || async {
        let n = op.health.metrics.reconciliations.get();
        if n >= 1 { Ok(()) } else { Err(format!("{n} reconciles")) }
    })
    .await;
    // Its cache is filled by the first list of each watch.
    let watched = [
        "popupstores",
        "secrets",
        "pods",
        "statefulsets",
        "deployments",
        "jobs",
        "services",
        "configmaps",
        "networkpolicies",
    ];
    env.eventually("every watch has listed once", WAIT, || async {
        let listed: BTreeSet<String> = support::cluster::audited_requests(env.cp, &id.username)[audited_before..]
            .iter()
            .filter(|a| a.verb == "list")
            .map(|a| a.resource.clone())
            .collect();
        let missing: Vec<_> = watched.iter().filter(|r| !listed.contains(**r)).collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("not listed yet: {missing:?}")) }
    })
    .await;
    // A metadata-only change of the store triggers another full reconcile (no generation change); the
    // second one is measured, well after the watches' first lists reached the cache.
    let mut window = 0;
    for poke in 1..=2 {
        let calls = redis.calls();
        window = support::cluster::audited_requests(env.cp, &id.username).len();
        patch_store(&env, "demo", json!({"metadata": {"annotations": {"e2e.popup.dev/poke": poke.to_string()}}})).await;
        env.eventually("a reconcile after the poke", WAIT, || async {
            let now = redis.calls();
            if now > calls { Ok(()) } else { Err("no reconcile yet".to_string()) }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = support::cluster::audited_requests(env.cp, &id.username);
    let writes: Vec<String> =
        after[audited_before..].iter().filter(|a| support::cluster::is_write(&a.verb)).map(|a| a.to_string()).collect();
    assert!(writes.is_empty(), "a restarted operator wrote in steady state:\n{}", writes.join("\n"));
    // Watches end only when the operator stops, so anything here is a request of the reconcile itself.
    let settled: Vec<String> = after[window..].iter().map(|a| a.to_string()).collect();
    assert!(settled.is_empty(), "a reconcile of the unchanged store sent requests:\n{}", settled.join("\n"));
    let mut after_versions = versions(&env, "demo").await;
    // Only the store changed (our annotation).
    let poke = after_versions.iter().position(|(k, _)| k == "PopUpStore/demo").unwrap();
    after_versions.remove(poke);
    let mut before = before;
    before.retain(|(k, _)| k != "PopUpStore/demo");
    assert_eq!(before, after_versions, "children changed although the operator sent no write");
    stop_checking_rbac(&env, &id, op).await;
}

#[tokio::test]
async fn deleted_children_are_recreated_and_deleting_the_store_collects_every_child() {
    let (env, id, op) = setup_with_operator("gc", Arc::default()).await;
    env.apply_yaml(&example("popup.yaml")).await;
    bring_up(&env, "demo", true).await;

    let old_cm = env.api::<ConfigMap>().get("demo-scripts").await.unwrap();
    let old_svc = env.api::<Service>().get("demo-grafana").await.unwrap();
    let old_secret = env.api::<Secret>().get("demo-redis").await.unwrap();
    env.api::<ConfigMap>().delete("demo-scripts", &DeleteParams::default()).await.unwrap();
    env.api::<Service>().delete("demo-grafana", &DeleteParams::default()).await.unwrap();
    env.api::<Secret>().delete("demo-redis", &DeleteParams::default()).await.unwrap();
    env.eventually("deleted children are recreated", WAIT, || async {
        let cm = env.api::<ConfigMap>().get_opt("demo-scripts").await.map_err(|e| e.to_string())?;
        let svc = env.api::<Service>().get_opt("demo-grafana").await.map_err(|e| e.to_string())?;
        let sec = env.api::<Secret>().get_opt("demo-redis").await.map_err(|e| e.to_string())?;
        match (cm, svc, sec) {
            (Some(cm), Some(svc), Some(sec))
                if cm.uid() != old_cm.uid() && svc.uid() != old_svc.uid() && sec.uid() != old_secret.uid() =>
            {
                Ok(())
            }
            other => {
                Err(format!("{:?}", (other.0.map(|o| o.uid()), other.1.map(|o| o.uid()), other.2.map(|o| o.uid()))))
            }
        }
    })
    .await;

    assert_rbac_sufficient(&env, &id, &op);

    // Deleting the store: kube-controller-manager's garbage collector removes every child (and their pods).
    let before = (
        children::<Secret>(&env, "demo").await.len(),
        children::<Deployment>(&env, "demo").await.len(),
        support::cluster::pods(&env, "app.kubernetes.io/instance=demo").await.len(),
    );
    assert!(before.0 > 0 && before.1 > 0 && before.2 > 0, "{before:?}");
    env.api::<PopUpStore>().delete("demo", &DeleteParams::default()).await.unwrap();
    let every_kind = [child_kinds(), vec![kind::<Pod>()]].concat();
    env.eventually("the garbage collector removes every child", Duration::from_secs(120), || async {
        let left: Vec<String> =
            support::store::children(&env, "demo", &every_kind).await.iter().map(Child::id).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("left: {left:?}")) }
    })
    .await;
    // (A reconcile racing with the deletion may fail its status write: see the next test.)
    let forbidden = support::cluster::forbidden_requests(env.cp, &id.username);
    assert!(forbidden.is_empty(), "{forbidden:?}");
    op.kill().await;
}

/// A store deleted while a reconcile is in flight: the reconcile's status write finds the store gone. That
/// is the normal end of a store, not a failure (no failure metric, no ReconcileFailed Warning).
#[tokio::test]
async fn a_store_deleted_mid_reconcile_is_not_a_reconcile_failure() {
    let (env, _, redis, op) = setup_held_in_redis("gone").await;
    env.api::<PopUpStore>().delete("demo", &DeleteParams::default()).await.unwrap();
    env.eventually("the store is gone", WAIT, || async {
        match env.api::<PopUpStore>().get_opt("demo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    redis.hang.store(false, Ordering::SeqCst);
    redis.release.notify_one();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = op.failures();
    assert!(
        failures.is_empty(),
        "a reconcile that finds its store deleted counts as a failure:\n{failures}\n\noperator log:\n{}",
        support::cluster::operator_log(&env.ns, 10)
    );
    op.kill().await;
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_converges_without_duplicates() {
    // First life: killed while it talks to Redis (children applied, no Job yet).
    let (env, id, redis, op) = setup_held_in_redis("killed").await;
    op.kill().await;
    let secrets = support::cluster::by_name(&children::<Secret>(&env, "demo").await);
    assert!(simulator_jobs(&env, "demo").await.is_empty());

    // Several more lives, each killed at an arbitrary point of its work.
    redis.hang.store(false, Ordering::SeqCst);
    for delay_ms in [30u64, 120, 250, 400, 700] {
        let op = start_operator(&env, &id, redis.clone());
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        op.kill().await;
    }

    // The last one runs to the end.
    let op = start_operator(&env, &id, redis.clone());
    make_ready(&env, "demo", "grafana").await;
    let s = wait_condition(&env, "demo", status::READY, "True", None).await;
    let job = s.status.unwrap().simulator_job.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(name_set(&simulator_jobs(&env, "demo").await), set(&[&job]), "exactly one simulator Job");
    assert_eq!(children::<StatefulSet>(&env, "demo").await.len(), 1);
    assert_eq!(name_set(&children::<Deployment>(&env, "demo").await), set(&["demo-grafana"]));
    // The generated passwords survived every restart (same Secrets, same data).
    let now = support::cluster::by_name(&children::<Secret>(&env, "demo").await);
    assert_eq!(secrets.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>());
    for (name, old) in &secrets {
        assert_eq!(old.uid(), now[name].uid(), "Secret {name} was recreated");
        assert_eq!(old.data, now[name].data, "Secret {name} changed its data");
    }
    stop_checking_rbac(&env, &id, op).await;
}

/// The RBAC check of these tests has teeth: with one verb taken out of the chart's Role, the operator's
/// refused request shows up.
#[tokio::test]
async fn a_missing_rbac_verb_is_detected() {
    let (env, id) = setup("rbac").await;
    let roles = env.api::<k8s_openapi::api::rbac::v1::Role>();
    let mut role = roles.get("popup-popup-operator").await.expect("the chart's Role");
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.as_ref().is_some_and(|r| r.iter().any(|r| r == "jobs")) {
            rule.verbs.retain(|v| v != "create");
        }
    }
    role.metadata.managed_fields = None;
    roles.replace("popup-popup-operator", &Default::default(), &role).await.unwrap();

    let op = start_operator(&env, &id, Arc::default());
    env.apply_yaml(&example("popup.yaml")).await;
    make_ready(&env, "demo", "redis").await;
    let refused = env
        .eventually("the operator's Job creation is refused", WAIT, || async {
            let f = support::cluster::forbidden_requests(env.cp, &id.username);
            if f.iter().any(|r| r.starts_with("create jobs")) { Ok(f) } else { Err(format!("{f:?}")) }
        })
        .await;
    assert!(simulator_jobs(&env, "demo").await.is_empty(), "{refused:?}");
    // The Job is created by the observe stage, once the scripts are in place.
    env.eventually("the failure counted under its stage", WAIT, || async {
        let failures = op.failures();
        if failures.contains("stage=\"observe\"") { Ok(()) } else { Err(failures) }
    })
    .await;
    op.kill().await;
}
