//! The e2e harness: one real control plane per test binary, a namespace per test, the operator running
//! in-process with the Helm chart's RBAC (and the fakes of `super::fakes` for Redis and Grafana), "kubelet"
//! helpers and the audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use popup_operator::controller::{self, Config, Context, RedisGateway, WatchScope};
use popup_operator::telemetry::Health;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::control_plane::{ControlPlane, ControllerManager};
use super::fakes::FakeGrafana;

/// The field manager of everything the tests write as admin.
pub const TEST_MANAGER: &str = "e2e-test";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static CONTROL_PLANE: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();
static CRD: OnceCell<Result<(), String>> = OnceCell::const_new();

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// The control plane shared by every test of this binary (started by the first test that asks), with the
/// test tiers' fast controller manager.
pub async fn control_plane() -> &'static ControlPlane {
    control_plane_with(ControllerManager::Fast).await
}

/// The same with the given controller manager; every test of one binary must ask for the same.
pub async fn control_plane_with(controller_manager: ControllerManager) -> &'static ControlPlane {
    let cp = CONTROL_PLANE
        .get_or_init(|| async {
            std::panic::AssertUnwindSafe(ControlPlane::start(controller_manager))
                .catch_unwind()
                .await
                .map_err(panic_text)
        })
        .await;
    match cp {
        Ok(cp) => {
            assert_eq!(
                cp.controller_manager, controller_manager,
                "the tests of one binary share its control plane: they must all ask for the same controller manager"
            );
            cp
        }
        Err(e) => panic!("the control plane did not start: {e}"),
    }
}

/// Installs `crds/popupstores.popup.dev.yaml` once per control plane and waits until it is Established.
pub async fn install_crd(cp: &ControlPlane) {
    let done = CRD
        .get_or_init(|| async {
            std::panic::AssertUnwindSafe(async {
                let admin = cp.admin_client().await;
                // POPUP_E2E_CRD: try a candidate CRD file instead of the repository's.
                let file = std::env::var_os("POPUP_E2E_CRD")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| root().join("crds/popupstores.popup.dev.yaml"));
                let text = std::fs::read_to_string(&file).unwrap();
                let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("the CRD file parses");
                let api: Api<CustomResourceDefinition> = Api::all(admin);
                api.patch(&crd.name_any(), &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&crd))
                    .await
                    .expect("the API server accepts the CRD");
                let name = crd.name_any();
                let established = kube::runtime::wait::await_condition(
                    api,
                    &name,
                    kube::runtime::wait::conditions::is_crd_established(),
                );
                tokio::time::timeout(Duration::from_secs(30), established)
                    .await
                    .expect("the CRD becomes Established within 30 s")
                    .expect("watching the CRD works");
            })
            .catch_unwind()
            .await
            .map_err(panic_text)
        })
        .await;
    if let Err(e) = done {
        panic!("installing the CRD failed: {e}");
    }
}

/// A fresh namespace for one test (the control plane and the CRD are ready).
pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub admin: Client,
    pub ns: String,
    /// Label selectors whose Pods the test's kubelet keeps Running and Ready (see `make_pods_ready`).
    kubelet_selectors: Arc<Mutex<Vec<String>>>,
    kubelet: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(task) = self.kubelet.lock().unwrap().take() {
            task.abort();
        }
    }
}

static OPERATOR_LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The in-process operators log (tracing) to `operator.log` in the control plane's directory; `RUST_LOG`
/// filters (default: debug for the operator, info for kube).
fn init_operator_log(cp: &ControlPlane) {
    OPERATOR_LOG.get_or_init(|| {
        let path = cp.dir.join("operator.log");
        let file = std::fs::File::create(&path).expect("create operator.log");
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("popup_operator=debug,kube=info,warn"));
        let _ =
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(Mutex::new(file)).try_init();
        path
    });
}

