//! The `PopUpStore` custom resource: spec, status, schema defaults and CEL rules.
//!
//! Everything a user can set lives here, with its default and its limits, so the API server rejects a bad
//! value before the operator ever sees it. `popup-operator crd` prints the CRD generated from these types.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of every resource this operator defines.
pub const GROUP: &str = "popup.dev";
/// Longest `metadata.name` a store may have: child names add suffixes (`-simulator-<hash>`, `-grafana`),
/// and pod names derived from them must stay within the 63-character label limit.
pub const MAX_NAME_LEN: usize = 40;

/// A pop-up store flash sale: Redis with a processing engine, a Grafana dashboard and a load simulator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "popup.dev",
    version = "v1alpha1",
    kind = "PopUpStore",
    plural = "popupstores",
    shortname = "popup",
    namespaced,
    status = "PopUpStoreStatus",
    derive = "PartialEq",
    cel,
    // No fieldPath on the name rule: the root schema has no metadata.name property, and the API
    // server refuses a fieldPath it cannot resolve.
    doc = "A pop-up store flash sale: Redis Streams, a processing engine, Grafana and a load simulator",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.sale.available"),
    printcolumn(name = "Completed", type_ = "integer", json_path = ".status.sale.completed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: child objects add suffixes such as -simulator-<hash>").reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct PopUpStoreSpec {
    /// Units of product on sale when the simulator starts (the `product` key). Default 10000.
    #[serde(default = "default_stock")]
    #[schemars(range(min = 0))]
    pub stock: i64,

    /// How orders are processed: `gears` (RedisGears 1 Python, redismod image), `triggers` (RedisGears 2
    /// JavaScript, redis-stack-server 7.4) or `native` (the operator's own processor, any Redis with
    /// TimeSeries such as Redis 8). Cannot change after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.engine cannot change after creation: the sale's data and scripts belong to one engine; create a new PopUpStore instead"))]
    pub engine: Engine,

    /// The Redis server that holds the sale.
    #[serde(default)]
    pub redis: RedisSpec,

    /// How the engine processes orders and samples metrics.
    #[serde(default)]
    pub processing: ProcessingSpec,

    /// The Grafana dashboard that shows the sale live.
    #[serde(default)]
    pub grafana: GrafanaSpec,

    /// The load generator that plays the customers.
    #[serde(default)]
    pub simulator: SimulatorSpec,
}

fn default_stock() -> i64 {
    10_000
}

/// The processing engine. Each one implements the same sale contract (see `docs/engines.md`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// RedisGears 1.2 Python scripts (the original demo); needs the `redislabs/redismod` image (amd64 only).
    #[default]
    Gears,
    /// RedisGears 2 JavaScript stream triggers; needs `redis/redis-stack-server` 7.x.
    Triggers,
    /// The operator's own Rust processor, run as a Deployment; needs Redis with TimeSeries (Redis 8).
    Native,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Gears => "gears",
            Engine::Triggers => "triggers",
            Engine::Native => "native",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Redis server settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storage) == has(oldSelf.storage)").message("spec.redis.storage cannot be added or removed after creation: a StatefulSet's volume claims are immutable; create a new PopUpStore instead"))]
pub struct RedisSpec {
    /// Container image. Default depends on the engine: `redislabs/redismod` for gears,
    /// `redis/redis-stack-server` 7.4 for triggers, `redis` 8 for native.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.redis.image must not be empty: omit it to use the engine's default image"))]
    pub image: Option<String>,

    /// Compute resources of the Redis container. Default: requests 100m CPU / 128Mi memory, limit 512Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent storage for Redis data. Without it Redis keeps its data in an emptyDir, which survives
    /// container restarts but not the pod being rescheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// A Secret of yours holding the Redis password. Without it the operator generates a random
    /// password into a Secret named `<store>-redis` that it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A persistent volume for Redis data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.redis.storage cannot change after creation: a StatefulSet's volume claims are immutable; create a new PopUpStore instead"))]
pub struct StorageSpec {
    /// Volume size, a Kubernetes quantity such as `1Gi`.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.redis.storage.size must be a positive quantity such as 1Gi"))]
    pub size: String,

    /// Storage class of the volume; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A key in a Secret in the store's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret. Default `password`.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// Order processing settings, shared by every engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingSpec {
    /// Orders completed per batch. Default 3, as in the original demo.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,

    /// Seconds between two samples of the queue-length time series. Default 5.
    #[serde(default = "default_metrics_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub metrics_interval_seconds: u32,

    /// Processor pods for the `native` engine (ignored by the others). Default 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: u32,
}

impl Default for ProcessingSpec {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            metrics_interval_seconds: default_metrics_interval(),
            replicas: default_one(),
        }
    }
}

fn default_batch_size() -> u32 {
    3
}
fn default_metrics_interval() -> u32 {
    5
}
fn default_one() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

/// The Grafana dashboard that shows the sale.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Shorthand: `false` means `mode: none`. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// `managed`: the operator deploys a Grafana for this store. `sidecar`: no Grafana is deployed;
    /// the datasource (a Secret) and the dashboard (a ConfigMap) are labelled for the sidecar of a
    /// Grafana you already run (the Grafana Helm chart's). `none`: no dashboard at all. Default managed.
    #[serde(default)]
    pub mode: GrafanaMode,

    /// Grafana image (11.5 or newer, for `GF_PLUGINS_PREINSTALL_SYNC`); managed mode. Default a pinned 12.x release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.grafana.image must not be empty: omit it to use the default image"))]
    pub image: Option<String>,

    /// How the Grafana Service is exposed (managed mode). Default ClusterIP (reach it with `kubectl port-forward`).
    #[serde(default)]
    pub service_type: ServiceType,

    /// Compute resources of the Grafana container. Default: requests 50m CPU / 128Mi memory, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Labels the Grafana sidecar looks for (sidecar mode).
    #[serde(default)]
    pub sidecar: SidecarSpec,
}

