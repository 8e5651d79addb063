//! The controller: watch `PopUpStore`s and their children, reconcile each store.
//!
//! One reconcile ([`reconcile_store`]) runs its stages in order, each in the module of its name:
//! [`validate`] → [`dereference`] → [`build`] → [`apply_children`] → [`observe`] → [`update_status`] →
//! [`next_action`]. "Not ready yet" is a normal outcome with a quiet requeue; a spec the operator cannot
//! use sets `Ready=False/InvalidSpec` and waits for the next change.

mod apply_children;
mod build;
pub mod cache;
pub mod cached;
mod dereference;
mod error;
pub mod grafana;
pub mod next_action;
mod observe;
pub mod rbac;
pub mod redis;
pub mod sale_bridge;
mod update_status;
pub mod users;
mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::crd::PopUpStore;
use crate::render::{self, ValidatedStore};
use crate::telemetry::Health;
use cache::{Cache, no_managed_fields};
use cached::Cached;
use dereference::existing_or_new_password;
pub use dereference::new_password;
pub use error::{ApiError, Error, Result, Stage, StartupError};
pub use grafana::{GrafanaGateway, GrafanaTarget};
pub use redis::{RedisGateway, RedisProblem, RedisTarget};

/// Operator-wide settings (from flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Image of the simulator Job and the native processor.
    pub operator_image: String,
    /// How the operator reaches a store's Redis. `None`: the Service's cluster DNS name. Otherwise a
    /// template with `{name}`, `{namespace}` and `{service}`, for an operator running outside the cluster.
    pub redis_address_template: Option<String>,
    /// The operator's own pods, let in by each store's Redis NetworkPolicy (`None`: outside the cluster).
    pub operator_pods: Option<render::network_policy::OperatorPods>,
    /// How long a rotated Redis password whose users the operator cannot see (the admin's, a sidecar-mode
    /// Grafana's) stays valid next to the new one.
    pub rotation_grace: Duration,
    /// How the operator reaches a managed Grafana (`host:port`). `None`: the Grafana Service's cluster DNS
    /// name. Otherwise a template like `redis_address_template`.
    pub grafana_address_template: Option<String>,
}

impl Config {
    pub fn redis_address(&self, store: &ValidatedStore) -> String {
        match &self.redis_address_template {
            None => store.names.redis_address(&store.namespace),
            Some(t) => t
                .replace("{name}", &store.names.store)
                .replace("{namespace}", &store.namespace)
                .replace("{service}", &store.names.redis()),
        }
    }

    /// `http://host:port` of the store's managed Grafana, as the operator reaches it.
    pub fn grafana_url(&self, store: &ValidatedStore) -> String {
        let address = match &self.grafana_address_template {
            None => format!("{}.{}.svc:{}", store.names.grafana(), store.namespace, render::GRAFANA_PORT),
            Some(t) => t
                .replace("{name}", &store.names.store)
                .replace("{namespace}", &store.namespace)
                .replace("{service}", &store.names.grafana()),
        };
        format!("http://{address}")
    }
}

#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub redis: Arc<dyn RedisGateway>,
    /// Managed Grafanas, asked whether the dashboard works (GrafanaReady).
    pub grafana: Arc<dyn GrafanaGateway>,
    /// When each store's Grafana was last asked, so that it is asked at most once a minute while fine.
    pub grafana_rounds: Arc<grafana::Rounds>,
    pub recorder: Recorder,
    pub health: Health,
    pub config: Config,
    /// What the watches saw; each controller of [`run`] fills its own.
    pub cache: Cache,
}

impl Context {
    /// A context whose cache stays empty (every read goes to the API server) until [`run`] gives each
    /// controller one fed by its watches.
    pub fn new(
        client: Client,
        redis: Arc<dyn RedisGateway>,
        grafana: Arc<dyn GrafanaGateway>,
        health: Health,
        config: Config,
    ) -> Self {
        let reporter = Reporter { controller: "popup-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            redis,
            grafana,
            grafana_rounds: Arc::default(),
            health,
            config,
            cache: Cache::empty(),
        }
    }
}

