//! Pure rendering: `PopUpStore` → validated settings → every child object.
//!
//! Nothing here talks to a cluster or to Redis, so the controller and `popup-operator render` use the very
//! same code, and every builder is unit-tested on plain values.

pub mod acl;
pub mod component;
pub mod grafana;
pub mod network_policy;
pub mod processor;
pub mod redis;
pub mod simulator;
mod validation;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, Secret, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use component::Component;
#[cfg(test)]
pub(crate) use validation::bounded_numbers;
pub use validation::{SpecError, SpecErrors, validate};

use crate::crd::{Engine, GrafanaMode, PopUpStoreSpec, SecretKeyRef};

/// Default images, pinned so a store renders the same objects tomorrow as today.
pub mod images {
    /// redismod: Redis 6.2 with RedisGears 1.2 (Python) and RedisTimeSeries. Amd64 only; the image is
    /// frozen (RedisGears 1 is in maintenance), so `latest` is its only maintained tag.
    pub const GEARS: &str = "redislabs/redismod:latest";
    /// Redis Stack server 7.4: Redis 7.4 with RedisGears 2 (JavaScript triggers) and RedisTimeSeries.
    pub const TRIGGERS: &str = "redis/redis-stack-server:7.4.0-v0";
    /// Redis 8 ships TimeSeries built in; no Gears, so the `native` processor does the work.
    pub const NATIVE: &str = "redis:8.2.3";
    /// Grafana ≥ 12.1 understands `GF_PLUGINS_PREINSTALL_SYNC` (docs/dashboard.md, "Which Grafana").
    pub const GRAFANA: &str = "grafana/grafana:12.3.1";
    /// The operator's own image, used for the simulator Job and the native processor.
    pub const OPERATOR: &str = concat!("ghcr.io/popup-operator/popup-operator:", env!("CARGO_PKG_VERSION"));
}

/// The field manager of every server-side apply this operator makes.
pub const FIELD_MANAGER: &str = "popup-operator";
/// Annotation holding the hash of what the operator last applied; equal hash → nothing to write.
pub const APPLIED_HASH_ANNOTATION: &str = "popup.dev/applied-hash";
/// Pod-template annotation that changes when the configuration the pods read changes, so they roll.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "popup.dev/config-checksum";
/// Redis listens here in every image we use.
pub const REDIS_PORT: i32 = 6379;
/// Grafana's HTTP port.
pub const GRAFANA_PORT: i32 = 3000;
/// Key of the generated password inside the operator-owned Secrets.
pub const PASSWORD_KEY: &str = "password";

/// Names of every child of a store. One place, so the controller, the tests and the docs agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub store: String,
}

impl Names {
    pub fn new(store: &str) -> Self {
        Self { store: store.to_string() }
    }
    /// Redis StatefulSet, the client Service and the generated password Secret.
    pub fn redis(&self) -> String {
        format!("{}-redis", self.store)
    }
    /// The StatefulSet's only pod.
    pub fn redis_pod(&self) -> String {
        format!("{}-0", self.redis())
    }
    pub fn redis_headless(&self) -> String {
        format!("{}-redis-headless", self.store)
    }
    pub fn redis_secret(&self) -> String {
        self.redis()
    }
    /// The ACL file Redis loads at start, and the operator's own Redis password.
    pub fn redis_acl(&self) -> String {
        format!("{}-redis-acl", self.store)
    }
    /// The Redis user and password of one component (`grafana`, `simulator`, `processor`).
    pub fn redis_user(&self, component: Component) -> String {
        format!("{}-redis-{component}", self.store)
    }
    pub fn scripts(&self) -> String {
        format!("{}-scripts", self.store)
    }
    /// Grafana Deployment, Service and admin Secret.
    pub fn grafana(&self) -> String {
        format!("{}-grafana", self.store)
    }
    pub fn grafana_provisioning(&self) -> String {
        format!("{}-grafana-provisioning", self.store)
    }
    /// Sidecar mode: the datasource Secret for the user's Grafana.
    pub fn grafana_datasource(&self) -> String {
        format!("{}-grafana-datasource", self.store)
    }
    pub fn grafana_dashboards(&self) -> String {
        format!("{}-grafana-dashboards", self.store)
    }
    pub fn processor(&self) -> String {
        format!("{}-processor", self.store)
    }
    /// Jobs are immutable, so the simulator Job's name carries a hash of its settings.
    pub fn simulator_job(&self, settings_hash: &str) -> String {
        format!("{}-simulator-{}", self.store, settings_hash)
    }
    /// `host:port` of the Redis client Service inside the cluster.
    pub fn redis_address(&self, namespace: &str) -> String {
        format!("{}.{}.svc:{}", self.redis(), namespace, REDIS_PORT)
    }
}

