//! The controller: watch `PopUpStore`s and their children, reconcile each store.
//!
//! One reconcile runs validate → read secrets → build → apply (dependency order) → Redis (scripts, sale)
//! → simulator Job → status. "Not ready yet" is a normal outcome with a quiet requeue; a spec the
//! operator cannot use sets `Ready=False/InvalidSpec` and waits for the next change.

pub mod rbac;
pub mod redis;
pub mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::apply;
use crate::crd::{Endpoints, Engine, GrafanaMode, PopUpStore, PopUpStoreStatus};
use crate::render::{self, BuildInputs, FIELD_MANAGER, PASSWORD_KEY, PasswordSource, ValidatedStore};
use crate::status::{self, Check, Observations};
use crate::telemetry::Health;
use crate::{Error, Result};
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
}

pub struct Context {
    pub client: Client,
    pub redis: Arc<dyn RedisGateway>,
    pub recorder: Recorder,
    pub health: Health,
    pub config: Config,
}

impl Context {
    pub fn new(client: Client, redis: Arc<dyn RedisGateway>, health: Health, config: Config) -> Self {
        let reporter = Reporter { controller: "popup-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Self { recorder: Recorder::new(client.clone(), reporter), client, redis, health, config }
    }
}

/// Requeue delays.
/// Waiting for pods: their readiness reaches us through the owned watches, this is only a safety net.
const WAITING_FOR_PODS_REQUEUE: Duration = Duration::from_secs(30);
/// Redis is up but unusable (unreachable, wrong password, missing module) or the user's password Secret
/// is missing: Redis itself is not watched, so look again soon (the Secret's arrival is, see
/// `stores_using_secret`; this is a safety net there).
const REDIS_RETRY_REQUEUE: Duration = Duration::from_secs(10);
const IDLE_REQUEUE: Duration = Duration::from_secs(60);
const ERROR_REQUEUE: Duration = Duration::from_secs(15);

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

async fn reconcile_store(store: &PopUpStore, ctx: &Context) -> Result<Action> {
    let generation = store.metadata.generation;
    let validated = match render::validate(store) {
        Ok(v) => v,
        Err(e) => {
            let new = status::invalid_spec(store.status.as_ref(), generation, &e.to_string(), Timestamp::now());
            publish_status(ctx, store, new).await?;
            // Nothing will fix this until the user edits the store.
            return Ok(Action::await_change());
        }
    };
    let client = &ctx.client;
    let ns = validated.namespace.clone();

    let redis_password = read_redis_password(client, &validated).await?;
    if redis_password.regenerated && store.status.is_some() {
        // The store ran before, so its password Secret was deleted by someone: say what that costs.
        let note = format!(
            "the Redis password Secret {} was missing and a new password was generated; Redis takes it without a restart (the sale in its emptyDir is kept) and the old one stays valid for {} s",
            validated.password.secret_name(),
            ctx.config.rotation_grace.as_secs()
        );
        publish_event(ctx, store, EventType::Warning, "RedisPasswordRegenerated", note).await;
    }
    // Only a managed Grafana has an admin password.
    let grafana_admin_password = if validated.spec.grafana.effective_mode() == GrafanaMode::Managed {
        existing_or_new_password(client, &ns, &validated.names.grafana(), render::grafana::ADMIN_PASSWORD_KEY).await?.0
    } else {
        String::new()
    };
    let credentials = users::read(client, &validated, redis_password.value.as_deref()).await?;
    let inputs = BuildInputs {
        redis_password: redis_password.value.clone(),
        grafana_admin_password,
        credentials: credentials.clone(),
        operator_image: ctx.config.operator_image.clone(),
        operator_pods: ctx.config.operator_pods.clone(),
    };
    let children = render::build_children(&validated, &inputs);
    // Only a spec change can make a child unwanted (Grafana mode, password source): prune then, so a
    // settled store does not pay for it.
    if store.status.as_ref().and_then(|s| s.observed_generation) != generation {
        prune(ctx, store, &validated, &children).await?;
    }

    // Dependency order: what pods read (Secrets, ConfigMaps) before the pods, Services before clients.
    for s in children.secrets {
        apply::apply(client, s).await?;
    }
    for cm in children.config_maps {
        apply::apply(client, cm).await?;
    }
    for svc in children.services {
        apply::apply(client, svc).await?;
    }
    // Before the pods: Redis never runs unprotected.
    for policy in children.network_policies {
        apply::apply(client, policy).await?;
    }
    let sts = apply::apply(client, children.redis.expect("a store always has Redis")).await?;
    let target = RedisTarget {
        address: ctx.config.redis_address(&validated),
        username: Some(render::acl::Role::Operator.user().into()),
        password: credentials.password(render::acl::Role::Operator).into(),
        admin_password: redis_password.value.clone(),
    };
    // The users before the pods that log in as them: a new password is accepted before a pod uses it.
    let users = match redis_password.problem.is_none() && redis_ready(&sts) {
        true => Some(users::ensure(ctx, store, &validated, &target, &credentials).await),
        false => None,
    };
    let mut deployments = Vec::new();
    for d in children.deployments {
        deployments.push(apply::apply(client, d).await?);
    }

    let redis = match (&redis_password.problem, users) {
        (Some(problem), _) => problem.clone(),
        (None, Some(Err(problem))) => problem,
        (None, _) => {
            // Only a pod that is not ready needs explaining: a ready store does not read it.
            let pod = if redis_ready(&sts) { None } else { redis_pod(client, &validated).await };
            redis_check(&sts, pod.as_ref(), validated.engine())
        }
    };
    let (scripts, sale) = if redis.ok {
        let scripts = match ctx.redis.ensure_scripts(&target, validated.engine(), &validated.spec.processing).await {
            Ok(message) => Check::ok("Loaded", message),
            Err(p) => Check::not(p.reason, p.message),
        };
        let sale = match ctx.redis.read_sale(&target).await {
            Ok(sale) => Some(sale),
            Err(p) => {
                tracing::debug!(store = %validated.names.store, reason = p.reason, "sale not readable: {}", p.message);
                None
            }
        };
        (scripts, sale)
    } else {
        (Check::not("WaitingForRedis", "scripts are loaded once Redis is ready"), None)
    };

    let grafana_mode = validated.spec.grafana.effective_mode();
    let grafana = match grafana_mode {
        GrafanaMode::Managed => {
            Some(deployment_check(deployments.iter().find(|d| d.name_any() == validated.names.grafana()), "Grafana"))
        }
        GrafanaMode::Sidecar => Some(sidecar_check(&validated)),
        GrafanaMode::None => None,
    };
    let processor = (validated.engine() == Engine::Native).then(|| {
        deployment_check(deployments.iter().find(|d| d.name_any() == validated.names.processor()), "processor")
    });
    // A failing engine has its scripts in place: the sale (and its Job) goes on while the status says why.
    let scripts_in_place = scripts.ok || scripts.reason == redis::ENGINE_FAILING;
    let (simulation, simulator_job) =
        simulator(ctx, store, &validated, children.simulator_job, scripts_in_place).await?;
    let consumers = users::Consumers { deployments: &deployments, simulator_job: simulator_job.as_deref() };
    let rotating =
        redis.ok && users::finish_rotations(ctx, store, &validated, &target, &credentials, consumers).await?;

    let grafana_name = validated.names.grafana();
    let managed = grafana_mode == GrafanaMode::Managed;
    let endpoints = Endpoints {
        redis: validated.names.redis_address(&ns),
        grafana: managed.then(|| format!("http://{grafana_name}.{ns}.svc:{}", render::GRAFANA_PORT)),
        grafana_port_forward: managed
            .then(|| format!("kubectl -n {ns} port-forward svc/{grafana_name} 3000:{}", render::GRAFANA_PORT)),
    };
    let redis_side_problem =
        redis_password.problem.is_some() || (!redis.ok && redis_ready(&sts)) || (redis.ok && !scripts.ok);
    let observations =
        Observations { generation, redis, scripts, grafana, processor, simulation, sale, endpoints, simulator_job };
    let new = status::compute(store.status.as_ref(), &observations, Timestamp::now());
    let ready = status::find(Some(&new), status::READY).is_some_and(|c| c.status == "True");
    let simulating = status::find(Some(&new), status::SIMULATION_COMPLETE).is_some_and(|c| c.reason == "Running");
    publish_status(ctx, store, new).await?;

    Ok(if !ready && redis_side_problem {
        Action::requeue(REDIS_RETRY_REQUEUE)
    } else if !ready {
        Action::requeue(WAITING_FOR_PODS_REQUEUE)
    } else if rotating {
        // An old password waits for its consumers; rollouts are watched, the grace period is not.
        Action::requeue(REDIS_RETRY_REQUEUE)
    } else if simulating {
        // Keep the sale numbers in the status as fresh as the dashboard's metrics.
        Action::requeue(Duration::from_secs(validated.spec.processing.metrics_interval_seconds.max(2).into()))
    } else {
        Action::requeue(IDLE_REQUEUE)
    })
}

/// Deletes children the current spec no longer wants (e.g. Grafana after `mode: none`).
async fn prune(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    children: &render::Children,
) -> Result<()> {
    let Some(uid) = store.metadata.uid.as_deref() else { return Ok(()) };
    let wanted = children.kinds_and_names();
    let ns = &validated.namespace;
    for (kind, name) in render::optional_children(&validated.names) {
        if wanted.iter().any(|(k, n)| k == kind && *n == name) {
            continue;
        }
        let client = &ctx.client;
        let deleted = match kind {
            "Secret" => apply::delete_if_owned::<Secret>(client, ns, &name, uid).await?,
            "ConfigMap" => apply::delete_if_owned::<ConfigMap>(client, ns, &name, uid).await?,
            "Service" => apply::delete_if_owned::<Service>(client, ns, &name, uid).await?,
            "Deployment" => apply::delete_if_owned::<Deployment>(client, ns, &name, uid).await?,
            "NetworkPolicy" => apply::delete_if_owned::<NetworkPolicy>(client, ns, &name, uid).await?,
            other => unreachable!("no prune for {other}"),
        };
        if deleted {
            tracing::info!(store = %validated.names.store, kind, %name, "deleted a child the spec no longer wants");
        }
    }
    Ok(())
}

/// Creates the simulator Job once the scripts are loaded, removes Jobs of older settings, reports progress.
async fn simulator(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    job: Option<Job>,
    scripts_loaded: bool,
) -> Result<(Check, Option<String>)> {
    let Some(job) = job else {
        return Ok((Check::not("Disabled", "the simulator is disabled (spec.simulator.enabled: false)"), None));
    };
    if !scripts_loaded {
        return Ok((Check::not("WaitingForScripts", "the simulator starts once the scripts are loaded"), None));
    }
    let name = job.name_any();
    let live = apply::create_if_missing(&ctx.client, job).await?;
    let previous = store.status.as_ref().and_then(|s| s.simulator_job.clone());
    if previous.as_deref() != Some(name.as_str()) {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={}",
            validated.names.store,
            render::simulator::COMPONENT
        );
        let deleted = apply::delete_others::<Job>(&ctx.client, &validated.namespace, &selector, &name).await?;
        if !deleted.is_empty() {
            tracing::info!(store = %validated.names.store, ?deleted, "removed simulator Jobs of previous settings");
        }
    }
    let st = live.status.unwrap_or_default();
    let check = if st.succeeded.unwrap_or(0) > 0 {
        Check::ok("Succeeded", format!("simulator Job {name} finished"))
    } else if st.failed.unwrap_or(0) > 0 {
        Check::not(
            "Failed",
            format!("simulator Job {name} failed; see kubectl -n {} logs job/{name}", validated.namespace),
        )
    } else {
        Check::not("Running", format!("simulator Job {name} is running"))
    };
    Ok((check, Some(name)))
}

