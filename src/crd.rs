//! The `PopUpStore` custom resource: spec, status, schema defaults and CEL rules.
//!
//! Everything a user can set lives here, with its default and its limits, so the API server rejects a bad
//! value before the operator ever sees it. `popup-operator crd` prints the CRD generated from these types.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::limits::{self, MAX_NAME_LEN};

/// API group of every resource this operator defines.
pub const GROUP: &str = "popup.dev";
// Regular expressions of the CEL rules (RE2; `[.]` instead of `\.` keeps them free of escapes).
/// A DNS-1035 label: what a Service name must be. Store names become Service name prefixes.
pub const DNS_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: names of Secrets, StorageClasses.
pub const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key in a Secret's data.
pub const SECRET_KEY: &str = "^[-._a-zA-Z0-9]+$";
/// A label key: an optional DNS subdomain prefix and `/`, then a name.
pub const LABEL_KEY: &str =
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
/// A label value (may be empty).
pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// An image reference: anything without whitespace (the runtime resolves the rest).
pub const IMAGE: &str = "^[^[:space:]]+$";

fn image_rule(field: &str, hint: &str) -> Rule {
    Rule::new(format!("self.matches('{IMAGE}')"))
        .message(format!("{field} must be an image reference without spaces, such as redis:8.2.3; {hint}").as_str())
}

fn dns_subdomain_rule(field: &str, what: &str) -> Rule {
    Rule::new(format!("self.matches('{DNS_SUBDOMAIN}')")).message(
        format!("{field} must name {what}: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit").as_str(),
    )
}

fn label_key_rule(field: &str) -> Rule {
    Rule::new(format!("self.matches('{LABEL_KEY}')")).message(
        format!("{field} must be a label key such as grafana_dashboard or example.com/dashboard: letters, digits, '-', '_' and '.', starting and ending with a letter or digit").as_str(),
    )
}

// Resources: a CRD takes any string or integer where a Pod wants a quantity, so without these rules a
// typo would pass admission and only the StatefulSet, Deployment or Job would be refused later.
// `string(v)` because each value is an int-or-string.

/// Most resource names a container can ask for at once; bounds what the API server's cost estimate of
/// the rules below assumes.
const MAX_RESOURCE_NAMES: u32 = 16;

/// `ResourceRequirements` with the bounds the CEL rules need: at most [`MAX_RESOURCE_NAMES`] requests
/// and limits, names and values of sane length (without them the API server refuses the CRD for the
/// rules' cost), and the rules themselves, their messages naming `field`.
fn bounded_resources(generator: &mut schemars::SchemaGenerator, field: &str) -> schemars::Schema {
    use schemars::JsonSchema;
    let mut schema = ResourceRequirements::json_schema(generator);
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for map in ["requests", "limits"] {
            if let Some(m) = props.get_mut(map).and_then(|m| m.as_object_mut()) {
                m.insert("maxProperties".into(), MAX_RESOURCE_NAMES.into());
                m.insert("propertyNames".into(), serde_json::json!({"maxLength": 253}));
                if let Some(v) = m.get_mut("additionalProperties").and_then(|v| v.as_object_mut()) {
                    v.insert("maxLength".into(), 64.into());
                }
            }
        }
        if let Some(c) = props.get_mut("claims").and_then(|c| c.as_object_mut()) {
            c.insert("maxItems".into(), MAX_RESOURCE_NAMES.into());
        }
    }
    schema.insert("nullable".into(), true.into());
    for rule in [
        no_claims_rule(field),
        quantities_rule(field, "requests"),
        quantities_rule(field, "limits"),
        resource_names_rule(field),
        requests_within_limits_rule(field),
    ] {
        kube::core::validate(&mut schema, rule).expect("a CEL rule serializes");
    }
    schema
}

// One per field, as `schema_with` takes a function of the generator only.
fn redis_resources(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_resources(generator, "spec.redis.resources")
}
fn grafana_resources(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_resources(generator, "spec.grafana.resources")
}
fn simulator_resources(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_resources(generator, "spec.simulator.resources")
}

fn no_claims_rule(field: &str) -> Rule {
    Rule::new("!has(self.claims) || size(self.claims) == 0").field_path(".claims").message(
        format!("{field}.claims is not supported: the store's pods declare no resource claims; remove it").as_str(),
    )
}