/// Where the Redis password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// The operator generates it into `<store>-redis` (key `password`) and owns that Secret.
    Generated { secret: String },
    /// The user's Secret.
    UserSecret(SecretKeyRef),
}

impl PasswordSource {
    pub fn secret_name(&self) -> &str {
        match self {
            PasswordSource::Generated { secret } => secret,
            PasswordSource::UserSecret(r) => &r.name,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            PasswordSource::Generated { .. } => PASSWORD_KEY,
            PasswordSource::UserSecret(r) => &r.key,
        }
    }
}

/// A store whose spec passed validation, with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedStore {
    pub names: Names,
    pub namespace: String,
    /// Controller ownerReference to the store; absent when rendering a file that was never applied.
    pub owner: Option<OwnerReference>,
    pub spec: PopUpStoreSpec,
    pub redis_image: String,
    pub grafana_image: String,
    pub password: PasswordSource,
}

impl ValidatedStore {
    pub fn engine(&self) -> Engine {
        self.spec.engine
    }
}

/// The image a store uses when `spec.redis.image` is not set.
pub fn default_redis_image(engine: Engine) -> &'static str {
    match engine {
        Engine::Gears => images::GEARS,
        Engine::Triggers => images::TRIGGERS,
        Engine::Native => images::NATIVE,
    }
}

/// Values the builders need that do not come from the spec: they are read from the cluster (or
/// generated) by the caller, so the builders stay pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInputs {
    /// The Redis admin password (generated or from the user's Secret). Goes into the generated Secret;
    /// `None` while the user's Secret is missing.
    pub redis_password: Option<String>,
    /// Grafana's admin password (always operator-generated).
    pub grafana_admin_password: String,
    /// The passwords of the store's Redis users (see [`acl`]).
    pub credentials: acl::Credentials,
    /// Image of the simulator Job and the native processor.
    pub operator_image: String,
    /// The operator's pods, which the Redis NetworkPolicy lets in. `None` when the operator runs outside
    /// the cluster: it then reaches Redis through a port-forward, which no NetworkPolicy sees.
    pub operator_pods: Option<network_policy::OperatorPods>,
    /// The scripts ConfigMap's files, name → text: the engine's settings and the scripts it loads
    /// (`controller::sale_bridge::script_files`). Data here, so the builders know nothing of the sale.
    pub scripts: BTreeMap<String, String>,
}

/// Every object a store is made of, in the order they are applied.
#[derive(Clone, Debug)]
pub struct Children {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    /// Applied before the pods they protect exist.
    pub network_policies: Vec<NetworkPolicy>,
    pub redis: StatefulSet,
    pub deployments: Vec<Deployment>,
    pub simulator_job: Option<Job>,
}

/// The kinds of a store's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Secret,
    ConfigMap,
    Service,
    NetworkPolicy,
    StatefulSet,
    Deployment,
    Job,
}