fn redis_ready(sts: &StatefulSet) -> bool {
    sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1
}

/// The Redis pod, to say why it is not ready. Best effort: without it the condition only lacks the cause.
async fn redis_pod(client: &Client, store: &ValidatedStore) -> Option<Pod> {
    match apply::get::<Pod>(client, &store.namespace, &store.names.redis_pod()).await {
        Ok(pod) => pod,
        Err(e) => {
            tracing::warn!(store = %store.names.store, namespace = %store.namespace, %e, "cannot read the Redis pod (RBAC: get pods)");
            None
        }
    }
}

/// `RedisReady` from the StatefulSet, and from its pod when that is not ready: a pod no node can take
/// says so, with the scheduler's reason and, for the amd64-only gears image, the way out.
fn redis_check(sts: &StatefulSet, pod: Option<&Pod>, engine: Engine) -> Check {
    if redis_ready(sts) {
        return Check::ok("Running", "the Redis pod is ready");
    }
    match pod.and_then(unschedulable) {
        // "N node(s) didn't match Pod's node affinity/selector": the nodeSelector is ours (gears only).
        Some(why) if engine == Engine::Gears && why.contains("node affinity/selector") => Check::not(
            "Unschedulable",
            format!(
                "the Redis pod cannot be scheduled: the gears engine (spec.engine) needs the redismod image, which is built for amd64 only, so its pod asks for {}={} and no schedulable amd64 node can take it (scheduler: {why}). Add an amd64 node, or on arm64 nodes create the store with engine: triggers or engine: native (spec.engine cannot change after creation)",
                render::redis::ARCH_LABEL,
                render::redis::GEARS_ARCH
            ),
        ),
        Some(why) => Check::not("Unschedulable", format!("the Redis pod cannot be scheduled: {why}")),
        None => match pod.and_then(redis_container_trouble) {
            Some((reason, what)) if engine == Engine::Gears && reason == REDIS_CRASHING => Check::not(
                reason,
                format!(
                    "{what}. The gears engine (spec.engine) starts redis-server with the redismod image's modules (RedisGears 1 and the others it loads from /usr/lib/redis/modules); spec.redis.image must be redislabs/redismod or an image with those modules at those paths"
                ),
            ),
            Some((reason, what)) => Check::not(reason, what),
            None => Check::not("Starting", "waiting for the Redis pod to become ready (0/1)"),
        },
    }
}