fn quantities_rule(field: &str, map: &str) -> Rule {
    Rule::new(format!(
        "!has(self.{map}) || self.{map}.all(k, isQuantity(string(self.{map}[k])) && !quantity(string(self.{map}[k])).isLessThan(quantity('0')))"
    ))
    .field_path(format!(".{map}"))
    .message(format!("{field}.{map}: every value must be a non-negative quantity such as 250m, 1 or 128Mi").as_str())
}

fn resource_names_rule(field: &str) -> Rule {
    let known = |map: &str| {
        format!(
            "(!has(self.{map}) || self.{map}.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-') || k.contains('/')))"
        )
    };
    Rule::new(format!("{} && {}", known("requests"), known("limits"))).message(
        format!("{field}: resource names must be cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name such as example.com/gpu").as_str(),
    )
}

fn requests_within_limits_rule(field: &str) -> Rule {
    let q = |v: &str| format!("quantity(string({v}))");
    let ok = |v: &str| format!("isQuantity(string({v}))");
    let (r, l) = ("self.requests[k]", "self.limits[k]");
    Rule::new(format!(
        "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || !{} || !{} || {}.compareTo({}) <= 0)",
        ok(r), ok(l), q(r), q(l)
    ))
    .field_path(".requests")
    .message(format!("{field}.requests: a request must not exceed its limit (the pod would be refused)").as_str())
}

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
    validation = Rule::new(format!("size(self.metadata.name) <= {MAX_NAME_LEN}")).message(format!("metadata.name must be at most {MAX_NAME_LEN} characters: child objects add suffixes such as -simulator-<hash>").as_str()).reason(Reason::FieldValueInvalid),
    validation = Rule::new(format!("self.metadata.name.matches('{DNS_LABEL}')")).message("metadata.name must start with a lowercase letter and hold only lowercase letters, digits and '-' (a DNS-1035 label, no dots): the store's Services are named after it").reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct PopUpStoreSpec {
    /// Units of product on sale when the simulator starts (the `product` key). Default 10000.
    #[serde(default = "default_stock")]
    #[schemars(range(min = limits::STOCK.min, max = limits::STOCK.max))]
    pub stock: i64,

    /// The sale's run. Raise it (any other value) to start a fresh sale: the operator deletes the
    /// sale's keys, sets `product` to the stock and starts a new simulator Job. The way to a new sale
    /// after a lost one (condition `SaleIntact` False, reason `SaleLost`); changing the stock or a
    /// simulator setting starts a fresh sale too. Default 0.
    #[serde(default)]
    #[schemars(range(min = limits::SALE_RUN.min, max = limits::SALE_RUN.max))]
    pub sale_run: u32,

    /// How orders are processed: `gears` (RedisGears 1 Python, redismod image), `triggers` (RedisGears 2
    /// JavaScript, redis-stack-server 7.4) or `native` (the operator's own processor, any Redis with
    /// TimeSeries such as Redis 8). Cannot change after creation.
    #[serde(default = "default_engine")]
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

    /// Who may connect to the store's pods (NetworkPolicies).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

fn default_stock() -> i64 {
    limits::DEFAULT_STOCK
}

/// The processing engine, the sale's own type: one type for which engine a store and its Redis run. Each
/// one implements the same sale contract (see `docs/engines.md`); each one's Redis image:
/// `render::default_redis_image`.
pub use crate::sale::EngineKind as Engine;

/// A store without `spec.engine` runs the original demo's engine.
fn default_engine() -> Engine {
    Engine::Gears
}

/// Redis server settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storage) == has(oldSelf.storage)").message("spec.redis.storage cannot be added or removed after creation: a StatefulSet's volume claims are immutable; create a new PopUpStore instead"))]
pub struct RedisSpec {
    /// Container image. Default depends on the engine: `redislabs/redismod` for gears,
    /// `redis/redis-stack-server` 7.4 for triggers, `redis` 8 for native.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = image_rule("spec.redis.image", "omit it to use the engine's default image"))]
    pub image: Option<String>,

    /// Compute resources of the Redis container. Default: requests 100m CPU / 128Mi memory, limit 512Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "redis_resources")]
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
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.redis.storage.size must be a positive quantity such as 1Gi"))]
    pub size: String,

    /// Storage class of the volume; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = dns_subdomain_rule("spec.redis.storage.storageClassName", "a StorageClass"))]
    pub storage_class_name: Option<String>,
}

/// A key in a Secret in the store's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain_rule("spec.redis.passwordSecretRef.name", "a Secret in the store's namespace"))]
    pub name: String,
    /// Key inside the Secret. Default `password`.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{SECRET_KEY}')")).message("spec.redis.passwordSecretRef.key must be a Secret key: letters, digits, '-', '_' and '.' only, such as password"))]
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
    #[schemars(range(min = limits::BATCH_SIZE.min, max = limits::BATCH_SIZE.max))]
    pub batch_size: u32,

    /// Seconds between two samples of the queue-length time series. Default 5.
    #[serde(default = "default_metrics_interval")]
    #[schemars(range(min = limits::METRICS_INTERVAL_SECONDS.min, max = limits::METRICS_INTERVAL_SECONDS.max))]
    pub metrics_interval_seconds: u32,

    /// Processor pods for the `native` engine (ignored by the others). Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = limits::REPLICAS.min, max = limits::REPLICAS.max))]
    pub replicas: u32,
}