/// One child of a store, of any kind.
#[derive(Clone, Copy, Debug)]
pub enum Child<'a> {
    Secret(&'a Secret),
    ConfigMap(&'a ConfigMap),
    Service(&'a Service),
    NetworkPolicy(&'a NetworkPolicy),
    StatefulSet(&'a StatefulSet),
    Deployment(&'a Deployment),
    Job(&'a Job),
}

/// `$body` with `$k` bound to the object of whichever kind `$child` is: every kind's arm written once.
macro_rules! on_child {
    ($child:expr, $k:ident => $body:expr) => {
        match $child {
            Child::Secret($k) => $body,
            Child::ConfigMap($k) => $body,
            Child::Service($k) => $body,
            Child::NetworkPolicy($k) => $body,
            Child::StatefulSet($k) => $body,
            Child::Deployment($k) => $body,
            Child::Job($k) => $body,
        }
    };
}

impl<'a> Child<'a> {
    pub fn kind(self) -> ChildKind {
        match self {
            Child::Secret(_) => ChildKind::Secret,
            Child::ConfigMap(_) => ChildKind::ConfigMap,
            Child::Service(_) => ChildKind::Service,
            Child::NetworkPolicy(_) => ChildKind::NetworkPolicy,
            Child::StatefulSet(_) => ChildKind::StatefulSet,
            Child::Deployment(_) => ChildKind::Deployment,
            Child::Job(_) => ChildKind::Job,
        }
    }

    pub fn meta(self) -> &'a ObjectMeta {
        on_child!(self, k => k.meta())
    }

    /// The object's kind (as the API server spells it) and name.
    pub fn kind_and_name(self) -> (String, String) {
        fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> String {
            K::kind(&()).into_owned()
        }
        (on_child!(self, k => kind_of(k)), self.meta().name.clone().unwrap_or_default())
    }

    pub fn to_value(self) -> serde_json::Value {
        on_child!(self, k => serde_json::to_value(k)).expect("k8s objects serialize")
    }
}

impl Children {
    /// Every child, in apply order. The one walk over [`Children`]: a new field is a compile error here
    /// (the pattern names every field), and a new [`Child`] kind one in each `match` on it.
    pub fn iter(&self) -> impl Iterator<Item = Child<'_>> {
        let Children { secrets, config_maps, services, network_policies, redis, deployments, simulator_job } = self;
        (secrets.iter().map(Child::Secret))
            .chain(config_maps.iter().map(Child::ConfigMap))
            .chain(services.iter().map(Child::Service))
            .chain(network_policies.iter().map(Child::NetworkPolicy))
            .chain(std::iter::once(Child::StatefulSet(redis)))
            .chain(deployments.iter().map(Child::Deployment))
            .chain(simulator_job.iter().map(Child::Job))
    }

    /// Whether a child of `kind` is named `name` (the prune's question).
    pub fn has(&self, kind: ChildKind, name: &str) -> bool {
        self.iter().any(|c| c.kind() == kind && c.meta().name.as_deref() == Some(name))
    }

    /// Every child as JSON values, in apply order (used by `render` and tests).
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        self.iter().map(Child::to_value).collect()
    }
}

/// The children a store may have had under another spec (Grafana mode, password source, engine, network
/// policy), by kind and name, in the order they are pruned: what the current [`Children`] lack of these
/// goes after a spec change. Redis's StatefulSet is never optional, and old simulator Jobs are deleted by
/// their label once the new one exists (`controller::observe`).
pub fn optional_children(names: &Names) -> Vec<(ChildKind, String)> {
    let user_secrets = Component::ALL.into_iter().filter(|c| c.role().is_some()).map(|c| names.redis_user(c));
    let secrets =
        [names.redis_secret()].into_iter().chain(user_secrets).chain([names.grafana(), names.grafana_datasource()]);
    (secrets.map(|n| (ChildKind::Secret, n)))
        .chain([names.grafana_provisioning(), names.grafana_dashboards()].map(|n| (ChildKind::ConfigMap, n)))
        .chain([(ChildKind::Service, names.grafana())])
        .chain([names.grafana(), names.processor()].map(|n| (ChildKind::Deployment, n)))
        .chain([names.redis(), names.grafana()].map(|n| (ChildKind::NetworkPolicy, n)))
        .collect()
}

impl Children {
    /// `(kind, name)` of every child, in apply order.
    pub fn kinds_and_names(&self) -> Vec<(String, String)> {
        self.iter().map(Child::kind_and_name).collect()
    }
}

/// Builds every child of a validated store.
pub fn build_children(store: &ValidatedStore, inputs: &BuildInputs) -> Children {
    let mut c = Children {
        secrets: Vec::new(),
        config_maps: Vec::new(),
        services: Vec::new(),
        network_policies: network_policy::policies(store, inputs),
        redis: redis::statefulset(store),
        deployments: Vec::new(),
        simulator_job: None,
    };
    if let Some(secret) = redis::password_secret(store, inputs) {
        c.secrets.push(secret);
    }
    c.secrets.push(acl::acl_secret(store, &inputs.credentials));
    c.secrets.extend(acl::user_secrets(store, &inputs.credentials));
    let scripts = redis::scripts_config_map(store, &inputs.scripts);
    let scripts_checksum = checksum_of(&scripts.data);
    c.config_maps.push(scripts);
    c.services.push(redis::headless_service(store));
    c.services.push(redis::client_service(store));
    match store.spec.grafana.effective_mode() {
        GrafanaMode::Managed => {
            c.secrets.push(grafana::admin_secret(store, inputs));
            let provisioning = grafana::provisioning_config_map(store);
            let dashboards = grafana::dashboards_config_map(store);
            let checksum = combine_checksums(&[
                &checksum_of(&provisioning.data),
                &checksum_of(&dashboards.data),
                &inputs.credentials.revision(acl::Role::Grafana),
                &sha256_hex(inputs.grafana_admin_password.as_bytes()),
            ]);
            c.config_maps.push(provisioning);
            c.config_maps.push(dashboards);
            c.services.push(grafana::service(store));
            c.deployments.push(grafana::deployment(store, &checksum));
        }
        GrafanaMode::Sidecar => {
            c.secrets.push(grafana::sidecar_datasource_secret(store, inputs));
            c.config_maps.push(grafana::sidecar_dashboard_config_map(store));
        }
        GrafanaMode::None => {}
    }
    if store.engine() == Engine::Native {
        let checksum = combine_checksums(&[&scripts_checksum, &inputs.credentials.revision(acl::Role::Processor)]);
        c.deployments.push(processor::deployment(store, inputs, &checksum));
    }
    if store.spec.simulator.enabled {
        c.simulator_job = Some(simulator::job(store, inputs));
    }
    c
}

/// `app.kubernetes.io/*` labels of one component; the first three also select its pods.
pub fn labels(store: &ValidatedStore, component: Component) -> BTreeMap<String, String> {
    let mut l = selector_labels(store, component);
    l.insert("app.kubernetes.io/part-of".into(), "popup-store".into());
    l.insert("app.kubernetes.io/managed-by".into(), "popup-operator".into());
    l.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
    l
}

/// Labels of pods: like [`labels`] but without the operator version, so upgrading the operator does not
/// restart Redis (whose data lives in an emptyDir unless storage is set) or Grafana.
pub fn pod_labels(store: &ValidatedStore, component: Component) -> BTreeMap<String, String> {
    let mut l = labels(store, component);
    l.remove("app.kubernetes.io/version");
    l
}

/// The label that names a child's (and a pod's) store: selectors, NetworkPolicies and the controller's
/// watch of the Redis pods find the store by it.
pub const STORE_LABEL: &str = "app.kubernetes.io/instance";

/// The stable subset of [`labels`] used in selectors (selectors are immutable, so no version here).
pub fn selector_labels(store: &ValidatedStore, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "popup-store".to_string()),
        (STORE_LABEL.to_string(), store.names.store.clone()),
        ("app.kubernetes.io/component".to_string(), component.name().to_string()),
    ])
}