/// Requeue after an error from the API server (see `error_policy`); the other delays are `next_action`'s.
const ERROR_REQUEUE: Duration = Duration::from_secs(15);

/// A burst of events about one store (its children appearing one after the other) becomes one reconcile
/// once it has been quiet this long.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Stores reconciled at once per controller. Each reconcile holds its rendered children (the dashboard
/// alone is ~25 KB) and waits on the API server most of the time: a thousand at once would only queue
/// there while multiplying the operator's memory (docs/benchmarks.md).
const CONCURRENT_RECONCILES: u16 = 16;

#[tracing::instrument(skip_all, fields(store = %store.name_any(), namespace = store.namespace().as_deref().unwrap_or_default()))]
pub async fn reconcile(store: Arc<PopUpStore>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_store(&store, &ctx).await;
    ctx.health.metrics.observe(started.elapsed(), result.as_ref().err().map(Error::stage));
    result
}

pub fn error_policy(store: Arc<PopUpStore>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(store = %store.name_any(), namespace = ?store.namespace(), stage = error.stage(), %error, "reconcile failed");
    let recorder = ctx.recorder.clone();
    let reference = store.object_ref(&());
    let event = Event {
        type_: EventType::Warning,
        reason: "ReconcileFailed".into(),
        note: Some(truncate(&error.to_string(), 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(%e, "could not publish event");
        }
    });
    Action::requeue(ERROR_REQUEUE)
}

/// One reconcile, stage by stage (each in the module of its name); a failed API call is reported with
/// its stage.
async fn reconcile_store(store: &PopUpStore, ctx: &Context) -> Result<Action> {
    let Some(validated) = validate::validate(ctx, store).await.map_err(Error::at(Stage::Validate))? else {
        // Nothing will fix this until the user edits the store.
        return Ok(Action::await_change());
    };
    let inputs = dereference::dereference(ctx, store, &validated).await.map_err(Error::at(Stage::Dereference))?;
    let (children, target) = build::build(&ctx.config, &validated, &inputs);
    let applied = apply_children::apply_children(ctx, store, &validated, &inputs, &target, children)
        .await
        .map_err(Error::at(Stage::Apply))?;
    let observed =
        observe::observe(ctx, store, &validated, &inputs, &target, applied).await.map_err(Error::at(Stage::Observe))?;
    let ready =
        update_status::update_status(ctx, store, &observed.observations).await.map_err(Error::at(Stage::Status))?;
    Ok(next_action::next_action(&next_action::Outlook {
        ready,
        redis_side_problem: observed.redis_side_problem,
        rotating: observed.rotating,
        simulation: &observed.simulation,
        metrics_interval_seconds: validated.spec.processing.metrics_interval_seconds,
    }))
}

/// The children of a store as `render` prints them without a cluster: the build stage of a reconcile,
/// with new passwords where a reconcile would read them ([`dereference`]'s offline counterpart).
pub fn render_offline(config: &Config, validated: &ValidatedStore) -> render::Children {
    build::build(config, validated, &dereference::offline(validated)).0
}