impl Default for GrafanaSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: GrafanaMode::default(),
            image: None,
            service_type: ServiceType::default(),
            resources: None,
            sidecar: SidecarSpec::default(),
        }
    }
}

impl GrafanaSpec {
    /// The mode in force (`enabled: false` wins).
    pub fn effective_mode(&self) -> GrafanaMode {
        if self.enabled { self.mode } else { GrafanaMode::None }
    }
}

/// Where the dashboard lives.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrafanaMode {
    /// The operator deploys and provisions a Grafana for the store.
    #[default]
    Managed,
    /// The operator emits the datasource and dashboard labelled for an existing Grafana's sidecar.
    Sidecar,
    /// No dashboard.
    None,
}

/// Labels of the Grafana Helm chart's sidecar (`sidecar.datasources.label`, `sidecar.dashboards.label`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Label on the datasource Secret. Default `grafana_datasource`.
    #[serde(default = "default_datasource_label")]
    #[schemars(length(min = 1, max = 63))]
    pub datasource_label: String,
    /// Label on the dashboard ConfigMap. Default `grafana_dashboard`.
    #[serde(default = "default_dashboard_label")]
    #[schemars(length(min = 1, max = 63))]
    pub dashboard_label: String,
    /// Value of both labels. Default `"1"`.
    #[serde(default = "default_label_value")]
    #[schemars(length(max = 63))]
    pub label_value: String,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        Self {
            datasource_label: default_datasource_label(),
            dashboard_label: default_dashboard_label(),
            label_value: default_label_value(),
        }
    }
}

fn default_datasource_label() -> String {
    "grafana_datasource".into()
}
fn default_dashboard_label() -> String {
    "grafana_dashboard".into()
}
fn default_label_value() -> String {
    "1".into()
}

/// Kubernetes Service types the Grafana Service may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The load generator, run as a Kubernetes Job. Changing any of these settings starts a new Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulatorSpec {
    /// Run the simulator. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Customers to send; 0 means "until the product is sold out". Default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub customers: u64,

    /// A new customer arrives every random 0..maxArrivalMillis ms. Default 100, as in the original demo.
    #[serde(default = "default_max_arrival")]
    #[schemars(range(min = 0, max = 600000))]
    pub max_arrival_millis: u32,

    /// Each customer orders random 0..maxOrderDelayMillis ms after arriving. Default 1000.
    #[serde(default = "default_max_order_delay")]
    #[schemars(range(min = 0, max = 600000))]
    pub max_order_delay_millis: u32,

    /// A fixed arrival rate in customers per second, instead of random arrivals (flash-sale load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub rate_per_second: Option<u32>,

    /// Compute resources of the simulator container. Default: requests 50m CPU / 32Mi memory, limit 128Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for SimulatorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            customers: 0,
            max_arrival_millis: default_max_arrival(),
            max_order_delay_millis: default_max_order_delay(),
            rate_per_second: None,
            resources: None,
        }
    }
}

fn default_max_arrival() -> u32 {
    100
}
fn default_max_order_delay() -> u32 {
    1000
}

/// What the operator observed, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PopUpStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// RedisReady, ScriptsLoaded, GrafanaReady, SimulationComplete and the summary Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Where to reach the store's services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// The sale as Redis reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<SaleStatus>,

    /// Name of the current simulator Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator_job: Option<String>,
}

/// In-cluster addresses of the store's services, plus how to reach Grafana from a workstation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Redis address, `host:port`.
    pub redis: String,
    /// Grafana URL inside the cluster, when Grafana is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<String>,
    /// A command that makes Grafana reachable on http://localhost:3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana_port_forward: Option<String>,
}

/// Sale numbers read from Redis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaleStatus {
    /// Units of product left (`GET product`); absent before the simulator has set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// Customers waiting for their order (`XLEN queue:customers`).
    pub customers_waiting: u64,
    /// Orders not processed yet (`XLEN queue:orders`).
    pub orders_queued: u64,
    /// Orders completed (`XLEN queue:complete`).
    pub completed: u64,
    /// Orders rejected: sold out or a second order of one customer (`XLEN queue:rejected`).
    pub rejected: u64,
}

/// The CRD as YAML, exactly what `popup-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    // The same YAML-1.1-safe writer as `render`: kubectl and helm read this file with go-yaml.
    crate::render::yaml::to_yaml(&serde_json::to_value(PopUpStore::crd()).expect("the CRD serializes"))
}

/// Reads every `PopUpStore` document of a YAML file. Documents of other kinds (a Secret next to the
/// store, say) are returned as `(index, "apiVersion kind")` so the caller can mention them.
pub fn parse_stores(text: &str) -> Result<(Vec<PopUpStore>, Vec<String>), String> {
    let mut stores = Vec::new();
    let mut others = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
        if kind != "PopUpStore" {
            others.push(format!("document {}: {api_version} {kind}", i + 1));
            continue;
        }
        if api_version != "popup.dev/v1alpha1" {
            return Err(format!(
                "document {}: PopUpStore apiVersion must be popup.dev/v1alpha1, got {api_version:?}",
                i + 1
            ));
        }
        let store: PopUpStore = serde_yaml::from_value(value).map_err(|e| format!("document {}: {e}", i + 1))?;
        stores.push(store);
    }
    if stores.is_empty() {
        return Err("no PopUpStore (apiVersion popup.dev/v1alpha1) found".into());
    }
    Ok((stores, others))
}