/// Metadata of a child: name, namespace, labels, controller ownerReference.
pub fn child_meta(store: &ValidatedStore, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(store.namespace.clone()),
        labels: Some(labels(store, component)),
        owner_references: store.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// A component's pod template: its pod labels, `checksum` (of what its pods read, so a change rolls them)
/// as an annotation, and on top of `spec` what every pod of a store shares: non-root as the component's
/// uid, no API token (no pod of a store talks to Kubernetes), no service-link variables.
pub fn pod_template(
    store: &ValidatedStore,
    component: Component,
    checksum: Option<String>,
    spec: PodSpec,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(store, component)),
            annotations: checksum.map(|c| BTreeMap::from([(CONFIG_CHECKSUM_ANNOTATION.to_string(), c)])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            security_context: Some(pod_security(component.uid().expect("a component with pods"))),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..spec
        }),
    }
}

/// A Deployment of `replicas` pods of `component`, each running `pod` under the store's pod template
/// with `checksum` (of what its pods read, so that a change rolls them).
pub fn deployment_of(
    store: &ValidatedStore,
    name: String,
    component: Component,
    replicas: i32,
    checksum: &str,
    pod: PodSpec,
) -> Deployment {
    Deployment {
        metadata: child_meta(store, name, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: pod_selector(store, component),
            template: pod_template(store, component, Some(checksum.to_string()), pod),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Service `name` of `component`'s pods with one TCP port, `port`, named `port_name` after the
/// container port it targets; `spec` says the rest (type, cluster IP).
pub fn service_of(
    store: &ValidatedStore,
    name: String,
    component: Component,
    port_name: &str,
    port: i32,
    spec: ServiceSpec,
) -> Service {
    Service {
        metadata: child_meta(store, name, component),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(store, component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..spec
        }),
        ..Default::default()
    }
}

/// The selector of a component's pods (a workload's `spec.selector`).
pub fn pod_selector(store: &ValidatedStore, component: Component) -> LabelSelector {
    LabelSelector { match_labels: Some(selector_labels(store, component)), ..Default::default() }
}

/// Pod security context: non-root with a fixed uid, the runtime's default seccomp profile.
pub fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Container security context: no privilege escalation, every capability dropped.
/// `read_only_root` is true where the image writes only to mounted volumes.
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}

/// The container of a `component` that runs the operator's own image (the simulator, the processor): its
/// command line `args`, the variables `env` and then the component's Redis password (`REDIS_PASSWORD`)
/// and info logs, a read-only root.
pub fn operator_container(
    store: &ValidatedStore,
    inputs: &BuildInputs,
    component: Component,
    args: Vec<String>,
    env: Vec<EnvVar>,
    resources: ResourceRequirements,
) -> Container {
    let role = component.role().expect("the operator's image logs in to Redis as its component's user");
    Container {
        name: component.name().into(),
        image: Some(inputs.operator_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(
            env.into_iter()
                .chain([
                    acl::password_env(store, role, "REDIS_PASSWORD"),
                    EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), ..Default::default() },
                ])
                .collect(),
        ),
        resources: Some(resources),
        security_context: Some(container_security(true)),
        ..Default::default()
    }
}