async fn publish_event(ctx: &Context, store: &PopUpStore, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &store.object_ref(&())).await {
        tracing::debug!(%e, "could not publish event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Where the controller looks for stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace (the chart's ClusterRole).
    Cluster,
    /// Only these namespaces (the chart's Role and RoleBinding in each).
    Namespaces(Vec<String>),
}

impl From<Option<String>> for WatchScope {
    fn from(namespace: Option<String>) -> Self {
        match namespace {
            Some(ns) => WatchScope::Namespaces(vec![ns]),
            None => WatchScope::Cluster,
        }
    }
}

impl WatchScope {
    /// From `--watch-namespace` values, each one or several comma-separated names. Empty values are
    /// ignored (the chart's default `WATCH_NAMESPACE=""`); none at all means every namespace.
    pub fn from_flags<S: AsRef<str>>(values: &[S]) -> std::result::Result<Self, String> {
        let mut namespaces: Vec<String> = Vec::new();
        for ns in values.iter().flat_map(|v| v.as_ref().split(',')).map(str::trim).filter(|ns| !ns.is_empty()) {
            let valid = ns.len() <= 63
                && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !valid {
                return Err(format!(
                    "--watch-namespace: {ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63); separate several with commas or repeat the flag"
                ));
            }
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_string());
            }
        }
        Ok(if namespaces.is_empty() { WatchScope::Cluster } else { WatchScope::Namespaces(namespaces) })
    }

    /// One entry per watch: `None` is every namespace.
    fn watches(&self) -> Vec<Option<String>> {
        match self {
            WatchScope::Cluster => vec![None],
            WatchScope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
        }
    }
}

impl std::fmt::Display for WatchScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchScope::Cluster => f.write_str("<all>"),
            WatchScope::Namespaces(list) => f.write_str(&list.join(",")),
        }
    }
}

/// Runs the controller until SIGTERM/ctrl-c. Fails fast, with the fix, when the CRD is not installed or
/// a watched namespace is not readable.
pub async fn run(ctx: Context, scope: impl Into<WatchScope>) -> Result<(), StartupError> {
    let scope = scope.into();
    let client = ctx.client.clone();
    for namespace in scope.watches() {
        let stores: Api<PopUpStore> = scoped(&client, &namespace);
        let at = namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
        if let Err(e) = stores.list(&ListParams::default().limit(1)).await {
            return Err(match e {
                kube::Error::Api(ref s) if s.code == 404 => StartupError::CrdMissing,
                kube::Error::Api(s) if s.code == 403 => StartupError::Forbidden { at, message: s.message },
                other => StartupError::Unreachable(other),
            });
        }
    }
    ctx.health.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(namespace = %scope, "controller started");
    let ctx = Arc::new(ctx);
    // A watch sees one namespace or all of them, so a list gets one controller per namespace; stores of
    // different namespaces share no children, so the controllers need not know of each other.
    futures::future::join_all(scope.watches().into_iter().map(|ns| run_one(&client, ns, ctx.clone()))).await;
    tracing::info!("controller stopped");
    Ok(())
}

/// One controller: the stores of `namespace` (or every namespace), their children and the Secrets they
/// name, each watch also filling the controller's [`Cache`].
async fn run_one(client: &Client, namespace: Option<String>, ctx: Arc<Context>) {
    let (cache, writers) = Cache::new();
    let ctx = Arc::new(Context { cache, ..(*ctx).clone() });
    watching(client, &namespace, writers)
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES).debounce(DEBOUNCE))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((store, _)) => {
                    tracing::debug!(store = %store.name, namespace = store.namespace.as_deref().unwrap_or_default(), "reconciled")
                }
                Err(e) => tracing::debug!(%e, "reconcile error"),
            }
        })
        .await;
}

/// The controller's watches: the stores, what reconciles a store (its children, its Redis pod, a Secret
/// it names) and, through `writers`, what fills its [`Cache`].
fn watching(client: &Client, namespace: &Option<String>, w: cache::Writers) -> Controller<PopUpStore> {
    // The stores themselves are cached without managedFields too (Controller::new would keep them).
    let (stores, stores_writer) = kube::runtime::reflector::store();
    let store_watch =
        watcher::watcher(scoped::<PopUpStore>(client, namespace), watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(no_managed_fields)
            .reflect(stores_writer)
            .applied_objects();
    let controller = Controller::for_stream(store_watch, stores);
    let stores = controller.store();
    // Only our own children are watched in full: caching every Secret of the cluster would cost memory.
    let owned = || watcher::Config::default().labels(cache::OWNED);
    let redis_pods = watcher::Config::default().labels(cache::REDIS_PODS);
    let not_owned = watcher::Config::default().labels(cache::NOT_OWNED);
    let all_secrets = scoped::<PartialObjectMeta<Secret>>(client, namespace);
    controller
        .watches_stream(
            cache::objects(all_secrets, not_owned, w.all_secrets, cache::name_and_version_only),
            stores_using_secret(stores.clone()),
        )
        // The operator's Secrets reconcile their owner, and the stores that name one as their password.
        .watches_stream(
            cache::objects(scoped(client, namespace), owned(), w.secrets, cache::settle),
            owner_and_stores_using(stores),
        )
        .watches_stream(
            cache::objects(scoped(client, namespace), redis_pods, w.redis_pods, cache::settle),
            store_of_pod,
        )
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.stateful_sets, cache::settle))
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.deployments, cache::settle))
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.jobs, cache::settle))
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.services, cache::settle))
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.config_maps, cache::settle))
        .owns_stream(cache::objects(scoped(client, namespace), owned(), w.network_policies, cache::settle))
}