/// Reasons of a Redis container that cannot run, from the kubelet's view of it.
const REDIS_CRASHING: &str = "RedisCrashing";
const IMAGE_UNAVAILABLE: &str = "ImageUnavailable";
const CONTAINER_ERROR: &str = "ContainerError";

/// Why the Redis container does not run, when the kubelet knows: an image it cannot get, a container it
/// cannot create, or a server that exits at start (with the last lines it logged, which the container's
/// `FallbackToLogsOnError` policy puts into the termination message).
fn redis_container_trouble(pod: &Pod) -> Option<(&'static str, String)> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == "redis")?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let message = waiting.message.as_deref().unwrap_or("").trim();
    match reason {
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => Some((
            IMAGE_UNAVAILABLE,
            format!(
                "the Redis image {} cannot be used on the node ({reason}: {message}); check spec.redis.image",
                status.image
            ),
        )),
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Some((CONTAINER_ERROR, format!("the Redis container cannot start ({reason}: {message})")))
        }
        "CrashLoopBackOff" => {
            let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let code = last.map(|t| t.exit_code.to_string()).unwrap_or_else(|| "?".into());
            let said = last.and_then(|t| t.message.as_deref()).map(last_lines).unwrap_or_default();
            let said = if said.is_empty() { String::new() } else { format!("; it said: {said}") };
            Some((
                REDIS_CRASHING,
                format!(
                    "the Redis server exits at start (exit code {code}, restarted {} times){said}",
                    status.restart_count
                ),
            ))
        }
        _ => None,
    }
}