impl Default for ProcessingSpec {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            metrics_interval_seconds: default_metrics_interval(),
            replicas: default_replicas(),
        }
    }
}

fn default_batch_size() -> u32 {
    limits::DEFAULT_BATCH_SIZE
}
fn default_metrics_interval() -> u32 {
    limits::DEFAULT_METRICS_INTERVAL_SECONDS
}
fn default_replicas() -> u32 {
    limits::DEFAULT_REPLICAS
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

    /// Grafana image (12.1 or newer, for `GF_PLUGINS_PREINSTALL_SYNC`); managed mode. Default a pinned 12.x release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = image_rule("spec.grafana.image", "omit it to use the default image"))]
    pub image: Option<String>,

    /// How the Grafana Service is exposed (managed mode). Default ClusterIP (reach it with `kubectl port-forward`).
    #[serde(default)]
    pub service_type: ServiceType,

    /// Let anyone who reaches Grafana see the dashboard without logging in, as an anonymous Viewer
    /// (managed mode). A Viewer can send any query through the datasource, so anyone could then run
    /// expensive reads on the store's Redis. Default false: log in as `admin` (password in the Secret
    /// `<store>-grafana`).
    #[serde(default)]
    pub anonymous_viewers: bool,

    /// Compute resources of the Grafana container. Default: requests 50m CPU / 128Mi memory, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "grafana_resources")]
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
            anonymous_viewers: false,
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Label on the datasource Secret. Default `grafana_datasource`.
    #[serde(default = "default_datasource_label")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = label_key_rule("spec.grafana.sidecar.datasourceLabel"))]
    pub datasource_label: String,
    /// Label on the dashboard ConfigMap. Default `grafana_dashboard`.
    #[serde(default = "default_dashboard_label")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = label_key_rule("spec.grafana.sidecar.dashboardLabel"))]
    pub dashboard_label: String,
    /// Value of both labels. Default `"1"`.
    #[serde(default = "default_label_value")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(format!("self.matches('{LABEL_VALUE}')")).message("spec.grafana.sidecar.labelValue must be a label value: empty, or letters, digits, '-', '_' and '.' starting and ending with a letter or digit, such as \"1\""))]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulatorSpec {
    /// Run the simulator. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Customers to send; 0 means "until the product is sold out". Default 0.
    #[serde(default = "default_customers")]
    #[schemars(range(min = limits::CUSTOMERS.min, max = limits::CUSTOMERS.max))]
    pub customers: u64,

    /// A new customer arrives every random 0..maxArrivalMillis ms. Default 100, as in the original demo.
    #[serde(default = "default_max_arrival")]
    #[schemars(range(min = limits::DELAY_MILLIS.min, max = limits::DELAY_MILLIS.max))]
    pub max_arrival_millis: u32,

    /// Each customer orders random 0..maxOrderDelayMillis ms after arriving. Default 1000.
    #[serde(default = "default_max_order_delay")]
    #[schemars(range(min = limits::DELAY_MILLIS.min, max = limits::DELAY_MILLIS.max))]
    pub max_order_delay_millis: u32,

    /// A fixed arrival rate in customers per second, instead of random arrivals (flash-sale load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::RATE_PER_SECOND.min, max = limits::RATE_PER_SECOND.max))]
    pub rate_per_second: Option<u32>,

    /// Compute resources of the simulator container. Default: requests 50m CPU / 32Mi memory, limit 128Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "simulator_resources")]
    pub resources: Option<ResourceRequirements>,

    /// Hold the customers back: the operator starts the sale (stock set, queues empty) but creates the
    /// simulator Job only once this is false again, so that a viewer can watch from the first
    /// customer on (hack/demo.sh does this). A Job that already runs goes on. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

impl Default for SimulatorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            customers: default_customers(),
            max_arrival_millis: default_max_arrival(),
            max_order_delay_millis: default_max_order_delay(),
            rate_per_second: None,
            resources: None,
            hold: false,
        }
    }
}