/// The user's resources, or requests/limits sized for a demo.
pub fn resources_or(
    user: &Option<ResourceRequirements>,
    cpu: &str,
    memory: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    user.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity(memory_limit.into()))])),
        ..Default::default()
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash of a ConfigMap's or Secret's data (a sorted map, so the hash is stable).
pub fn checksum_of<T: Serialize>(data: &T) -> String {
    sha256_hex(&serde_json::to_vec(data).expect("data serializes"))
}

pub fn combine_checksums(parts: &[&str]) -> String {
    sha256_hex(parts.join("\n").as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{PopUpStore, PopUpStoreSpec};

    /// A store as the API server would hand it to the controller: defaults applied, uid set.
    pub fn store_with(engine: Engine, edit: impl FnOnce(&mut PopUpStoreSpec)) -> PopUpStore {
        let mut spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({ "engine": engine })).unwrap();
        edit(&mut spec);
        let mut s = PopUpStore::new("shop", spec);
        s.metadata.namespace = Some("sales".into());
        s.metadata.uid = Some("0000-1111".into());
        s
    }

    pub fn inputs() -> BuildInputs {
        BuildInputs {
            redis_password: Some("s3cret-redis".into()),
            grafana_admin_password: "s3cret-grafana".into(),
            credentials: test_credentials(),
            operator_image: "example/popup-operator:test".into(),
            operator_pods: Some(
                network_policy::OperatorPods::new(
                    "popup-system",
                    "app.kubernetes.io/name=popup-operator,app.kubernetes.io/instance=popup",
                )
                .unwrap(),
            ),
            scripts: test_scripts(),
        }
    }

    /// Stand-ins for an engine's script files (the real ones are the sale's, `controller::sale_bridge`):
    /// multi-line text with indentation and blank lines, as scripts have.
    pub fn test_scripts() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("settings.yaml".to_string(), "engine: test\nbatchSize: 7\n".to_string()),
            (
                "script.js".to_string(),
                "#!js name=test\nfunction f() {\n  return \"yes\";\n}\n\n// on: off\n".to_string(),
            ),
        ])
    }

    /// Every user with a password of its own, and the admin's hash.
    pub fn test_credentials() -> acl::Credentials {
        use acl::{Role, password_hash};
        let passwords: BTreeMap<Role, String> = [
            (Role::Operator, "s3cret-operator"),
            (Role::Grafana, "s3cret-grafana-user"),
            (Role::Simulator, "s3cret-simulator"),
            (Role::Processor, "s3cret-processor"),
        ]
        .into_iter()
        .map(|(r, p)| (r, p.to_string()))
        .collect();
        let mut accepted: BTreeMap<Role, Vec<String>> =
            passwords.iter().map(|(r, p)| (*r, vec![password_hash(p)])).collect();
        accepted.insert(Role::Admin, vec![password_hash("s3cret-redis")]);
        acl::Credentials { passwords, accepted, retiring_since: BTreeMap::new() }
    }

    pub fn build(engine: Engine, edit: impl FnOnce(&mut PopUpStoreSpec)) -> (ValidatedStore, Children) {
        let v = validate(&store_with(engine, edit)).unwrap();
        let c = build_children(&v, &inputs());
        (v, c)
    }

    #[test]
    fn defaults_pick_the_image_of_each_engine() {
        for (engine, image) in
            [(Engine::Gears, images::GEARS), (Engine::Triggers, images::TRIGGERS), (Engine::Native, images::NATIVE)]
        {
            let v = validate(&store_with(engine, |_| {})).unwrap();
            assert_eq!(v.redis_image, image);
            assert_eq!(v.grafana_image, images::GRAFANA);
        }
        let v = validate(&store_with(Engine::Gears, |s| s.redis.image = Some("my/redis:1".into()))).unwrap();
        assert_eq!(v.redis_image, "my/redis:1");
    }

    #[test]
    fn validation_names_the_bad_field() {
        type Edit = Box<dyn Fn(&mut PopUpStoreSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.stock = -1), "spec.stock"),
            (Box::new(|s| s.processing.batch_size = 0), "spec.processing.batchSize"),
            (Box::new(|s| s.processing.metrics_interval_seconds = 0), "spec.processing.metricsIntervalSeconds"),
            (Box::new(|s| s.processing.replicas = 17), "spec.processing.replicas"),
            (Box::new(|s| s.redis.image = Some(" ".into())), "spec.redis.image"),
            (Box::new(|s| s.grafana.image = Some(String::new())), "spec.grafana.image"),
            (Box::new(|s| s.simulator.rate_per_second = Some(0)), "spec.simulator.ratePerSecond"),
            (
                Box::new(|s| {
                    s.redis.storage = Some(crate::crd::StorageSpec { size: "lots".into(), storage_class_name: None })
                }),
                "spec.redis.storage.size",
            ),
            (
                Box::new(|s| {
                    s.redis.password_secret_ref = Some(SecretKeyRef { name: String::new(), key: "password".into() })
                }),
                "spec.redis.passwordSecretRef.name",
            ),
        ];
        for (edit, field) in cases {
            let err = validate(&store_with(Engine::Gears, edit)).unwrap_err();
            assert_eq!(err.fields(), [field], "{err}");
            assert!(err.to_string().starts_with(field));
        }
        let mut long = store_with(Engine::Gears, |_| {});
        long.metadata.name = Some("x".repeat(41));
        assert_eq!(validate(&long).unwrap_err().fields(), ["metadata.name"]);
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let store = store_with(Engine::Native, |s| {
            s.stock = -1;
            s.processing.batch_size = 0;
            s.processing.replicas = 99;
            s.grafana.image = Some(String::new());
            s.redis.image = Some("redis 8".into());
            s.simulator.resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), Quantity("lots".into()))])),
                ..Default::default()
            });
            s.redis.password_secret_ref = Some(SecretKeyRef { name: "Not_A_Name".into(), key: "password".into() });
        });
        let err = validate(&store).unwrap_err();
        assert_eq!(
            err.fields(),
            [
                "spec.stock",
                "spec.processing.batchSize",
                "spec.processing.replicas",
                "spec.grafana.image",
                "spec.redis.image",
                "spec.redis.passwordSecretRef.name",
                "spec.simulator.resources.requests",
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("spec.redis.image: must be an image reference without spaces"), "{text}");
        assert!(text.contains("non-negative quantity such as 250m"), "{text}");
    }

    #[test]
    fn cel_rules_of_the_crd_are_checked_too() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let q = |pairs: &[(&str, &str)]| {
            Some(pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect())
        };
        type Edit = Box<dyn Fn(&mut PopUpStoreSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(move |s| {
                    s.redis.resources =
                        Some(ResourceRequirements { limits: q(&[("memory", "-1Gi")]), ..Default::default() })
                }),
                "spec.redis.resources.limits",
            ),
            (
                Box::new(move |s| {
                    s.grafana.resources = Some(ResourceRequirements {
                        requests: q(&[("cpu", "2")]),
                        limits: q(&[("cpu", "1")]),
                        ..Default::default()
                    })
                }),
                "spec.grafana.resources.requests",
            ),
            (
                Box::new(move |s| {
                    s.redis.resources =
                        Some(ResourceRequirements { requests: q(&[("cpux", "1")]), ..Default::default() })
                }),
                "spec.redis.resources",
            ),
            (
                Box::new(|s| {
                    s.redis.storage = Some(crate::crd::StorageSpec {
                        size: "1Gi".into(),
                        storage_class_name: Some("Fast SSD".into()),
                    })
                }),
                "spec.redis.storage.storageClassName",
            ),
            (Box::new(|s| s.grafana.sidecar.label_value = "a b".into()), "spec.grafana.sidecar.labelValue"),
        ];
        for (edit, field) in cases {
            let err = validate(&store_with(Engine::Gears, edit)).unwrap_err();
            assert_eq!(err.fields(), [field], "{err}");
        }
        let mut dotted = store_with(Engine::Gears, |_| {});
        dotted.metadata.name = Some("my.shop".into());
        let err = validate(&dotted).unwrap_err();
        assert_eq!(err.fields(), ["metadata.name"], "{err}");
        assert!(err.to_string().contains("DNS-1035"), "{err}");
        // Integers are quantities too.
        let ok = store_with(Engine::Gears, move |s| {
            s.simulator.resources = Some(ResourceRequirements {
                requests: q(&[("cpu", "1"), ("memory", "64Mi")]),
                limits: q(&[("memory", "64Mi")]),
                ..Default::default()
            })
        });
        validate(&ok).unwrap();
    }

    #[test]
    fn every_child_is_labelled_owned_and_namespaced() {
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let (_, children) = build(engine, |_| {});
            let values = children.to_values();
            assert!(values.len() >= 10, "{engine}: {}", values.len());
            for v in values {
                let what = format!("{engine} {} {}", v["kind"], v["metadata"]["name"]);
                assert_eq!(v["metadata"]["namespace"], "sales", "{what}");
                assert_eq!(v["metadata"]["labels"]["app.kubernetes.io/instance"], "shop", "{what}");
                assert_eq!(v["metadata"]["labels"]["app.kubernetes.io/managed-by"], "popup-operator", "{what}");
                let owner = &v["metadata"]["ownerReferences"][0];
                assert_eq!(owner["kind"], "PopUpStore", "{what}");
                assert_eq!(owner["controller"], true, "{what}");
                assert_eq!(owner["uid"], "0000-1111", "{what}");
                assert_eq!(owner["blockOwnerDeletion"], true, "{what}");
            }
        }
    }

    #[test]
    fn pod_templates_do_not_change_with_the_operator_version() {
        for engine in [Engine::Gears, Engine::Native] {
            let (_, children) = build(engine, |_| {});
            for v in children.to_values() {
                let template = &v["spec"]["template"]["metadata"];
                if template.is_object() {
                    assert!(template["labels"].get("app.kubernetes.io/version").is_none(), "{}", v["metadata"]["name"]);
                    assert_eq!(template["labels"]["app.kubernetes.io/instance"], "shop");
                }
            }
        }
    }

    #[test]
    fn every_container_is_hardened_and_has_requests() {
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let (_, children) = build(engine, |_| {});
            for v in children.to_values() {
                let pod = match v["kind"].as_str().unwrap() {
                    "StatefulSet" | "Deployment" => &v["spec"]["template"]["spec"],
                    "Job" => &v["spec"]["template"]["spec"],
                    _ => continue,
                };
                let what = format!("{engine} {}", v["metadata"]["name"]);
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
                assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{what}");
                assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
                for c in pod["containers"].as_array().unwrap() {
                    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{what}");
                    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL", "{what}");
                    assert!(c["resources"]["requests"]["cpu"].is_string(), "{what}");
                    assert!(c["resources"]["requests"]["memory"].is_string(), "{what}");
                }
            }
        }
    }

    #[test]
    fn no_secret_value_outside_secrets() {
        let (_, children) = build(Engine::Native, |_| {});
        for v in children.to_values() {
            if v["kind"] == "Secret" {
                continue;
            }
            let text = v.to_string();
            assert!(!text.contains("s3cret"), "{} {} leaks a password", v["kind"], v["metadata"]["name"]);
        }
    }

    #[test]
    fn processor_only_for_native_and_optional_parts_follow_the_spec() {
        let names = |c: &Children| c.deployments.iter().map(|d| d.metadata.name.clone().unwrap()).collect::<Vec<_>>();
        let (_, c) = build(Engine::Gears, |_| {});
        assert_eq!(names(&c), ["shop-grafana"]);
        let (_, c) = build(Engine::Native, |_| {});
        assert_eq!(names(&c), ["shop-grafana", "shop-processor"]);
        let (_, c) = build(Engine::Native, |s| {
            s.grafana.enabled = false;
            s.simulator.enabled = false;
        });
        assert_eq!(names(&c), ["shop-processor"]);
        assert!(c.simulator_job.is_none());
        assert!(c.config_maps.iter().all(|m| !m.metadata.name.as_ref().unwrap().contains("grafana")));
        let secrets: Vec<&str> = c.secrets.iter().map(|s| s.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(secrets, ["shop-redis", "shop-redis-acl", "shop-redis-processor"], "no Grafana or simulator user");
        assert!(c.services.iter().all(|s| !s.metadata.name.as_ref().unwrap().contains("grafana")));
    }

    #[test]
    fn user_password_secret_is_referenced_not_generated() {
        let (v, c) = build(Engine::Triggers, |s| {
            s.redis.password_secret_ref = Some(SecretKeyRef { name: "mine".into(), key: "redis-pass".into() })
        });
        assert!(c.secrets.iter().all(|s| s.metadata.name.as_deref() != Some("shop-redis")));
        assert_eq!(v.password.secret_name(), "mine");
        assert_eq!(v.password.key(), "redis-pass");
        // Redis reads no password at all: the ACL file has the hash of the user's password.
        let sts = serde_json::to_value(c.redis).unwrap();
        assert!(sts["spec"]["template"]["spec"]["containers"][0].get("env").is_none(), "{sts}");
    }

    #[test]
    fn kinds_and_names_come_from_the_types_and_match_the_rendered_objects() {
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let (_, c) = build(engine, |_| {});
            let rendered: Vec<(String, String)> = c
                .to_values()
                .iter()
                .map(|v| (v["kind"].as_str().unwrap().into(), v["metadata"]["name"].as_str().unwrap().into()))
                .collect();
            assert_eq!(c.kinds_and_names(), rendered, "{engine}");
            assert!(rendered.contains(&("StatefulSet".into(), "shop-redis".into())), "{engine}: Redis always");
        }
    }

    #[test]
    fn every_optional_child_is_wanted_by_some_spec_and_dropped_by_another() {
        let names = Names::new("shop");
        let optional = optional_children(&names);
        let specs: Vec<Children> = vec![
            build(Engine::Native, |_| {}).1,
            build(Engine::Gears, |s| {
                s.grafana.mode = GrafanaMode::Sidecar;
                s.redis.password_secret_ref = Some(SecretKeyRef { name: "mine".into(), key: "p".into() });
                s.simulator.enabled = false;
                s.network_policy.enabled = false;
            })
            .1,
        ];
        for (kind, name) in &optional {
            assert!(specs.iter().any(|c| c.has(*kind, name)), "{kind:?} {name} is built by some spec");
        }
        let dropped = &specs[1];
        assert!(!dropped.has(ChildKind::Deployment, &names.grafana()));
        assert!(!dropped.has(ChildKind::Secret, &names.redis_secret()));
        assert!(specs[0].has(ChildKind::Secret, &names.redis_secret()), "has looks at the kind and the name");
        assert!(!specs[0].has(ChildKind::ConfigMap, &names.redis_secret()));
    }

    #[test]
    fn rendering_without_uid_has_no_owner_reference() {
        let mut s = store_with(Engine::Gears, |_| {});
        s.metadata.uid = None;
        let v = validate(&s).unwrap();
        assert!(v.owner.is_none());
        for obj in build_children(&v, &inputs()).to_values() {
            assert!(obj["metadata"].get("ownerReferences").is_none());
        }
    }
}