/// The last few non-empty lines of a log excerpt, on one line and short enough for a condition message.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let joined = lines[lines.len().saturating_sub(3)..].join(" | ");
    match joined.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// The scheduler's message when it found no node for `pod` (condition PodScheduled=False/Unschedulable).
fn unschedulable(pod: &Pod) -> Option<&str> {
    let scheduled = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?;
    (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable"))
        .then(|| scheduled.message.as_deref().unwrap_or("no node fits the pod"))
}

/// Sidecar mode: nothing to wait for; say where the datasource and dashboard are.
fn sidecar_check(store: &ValidatedStore) -> Check {
    let sc = &store.spec.grafana.sidecar;
    // Your Grafana runs outside the store, so the store's Redis policy keeps it out unless told.
    let network = if store.spec.network_policy.enabled {
        format!(
            "; NetworkPolicy {} lets only the store's and the operator's pods reach Redis: where policies are enforced, let your Grafana in with a policy of your own (docs/security.md) or set spec.networkPolicy.enabled: false",
            store.names.redis()
        )
    } else {
        String::new()
    };
    Check::ok(
        "Sidecar",
        format!(
            "datasource Secret {} ({}={}) and dashboard ConfigMap {} ({}={}) are labelled for your Grafana's sidecar (it needs the redis-datasource plugin){network}",
            store.names.grafana_datasource(),
            sc.datasource_label,
            sc.label_value,
            store.names.grafana_dashboards(),
            sc.dashboard_label,
            sc.label_value
        ),
    )
}

fn deployment_check(d: Option<&Deployment>, what: &str) -> Check {
    let status = d.and_then(|d| d.status.clone()).unwrap_or_default();
    let wanted = d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    if available >= 1 {
        Check::ok("Available", format!("{what}: {available}/{wanted} pods available"))
    } else {
        Check::not("Unavailable", format!("waiting for {what} pods: {available}/{wanted} available"))
    }
}

struct RedisPassword {
    value: Option<String>,
    /// The operator-owned Secret had no password, so a new one was generated.
    regenerated: bool,
    /// Set when the password cannot be had: it becomes the RedisReady condition.
    problem: Option<Check>,
}

async fn read_redis_password(client: &Client, store: &ValidatedStore) -> Result<RedisPassword> {
    match &store.password {
        PasswordSource::Generated { secret } => {
            let (value, regenerated) = existing_or_new_password(client, &store.namespace, secret, PASSWORD_KEY).await?;
            Ok(RedisPassword { value: Some(value), regenerated, problem: None })
        }
        PasswordSource::UserSecret(r) => {
            let secret: Option<Secret> = apply::get(client, &store.namespace, &r.name).await?;
            let problem = |reason: &str, message: String| RedisPassword {
                value: None,
                regenerated: false,
                problem: Some(Check::not(reason, message)),
            };
            let Some(secret) = secret else {
                return Ok(problem(
                    "PasswordSecretMissing",
                    format!(
                        "Secret {} (spec.redis.passwordSecretRef) does not exist in namespace {}: create it or remove passwordSecretRef",
                        r.name, store.namespace
                    ),
                ));
            };
            let value =
                secret.data.as_ref().and_then(|d| d.get(&r.key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
            match value {
                // Any bytes: the password reaches Redis only as a hash (ACL file, ACL SETUSER).
                Some(v) if !v.is_empty() => Ok(RedisPassword { problem: None, value: Some(v), regenerated: false }),
                _ => Ok(problem(
                    "PasswordKeyMissing",
                    format!("Secret {} has no non-empty key {:?} (spec.redis.passwordSecretRef.key)", r.name, r.key),
                )),
            }
        }
    }
}

/// The password stored under `key` in an operator-owned Secret, or a new random one when there is none
/// (then `true`).
async fn existing_or_new_password(client: &Client, namespace: &str, secret: &str, key: &str) -> Result<(String, bool)> {
    let existing: Option<Secret> = apply::get(client, namespace, secret).await?;
    let value = existing
        .and_then(|s| s.data)
        .and_then(|d| d.get(key).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|v| !v.is_empty());
    Ok(match value {
        Some(v) => (v, false),
        None => (new_password(), true),
    })
}

pub fn new_password() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
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

/// Writes the status when it changed, and publishes an Event per condition transition.
async fn publish_status(ctx: &Context, store: &PopUpStore, new: PopUpStoreStatus) -> Result<()> {
    if store.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let name = store.name_any();
    let api: Api<PopUpStore> = Api::namespaced(ctx.client.clone(), &store.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "popup.dev/v1alpha1",
        "kind": "PopUpStore",
        "status": new,
    });
    match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => {}
        // The store was deleted while this reconcile ran: nothing is left to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(source) => return Err(Error::Status { name, source }),
    }
    for t in status::transitions(store.status.as_ref(), &new) {
        // A condition that is merely still on its way (Starting, Running…) is not worth a Warning.
        let warning = !t.ok
            && !matches!(
                t.reason.as_str(),
                "Starting"
                    | "Unavailable"
                    | "WaitingForRedis"
                    | "WaitingForScripts"
                    | "Running"
                    | "Disabled"
                    | "ComponentsNotReady"
            );
        let type_ = if warning { EventType::Warning } else { EventType::Normal };
        let reason = format!("{}{}", t.type_, if t.ok { "" } else { "False" });
        publish_event(ctx, store, type_, &reason, format!("{}: {}", t.reason, t.message)).await;
    }
    Ok(())
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
pub async fn run(ctx: Context, scope: impl Into<WatchScope>) -> Result<()> {
    let scope = scope.into();
    let client = ctx.client.clone();
    for namespace in scope.watches() {
        let stores: Api<PopUpStore> = scoped(&client, &namespace);
        let at = namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
        if let Err(e) = stores.list(&ListParams::default().limit(1)).await {
            return Err(Error::Startup(match e {
                kube::Error::Api(ref s) if s.code == 404 => "the PopUpStore CRD is not installed: run `popup-operator crd | kubectl apply -f -` (or install the Helm chart) and start the operator again".to_string(),
                kube::Error::Api(ref s) if s.code == 403 => format!("not allowed to list popupstores.popup.dev{at} ({}): check the operator's RBAC (charts/popup-operator: watchNamespace/watchNamespaces must list every --watch-namespace)", s.message),
                other => format!("cannot reach the Kubernetes API: {other}"),
            }));
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

/// One controller: the stores of `namespace` (or every namespace) and their children.
async fn run_one(client: &Client, namespace: Option<String>, ctx: Arc<Context>) {
    // Only our own children are cached: watching every Secret of the cluster would cost memory and RBAC.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=popup-operator");
    let controller =
        Controller::new(scoped::<PopUpStore>(client, &namespace), watcher::Config::default().any_semantic());
    let user_secrets = stores_using_secret(controller.store());
    controller
        .watches(scoped::<PartialObjectMeta<Secret>>(client, &namespace), watcher::Config::default(), user_secrets)
        .owns(scoped::<StatefulSet>(client, &namespace), owned.clone())
        .owns(scoped::<Deployment>(client, &namespace), owned.clone())
        .owns(scoped::<Job>(client, &namespace), owned.clone())
        .owns(scoped::<Service>(client, &namespace), owned.clone())
        .owns(scoped::<ConfigMap>(client, &namespace), owned.clone())
        .owns(scoped::<NetworkPolicy>(client, &namespace), owned.clone())
        .owns(scoped::<Secret>(client, &namespace), owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(store = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(%e, "reconcile error"),
            }
        })
        .await;
}

/// A changed Secret named by a store's `spec.redis.passwordSecretRef`, as a reconcile of that store: a
/// rotated password is applied at once, not at the next poll. The user's Secrets carry no label of ours,
/// so every Secret of the scope is watched, metadata only (a data change bumps the resourceVersion): no
/// Secret's content is sent to the operator or kept by it.
fn stores_using_secret(
    stores: kube::runtime::reflector::Store<PopUpStore>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<PopUpStore>> + Send + Sync + 'static {
    move |secret| {
        let (name, ns) = (secret.name_any(), secret.namespace());
        stores
            .state()
            .iter()
            .filter(|s| s.namespace() == ns)
            .filter(|s| s.spec.redis.password_secret_ref.as_ref().is_some_and(|r| r.name == name))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
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
    use serde_json::json;

    fn sts(ready: i32) -> StatefulSet {
        serde_json::from_value(json!({"status": {"replicas": 1, "readyReplicas": ready}})).unwrap()
    }

    fn pending(reason: &str, message: &str) -> Pod {
        serde_json::from_value(json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
        ]}}))
        .unwrap()
    }

    const NO_AMD64: &str = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";

    #[test]
    fn an_unschedulable_gears_pod_names_the_architecture_and_the_way_out() {
        let c = redis_check(&sts(0), Some(&pending("Unschedulable", NO_AMD64)), Engine::Gears);
        assert!(!c.ok);
        assert_eq!(c.reason, "Unschedulable");
        for words in ["amd64 only", "redismod", "spec.engine", "engine: triggers", "engine: native", NO_AMD64] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
    }

    #[test]
    fn other_unschedulable_pods_quote_the_scheduler() {
        let memory = "0/1 nodes are available: 1 Insufficient memory.";
        let c = redis_check(&sts(0), Some(&pending("Unschedulable", memory)), Engine::Gears);
        assert_eq!(c.reason, "Unschedulable");
        assert!(c.message.contains(memory) && !c.message.contains("amd64"), "{}", c.message);
        // Without our nodeSelector, a selector mismatch is not about the architecture.
        let c = redis_check(&sts(0), Some(&pending("Unschedulable", NO_AMD64)), Engine::Triggers);
        assert!(c.message.contains(NO_AMD64) && !c.message.contains("redismod"), "{}", c.message);
    }

    #[test]
    fn a_pod_on_its_way_is_starting_and_a_ready_one_running() {
        assert_eq!(redis_check(&sts(0), None, Engine::Gears).reason, "Starting");
        let scheduling_gate = pending("SchedulingGated", "waiting");
        assert_eq!(redis_check(&sts(0), Some(&scheduling_gate), Engine::Gears).reason, "Starting");
        let c = redis_check(&sts(1), Some(&pending("Unschedulable", NO_AMD64)), Engine::Gears);
        assert_eq!((c.ok, c.reason.as_str()), (true, "Running"), "readiness wins over a stale condition");
    }

    fn waiting(reason: &str, message: &str, last_message: Option<&str>) -> Pod {
        serde_json::from_value(json!({"status": {"phase": "Running", "containerStatuses": [{
            "name": "redis", "image": "example.com/redis:1", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": last_message}},
        }]}}))
        .unwrap()
    }

    #[test]
    fn a_crashing_gears_redis_quotes_its_last_words_and_names_the_image_it_needs() {
        let log = "1:C 26 Nov 01:40:00.000 * Redis version=7.4.1\n\n1:M 26 Nov 01:40:00.001 # Module /usr/lib/redis/modules/redisai.so failed to load: No such file or directory\n";
        let pod = waiting("CrashLoopBackOff", "back-off 10s restarting failed container", Some(log));
        let c = redis_check(&sts(0), Some(&pod), Engine::Gears);
        assert_eq!((c.ok, c.reason.as_str()), (false, "RedisCrashing"));
        for words in [
            "exit code 1",
            "restarted 3 times",
            "redisai.so failed to load",
            "RedisGears 1",
            "spec.redis.image",
            "redislabs/redismod",
        ] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
        // Other engines get the server's words without the gears advice.
        let c = redis_check(&sts(0), Some(&pod), Engine::Native);
        assert!(c.message.contains("redisai.so failed to load") && !c.message.contains("RedisGears"), "{}", c.message);
        // A crash without a message still says it crashes.
        let c = redis_check(&sts(0), Some(&waiting("CrashLoopBackOff", "", None)), Engine::Native);
        assert_eq!(c.message, "the Redis server exits at start (exit code 1, restarted 3 times)");
    }

    #[test]
    fn an_image_the_node_cannot_get_is_named() {
        let pod = waiting(
            "ErrImageNeverPull",
            "Container image \"example.com/redis:1\" is not present with pull policy of Never",
            None,
        );
        let c = redis_check(&sts(0), Some(&pod), Engine::Triggers);
        assert_eq!(c.reason, "ImageUnavailable");
        assert!(c.message.contains("example.com/redis:1") && c.message.contains("spec.redis.image"), "{}", c.message);
        let c = redis_check(
            &sts(0),
            Some(&waiting("CreateContainerConfigError", "secret \"x\" not found", None)),
            Engine::Triggers,
        );
        assert_eq!((c.reason.as_str(), c.message.contains("secret \"x\" not found")), ("ContainerError", true));
        assert_eq!(
            redis_check(&sts(0), Some(&waiting("ContainerCreating", "", None)), Engine::Triggers).reason,
            "Starting"
        );
    }

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

    #[test]
    fn sidecar_mode_says_how_to_let_your_grafana_through_the_network_policy() {
        let store = |enabled: bool| {
            let mut spec: crate::crd::PopUpStoreSpec =
                serde_json::from_value(json!({"grafana": {"mode": "sidecar"}, "networkPolicy": {"enabled": enabled}}))
                    .unwrap();
            spec.engine = Engine::Native;
            let mut s = PopUpStore::new("shop", spec);
            s.metadata.namespace = Some("sales".into());
            render::validate(&s).unwrap()
        };
        let on = sidecar_check(&store(true));
        assert!(on.ok);
        for words in ["NetworkPolicy shop-redis", "docs/security.md", "spec.networkPolicy.enabled: false"] {
            assert!(on.message.contains(words), "{words:?} missing: {}", on.message);
        }
        assert!(!sidecar_check(&store(false)).message.contains("NetworkPolicy"));
    }

    #[test]
    fn last_lines_keep_the_end_of_a_long_log_short() {
        assert_eq!(last_lines("a\n\n b \nc\nd\n"), "b | c | d");
        let long = "x".repeat(1000);
        assert_eq!(last_lines(&long).chars().count(), 401);
    }
}