fn default_customers() -> u64 {
    limits::DEFAULT_CUSTOMERS
}
fn default_max_arrival() -> u32 {
    limits::DEFAULT_MAX_ARRIVAL_MILLIS
}
fn default_max_order_delay() -> u32 {
    limits::DEFAULT_MAX_ORDER_DELAY_MILLIS
}

/// The store's NetworkPolicies. They only take effect on a cluster whose network plugin enforces
/// NetworkPolicies (Calico, Cilium, ...); elsewhere they are accepted and ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the store's NetworkPolicies: Redis (port 6379) accepts connections only from this store's
    /// own pods and from the operator's pods; Grafana (port 3000) from anywhere. Outgoing traffic is not
    /// limited. Default true; `false` deletes them.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
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

    /// The sale the operator started in Redis (as its marker there, `popup:sale`, records it). Kept
    /// while Redis no longer holds it, so that the loss is reported until a fresh sale starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_sale: Option<StartedSale>,
}

/// A sale the operator started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartedSale {
    /// The sale's id: a hash of the settings that define it (`stock`, `saleRun`, the simulator's),
    /// also the suffix of its simulator Job's name.
    pub id: String,
    /// Random, new at each start: tells a Redis that holds an earlier start of the same id apart.
    pub nonce: String,
    /// Units put on sale.
    pub stock: i64,
    /// When (RFC 3339).
    pub started_at: String,
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
    /// Orders rejected: sold out, a second order of one customer, an unknown customer or an invalid
    /// order (`XLEN queue:rejected`).
    pub rejected: u64,
}

/// The CRD as YAML, exactly what `popup-operator crd` prints and `crds/` holds.
/// The first line of the CRD file: it says where the file comes from. `popup-operator crd` prints it
/// too, so that the file is exactly the command's output.
pub const CRD_FILE_HEADER: &str =
    "# Generated from the Rust types in src/crd.rs by `bash hack/regen.sh`: edit those, not this file.\n";

/// The CRD file (`crds/popupstores.popup.dev.yaml`, and the chart's copy): the header, then the YAML.
pub fn crd_file() -> String {
    format!("{CRD_FILE_HEADER}{}", crd_yaml())
}

pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    // The same YAML-1.1-safe writer as `render`: kubectl and helm read this file with go-yaml.
    crate::yaml::to_yaml(&serde_json::to_value(PopUpStore::crd()).expect("the CRD serializes"))
}

/// The schema the API server checks a store against (`openAPIV3Schema` of the CRD), as JSON.
pub fn schema_json() -> serde_json::Value {
    use kube::CustomResourceExt;
    let crd = PopUpStore::crd();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("the derived CRD has a schema")).expect("the schema serializes")
}

/// The CRD's CEL rules (`x-kubernetes-validations`), compiled once. Generating the CRD and compiling
/// its rules for every check was most of a reconcile's CPU at rest (docs/benchmarks.md). Compiling walks
/// the whole schema deeper than a runtime worker's stack allows, so it runs once on a thread of its own.
fn cel_rules() -> &'static kube::core::cel::CompiledSchema {
    static RULES: std::sync::LazyLock<kube::core::cel::CompiledSchema> = std::sync::LazyLock::new(|| {
        let compile = || kube::core::cel::compile_schema(&schema_json());
        let compiled = std::thread::Builder::new().stack_size(64 << 20).spawn(compile).expect("a thread").join();
        compiled.expect("the CRD's CEL rules compile")
    });
    &RULES
}