/// The operator log lines that mention `needle` (a namespace), the last `n` of them.
pub fn operator_log(needle: &str, n: usize) -> String {
    let Some(path) = OPERATOR_LOG.get() else { return String::new() };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub async fn env(prefix: &str) -> TestEnv {
    env_with(prefix, ControllerManager::Fast).await
}

/// [`env`] on a control plane with the given controller manager.
pub async fn env_with(prefix: &str, controller_manager: ControllerManager) -> TestEnv {
    let cp = control_plane_with(controller_manager).await;
    init_operator_log(cp);
    install_crd(cp).await;
    let admin = cp.admin_client().await;
    let suffix: String = {
        use rand::Rng;
        rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(5)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect()
    };
    let ns = format!("{prefix}-{suffix}");
    let api: Api<Namespace> = Api::all(admin.clone());
    let mut obj = Namespace::default();
    obj.metadata.name = Some(ns.clone());
    api.create(&PostParams::default(), &obj).await.expect("create the test namespace");
    TestEnv { cp, admin, ns, kubelet_selectors: Arc::default(), kubelet: Mutex::new(None) }
}

impl TestEnv {
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Applies a manifest (one or more YAML documents) into the test namespace as admin, with server-side
    /// apply. Returns the applied objects.
    pub async fn apply_yaml(&self, yaml: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            if v.is_null() {
                continue;
            }
            out.push(self.apply_value(v).await.unwrap_or_else(|e| panic!("apply failed: {e}")));
        }
        out
    }

    /// Server-side apply of one object (namespaced kinds get the test namespace).
    pub async fn apply_value(&self, mut v: Value) -> Result<Value, kube::Error> {
        let ar = api_resource(&v);
        let name = v["metadata"]["name"].as_str().expect("metadata.name").to_string();
        let api: Api<kube::api::DynamicObject> = if namespaced_kind(&ar.kind) {
            v["metadata"]["namespace"] = json!(self.ns);
            Api::namespaced_with(self.admin.clone(), &self.ns, &ar)
        } else {
            Api::all_with(self.admin.clone(), &ar)
        };
        let obj = api.patch(&name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&v)).await?;
        Ok(serde_json::to_value(obj).unwrap())
    }

    /// Waits until `check` returns `Ok`; on timeout panics with its last error and the control plane logs.
    pub async fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        super::poll::until(timeout, Duration::from_millis(200), check).await.unwrap_or_else(|last| {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\nlast state: {last}\n\noperator log ({}):\n{}\n\ncontrol plane logs:\n{}",
                self.ns,
                operator_log(&self.ns, 40),
                self.cp.logs()
            )
        })
    }
}

fn namespaced_kind(kind: &str) -> bool {
    !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition")
}

fn api_resource(v: &Value) -> kube::api::ApiResource {
    let api_version = v["apiVersion"].as_str().expect("apiVersion");
    let kind = v["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let mut ar = kube::api::ApiResource::from_gvk(&gvk);
    if kind == "PopUpStore" {
        ar.plural = "popupstores".into();
    }
    ar
}

// ---- Helm chart RBAC and the operator's identity ----------------------------------------------------------

/// The helm binary: `$HELM`, else `${POPUP_CACHE:-~/.cache/popup-operator}/bin/helm` (from
/// `bash hack/install-helm.sh`).
pub fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("POPUP_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/popup-operator"));
    let p = cache.join("bin/helm");
    assert!(p.is_file(), "no helm at {} (and HELM is not set): run `bash hack/install-helm.sh`", p.display());
    p
}

/// `helm template <release> charts/popup-operator --namespace <ns> [--set watchNamespace=<watch>]`, as
/// parsed documents.
pub fn helm_template(release: &str, namespace: &str, watch_namespace: Option<&str>) -> Vec<Value> {
    let sets: Vec<String> = watch_namespace.map(|w| format!("watchNamespace={w}")).into_iter().collect();
    helm_template_with(release, namespace, &sets)
}