/// A Redis pod's changes (scheduled, crashing, ready) as a reconcile of its store, found by its labels.
fn store_of_pod(pod: Cached<Pod>) -> Option<ObjectRef<PopUpStore>> {
    Some(ObjectRef::new(pod.state.store.as_ref()?).within(&pod.namespace()?))
}

/// A changed Secret named by a store's `spec.redis.passwordSecretRef`, as a reconcile of that store: a
/// rotated password is applied at once, not at the next poll. The user's Secrets carry no label of ours,
/// so every other Secret of the scope is watched, metadata only (a data change bumps the
/// resourceVersion): no such Secret's content is sent to the operator or kept by it.
fn stores_using_secret(
    stores: Store<PopUpStore>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<PopUpStore>> + Send + Sync + 'static {
    move |secret| stores_using(&stores, &secret)
}

/// An operator-owned Secret's change as a reconcile of the store that controls it (what `owns_stream`
/// would do) and of any store that names it as its password Secret.
fn owner_and_stores_using(
    stores: Store<PopUpStore>,
) -> impl Fn(Cached<Secret>) -> Vec<ObjectRef<PopUpStore>> + Send + Sync + 'static {
    move |secret| {
        let owner = secret.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "PopUpStore");
        let owner = owner.zip(secret.namespace()).map(|(o, ns)| ObjectRef::new(&o.name).within(&ns));
        let mut wanted = stores_using(&stores, &secret);
        wanted.extend(owner.filter(|o| !wanted.contains(o)));
        wanted
    }
}

/// The stores of `secret`'s namespace whose `spec.redis.passwordSecretRef` names it.
fn stores_using(stores: &Store<PopUpStore>, secret: &impl Resource) -> Vec<ObjectRef<PopUpStore>> {
    let (name, ns) = (secret.name_any(), secret.namespace());
    stores
        .state()
        .iter()
        .filter(|s| s.namespace() == ns)
        .filter(|s| s.spec.redis.password_secret_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// An API for one namespace, or for all of them.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_namespaces_come_repeated_or_comma_separated() {
        let ns = |list: &[&str]| WatchScope::Namespaces(list.iter().map(|s| s.to_string()).collect());
        assert_eq!(WatchScope::from_flags::<&str>(&[]), Ok(WatchScope::Cluster));
        assert_eq!(WatchScope::from_flags(&[""]), Ok(WatchScope::Cluster), "the chart's empty default");
        assert_eq!(WatchScope::from_flags(&["shop"]), Ok(ns(&["shop"])));
        assert_eq!(WatchScope::from_flags(&["a,b", "c", "a", " d ,"]), Ok(ns(&["a", "b", "c", "d"])));
        for bad in ["Shop", "a_b", "-a", &"x".repeat(64)] {
            let err = WatchScope::from_flags(&[bad]).unwrap_err();
            assert!(err.starts_with("--watch-namespace:") && err.contains(bad), "{err}");
        }
        assert_eq!(WatchScope::from(None::<String>), WatchScope::Cluster);
        assert_eq!(ns(&["a", "b"]).to_string(), "a,b");
    }
}