/// What the API server's CEL rules say of `object` (a store as JSON): empty when they all hold. In the
/// order of a walk of the schema by field name (the compiled rules keep their fields in a hash map, so
/// they are sorted here: a status message must not change with the thread that wrote it).
pub fn validate_cel(object: &serde_json::Value) -> Vec<kube::core::cel::ValidationError> {
    let mut errors =
        kube::core::cel::validate_compiled(cel_rules(), object, None).err().map(|e| e.into_vec()).unwrap_or_default();
    errors.sort_by(|a, b| a.field_path.cmp(&b.field_path));
    errors
}

/// One problem of a document, with the field's path (as the API server writes it) and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The CEL rules' messages already start with their field.
        if self.message.starts_with(&self.field) && !self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem the API server would find in a store document: types, enums, bounds and unknown fields
/// from the schema, then the CEL rules on the fields that passed. Empty means the document is admissible.
pub fn check_store_document(doc: &serde_json::Value) -> Vec<FieldProblem> {
    let schema = schema_json();
    let mut problems = Vec::new();
    let mut pruned = doc.clone();
    if let (Some(spec), Some(spec_schema)) = (pruned.get_mut("spec"), schema.pointer("/properties/spec")) {
        check_schema(spec, spec_schema, "spec", &mut problems);
    }
    // CEL rules only see well-typed values (as on the API server, where schema errors come first);
    // the badly typed ones were removed from `pruned`, so the other fields' rules still run.
    for e in validate_cel(&pruned) {
        let field = if e.field_path.is_empty() { "metadata.name".to_string() } else { e.field_path.clone() };
        if !problems.iter().any(|p| p.field == field) {
            problems.push(FieldProblem { field, message: e.message });
        }
    }
    problems
}