/// `helm template <release> charts/popup-operator --namespace <ns> --set <s>...`, as parsed documents.
pub fn helm_template_with(release: &str, namespace: &str, sets: &[String]) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release]).arg(root().join("charts/popup-operator")).args(["--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The operator's identity as the chart installs it.
pub struct OperatorIdentity {
    pub namespace: String,
    pub service_account: String,
    /// `system:serviceaccount:<ns>:<name>`, as the API server (and its audit log) names it.
    pub username: String,
    pub client: Client,
}

/// Renders the chart, applies its ServiceAccount and RBAC objects (nothing else: there is no kubelet to
/// run the Deployment), requests a token for the ServiceAccount and returns a client using it.
pub async fn install_chart_rbac(env: &TestEnv, release: &str, watch_namespace: Option<&str>) -> OperatorIdentity {
    install_rendered_rbac(env, helm_template(release, &env.ns, watch_namespace)).await
}

/// Like [`install_chart_rbac`], with any chart values (`--set` arguments), e.g. `watchNamespaces={a,b}`.
pub async fn install_chart_rbac_with(env: &TestEnv, release: &str, sets: &[String]) -> OperatorIdentity {
    install_rendered_rbac(env, helm_template_with(release, &env.ns, sets)).await
}

async fn install_rendered_rbac(env: &TestEnv, docs: Vec<Value>) -> OperatorIdentity {
    let mut sa_name = None;
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let patch = PatchParams::apply(TEST_MANAGER).force();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(&env.ns).to_string();
        let a = &env.admin;
        match kind.as_str() {
            "ServiceAccount" => {
                let o: ServiceAccount = serde_json::from_value(doc).unwrap();
                Api::<ServiceAccount>::namespaced(a.clone(), &ns)
                    .patch(&name, &patch, &Patch::Apply(&o))
                    .await
                    .unwrap();
                sa_name = Some(name);
            }
            "Role" => {
                let o: Role = serde_json::from_value(doc).unwrap();
                Api::<Role>::namespaced(a.clone(), &ns).patch(&name, &patch, &Patch::Apply(&o)).await.unwrap();
            }
            "RoleBinding" => {
                let o: RoleBinding = serde_json::from_value(doc).unwrap();
                Api::<RoleBinding>::namespaced(a.clone(), &ns).patch(&name, &patch, &Patch::Apply(&o)).await.unwrap();
            }
            "ClusterRole" => {
                let o: ClusterRole = serde_json::from_value(doc).unwrap();
                Api::<ClusterRole>::all(a.clone()).patch(&name, &patch, &Patch::Apply(&o)).await.unwrap();
            }
            "ClusterRoleBinding" => {
                let o: ClusterRoleBinding = serde_json::from_value(doc).unwrap();
                Api::<ClusterRoleBinding>::all(a.clone()).patch(&name, &patch, &Patch::Apply(&o)).await.unwrap();
            }
            _ => {}
        }
    }
    let sa = sa_name.expect("the chart renders a ServiceAccount");
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(env.admin.clone(), &env.ns)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the operator's ServiceAccount")
        .status
        .expect("TokenRequest has a status")
        .token;
    let username = format!("system:serviceaccount:{}:{sa}", env.ns);
    let client = env.cp.token_client(&username, &token, &env.ns).await;
    OperatorIdentity { namespace: env.ns.clone(), service_account: sa, username, client }
}

// ---- the operator, in-process ---------------------------------------------------------------------------

/// Who the in-process operators say they are to the Redis NetworkPolicies: the chart's pods in
/// `popup-system` (what `helm install popup ... -n popup-system` passes).
pub fn operator_pods() -> popup_operator::render::network_policy::OperatorPods {
    popup_operator::render::network_policy::OperatorPods::new(
        "popup-system",
        "app.kubernetes.io/name=popup-operator,app.kubernetes.io/instance=popup",
    )
    .expect("a valid selector")
}

/// The controller running as a tokio task (as `popup-operator run` would), stopped by `stop`/drop.
pub struct Operator {
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    pub health: Health,
}

impl Operator {
    pub fn start(client: Client, redis: Arc<dyn RedisGateway>, watch_namespace: Option<String>) -> Operator {
        Self::start_with_redis_address(client, redis, watch_namespace, None)
    }

    /// Like [`Operator::start`], watching every namespace or a list of them (`--watch-namespace a,b`).
    pub fn start_in(client: Client, redis: Arc<dyn RedisGateway>, scope: WatchScope) -> Operator {
        Self::start_scoped(client, redis, scope, None)
    }

    /// Like [`Operator::start`], reaching every store's Redis at `redis_address` (the `--redis-address`
    /// template), e.g. a local redis-stack-server.
    pub fn start_with_redis_address(
        client: Client,
        redis: Arc<dyn RedisGateway>,
        watch_namespace: Option<String>,
        redis_address: Option<String>,
    ) -> Operator {
        Self::start_scoped(client, redis, watch_namespace.into(), redis_address)
    }

    fn start_scoped(
        client: Client,
        redis: Arc<dyn RedisGateway>,
        scope: WatchScope,
        redis_address: Option<String>,
    ) -> Operator {
        let health = Health::default();
        let config = Config {
            operator_image: "example.invalid/popup-operator:e2e".into(),
            redis_address_template: redis_address,
            operator_pods: Some(operator_pods()),
            // Short, so that tests see an old admin password go.
            rotation_grace: Duration::from_secs(3),
            grafana_address_template: None,
        };
        // No Grafana runs here: its Deployment's readiness is played, and so are its answers.
        let ctx = Context::new(client, redis, Arc::new(FakeGrafana::default()), health.clone(), config);
        let task = tokio::spawn(async move { controller::run(ctx, scope).await.map_err(|e| e.to_string()) });
        Operator { task: Some(task), health }
    }

    /// Kills the operator wherever it is (like SIGKILL: no clean shutdown) and waits until it is gone.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            match task.await {
                Err(e) if e.is_cancelled() => {}
                Err(e) => panic!("the operator task panicked: {e}"),
                Ok(r) => panic!("the operator stopped by itself: {r:?}"),
            }
        }
    }

    /// Reconciles that failed, by stage (from the operator's own metrics).
    pub fn failures(&self) -> String {
        self.health
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("popup_operator_reconcile_failures_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---- playing kubelet ------------------------------------------------------------------------------------

/// Pods of the namespace matching `selector`.
pub async fn pods(env: &TestEnv, selector: &str) -> Vec<Pod> {
    env.api::<Pod>().list(&ListParams::default().labels(selector)).await.expect("list pods").items
}

/// A kubelet's status of every container of `pod`: `ready` and `state` as given.
fn container_statuses(pod: &Pod, ready: bool, state: Value) -> Vec<Value> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": ready, "started": ready, "restartCount": 0, "state": state,
            })
        })
        .collect()
}

/// What a kubelet reports for a running, ready Pod.
fn running_status(pod: &Pod) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    json!({
        "phase": "Running",
        "podIP": "10.244.0.10",
        "hostIP": "10.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": container_statuses(pod, true, json!({"running": {"startedAt": now}})),
    })
}

/// What a kubelet reports for a Pod whose containers all exited 0.
fn succeeded_status(pod: &Pod) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let exited = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}});
    json!({
        "phase": "Succeeded",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
        "containerStatuses": container_statuses(pod, false, exited),
    })
}

async fn patch_pod_status(env: &TestEnv, pod: &Pod, status: Value) -> Result<(), String> {
    let patch = json!({"status": status});
    env.api::<Pod>()
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("patch status of pod {}: {e}", pod.name_any()))
}

/// One pass of the test's kubelet: every Pod matching one of `selectors` that is not Running yet (and not
/// being deleted) becomes Running and Ready.
async fn kubelet_pass(admin: &Client, ns: &str, selectors: &[String]) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    for selector in selectors {
        let pods = api.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?.items;
        for pod in pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_none() && phase == "Pending" {
                let patch = json!({"status": running_status(&pod)});
                // A Pod deleted or replaced in between is fine: the next pass sees the new one.
                let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
        }
    }
    Ok(())
}