/// Checks `value` against a structural schema node, recording every problem under `path`. A value that
/// fails is replaced by null (then removed by the caller of its parent), so later checks skip it.
fn check_schema(value: &mut serde_json::Value, schema: &serde_json::Value, path: &str, out: &mut Vec<FieldProblem>) {
    use serde_json::Value;
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            out.push(FieldProblem {
                field: path.to_string(),
                message: "must not be null: omit the field to use its default".into(),
            });
        }
        return;
    }
    if let Some(message) = type_problem(value, schema).or_else(|| value_problem(value, schema)) {
        out.push(FieldProblem { field: path.to_string(), message });
        *value = Value::Null;
        return;
    }
    match value {
        Value::Object(map) => check_object(map, schema, path, out),
        Value::Array(items) => {
            if let Some(max) = schema_bound(schema, "maxItems").filter(|max| items.len() as f64 > *max) {
                out.push(FieldProblem {
                    field: path.to_string(),
                    message: format!("must have at most {max} items, got {}", items.len()),
                });
            }
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    check_schema(v, sub, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn schema_bound(schema: &serde_json::Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(serde_json::Value::as_f64)
}

/// The value is not of the node's type (`x-kubernetes-int-or-string` takes either).
fn type_problem(value: &serde_json::Value, schema: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let ty = schema.get("type").and_then(Value::as_str);
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let type_ok = match (ty, value) {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (None, _) => true,
        _ => false,
    };
    if type_ok {
        return None;
    }
    let got = match value {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
        Value::Null => "null",
    };
    let want = if int_or_string { "an integer or a string" } else { ty.unwrap_or("another type") };
    Some(format!("must be {} (got {got})", article(want)))
}

/// The value is of the right type but not one the node allows: its enum, its range, its length.
fn value_problem(value: &serde_json::Value, schema: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.as_str().map_or(a.to_string(), str::to_string)).collect();
        return Some(format!("unknown value {value}, expected one of {}", list.join(", ")));
    }
    let bound = |k: &str| schema_bound(schema, k);
    let mut bad = None;
    if let Some(n) = value.as_f64() {
        match (bound("minimum"), bound("maximum")) {
            (Some(min), Some(max)) if n < min || n > max => {
                bad = Some(format!("must be between {min} and {max}, got {n}"))
            }
            (Some(min), _) if n < min => bad = Some(format!("must be {min} or more, got {n}")),
            (_, Some(max)) if n > max => bad = Some(format!("must be {max} or less, got {n}")),
            _ => {}
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as f64;
        if bound("minLength").is_some_and(|min| len < min) {
            bad = Some(if s.is_empty() {
                "must not be empty".into()
            } else {
                format!("must be at least {} characters", bound("minLength").unwrap())
            });
        } else if let Some(max) = bound("maxLength").filter(|max| len > *max) {
            bad = Some(format!("must be at most {max} characters, got {len}"));
        }
    }
    bad
}

/// A mapping's entries against the node's properties (or `additionalProperties`): unknown fields and
/// values that failed are dropped, missing required fields named.
fn check_object(
    map: &mut serde_json::Map<String, serde_json::Value>,
    schema: &serde_json::Value,
    path: &str,
    out: &mut Vec<FieldProblem>,
) {
    use serde_json::Value;
    if let Some(max) = schema_bound(schema, "maxProperties").filter(|max| map.len() as f64 > *max) {
        out.push(FieldProblem {
            field: path.to_string(),
            message: format!("must have at most {max} entries, got {}", map.len()),
        });
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties").filter(|a| a.is_object());
    let mut drop = Vec::new();
    for (key, v) in map.iter_mut() {
        let (child, sub) = match (props.and_then(|p| p.get(key)), extra) {
            (Some(sub), _) => (format!("{path}.{key}"), sub),
            (None, Some(sub)) => (format!("{path}[{key}]"), sub),
            (None, None) => {
                let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                out.push(FieldProblem {
                    field: format!("{path}.{key}"),
                    message: format!("unknown field; the fields here are {}", known.join(", ")),
                });
                drop.push(key.clone());
                continue;
            }
        };
        check_schema(v, sub, &child, out);
        if v.is_null() && sub.get("nullable") != Some(&Value::Bool(true)) {
            drop.push(key.clone());
        }
    }
    for key in drop {
        map.remove(&key);
    }
    for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(req) {
            out.push(FieldProblem { field: format!("{path}.{req}"), message: "is required".into() });
        }
    }
}

fn article(what: &str) -> String {
    match what {
        "integer" | "object" | "array" => format!("an {what}"),
        "string" | "boolean" | "number" => format!("a {what}"),
        other => other.to_string(),
    }
}

/// Reads every `PopUpStore` document of a YAML file. Documents of other kinds (a Secret next to the
/// store, say) are returned as `"document N: apiVersion kind"` so the caller can mention them.
///
/// On error, the message lists every problem of every document at once, one a line, each with its
/// document, the field's path and what to do: what the API server would refuse, found without one.
pub fn parse_stores(text: &str) -> Result<(Vec<PopUpStore>, Vec<String>), String> {
    let mut stores = Vec::new();
    let mut others = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                // A syntax error ends the stream: nothing after it can be read.
                problems.push(format!("document {n}: not valid YAML: {e}"));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        if kind != "PopUpStore" {
            others.push(format!("document {n}: {api_version} {kind}"));
            continue;
        }
        if api_version != "popup.dev/v1alpha1" {
            problems.push(format!(
                "document {n}: apiVersion: a PopUpStore's apiVersion is popup.dev/v1alpha1, got {api_version:?}"
            ));
            continue;
        }
        let json = match serde_json::to_value(&value) {
            Ok(j) => j,
            Err(e) => {
                problems.push(format!("document {n}: cannot be read as JSON (mapping keys must be strings): {e}"));
                continue;
            }
        };
        let name = json.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let at = if name.is_empty() { format!("document {n}") } else { format!("document {n} ({name})") };
        let found = check_store_document(&json);
        if !found.is_empty() {
            problems.extend(found.iter().map(|p| format!("{at}: {p}")));
            continue;
        }
        // The schema passed; what it does not cover (metadata) still fails with its path here.
        match serde_path_to_error::deserialize::<_, PopUpStore>(json) {
            Ok(store) => stores.push(store),
            Err(e) => problems.push(format!("{at}: {}: {}", e.path(), e.inner())),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    if stores.is_empty() {
        return Err("no PopUpStore (apiVersion popup.dev/v1alpha1) found".into());
    }
    Ok((stores, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_default_engine() {
        assert_eq!(default_engine(), Engine::Gears, "the original demo's engine");
    }
}