/// Plays kubelet for the Pods matching `selector`, from now until the end of the test: each new Pod
/// (a rollout, a recreated StatefulSet pod) becomes Running and Ready, so the StatefulSet, ReplicaSet and
/// Deployment controllers compute ready/available replicas themselves. Waits until `min` such Pods run.
pub async fn make_pods_ready(env: &TestEnv, selector: &str, min: usize) {
    env.kubelet_selectors.lock().unwrap().push(selector.to_string());
    {
        let mut task = env.kubelet.lock().unwrap();
        if task.is_none() {
            let (admin, ns, selectors) = (env.admin.clone(), env.ns.clone(), env.kubelet_selectors.clone());
            *task = Some(tokio::spawn(async move {
                loop {
                    let current = selectors.lock().unwrap().clone();
                    if let Err(e) = kubelet_pass(&admin, &ns, &current).await {
                        eprintln!("kubelet pass in {ns} failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }));
        }
    }
    env.eventually(&format!("{min} running pod(s) for {selector}"), Duration::from_secs(60), || async {
        let pods = pods(env, selector).await;
        let running = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= min { Ok(()) } else { Err(format!("{running} of {} pod(s) running", pods.len())) }
    })
    .await
}

/// Plays kubelet for a Job: its Pod's containers exit 0, so the Job controller marks the Job complete.
pub async fn make_job_pods_succeed(env: &TestEnv, job: &str) {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    env.eventually(&format!("a succeeded pod of job {job}"), Duration::from_secs(60), || async {
        let pods = pods(env, &selector).await;
        if pods.is_empty() {
            return Err("no pod yet".into());
        }
        for pod in &pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if phase != "Succeeded" {
                patch_pod_status(env, pod, succeeded_status(pod)).await?;
            }
        }
        Ok(())
    })
    .await
}

// ---- audit log --------------------------------------------------------------------------------------------

/// One request of the audit log.
#[derive(Clone, Debug)]
pub struct Audited {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    pub code: i64,
    pub timestamp: String,
}

impl std::fmt::Display for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = if self.subresource.is_empty() { String::new() } else { format!("/{}", self.subresource) };
        write!(f, "{} {}{sub} {}/{} -> {}", self.verb, self.resource, self.namespace, self.name, self.code)
    }
}

/// Every completed request made by `username`, in order.
pub fn audited_requests(cp: &ControlPlane, username: &str) -> Vec<Audited> {
    cp.audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == username && e["stage"] == "ResponseComplete")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            Audited {
                verb: s(&e["verb"]),
                resource: s(&e["objectRef"]["resource"]),
                subresource: s(&e["objectRef"]["subresource"]),
                name: s(&e["objectRef"]["name"]),
                namespace: s(&e["objectRef"]["namespace"]),
                code: e["responseStatus"]["code"].as_i64().unwrap_or_default(),
                timestamp: s(&e["stageTimestamp"]),
            }
        })
        .collect()
}

pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// Requests by `username` the API server refused for lack of permission (RBAC gaps).
pub fn forbidden_requests(cp: &ControlPlane, username: &str) -> Vec<String> {
    audited_requests(cp, username).into_iter().filter(|a| a.code == 403).map(|a| a.to_string()).collect()
}

/// Counts of objects by `kind name` for quick comparisons.
pub fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|o| o.name_any()).collect();
    v.sort();
    v
}

pub fn by_name<K: ResourceExt + Clone>(items: &[K]) -> BTreeMap<String, K> {
    items.iter().map(|o| (o.name_any(), o.clone())).collect()
}
