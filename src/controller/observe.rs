//! Observe: what the store's parts say now. Redis (its pod while it is not ready, then the scripts and
//! the sale), Grafana and the processor, the simulator Job (created here once the scripts are in
//! place), and the rotations of Redis passwords waiting for their consumers.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::apply_children::Applied;
use super::dereference::Inputs;
use super::{Context, GrafanaTarget, RedisTarget, cache, users};
use crate::apply;
use crate::apply::Result;
use crate::crd::{Endpoints, Engine, GrafanaMode, PopUpStore, SaleStatus};
use crate::render::{self, ValidatedStore};
use crate::status;
use crate::status::workload::{Simulation, deployment_check, redis_check, redis_ready, sidecar_check};
use crate::status::{Check, Observations, reason};

/// Everything observed, as the status stage and the next action need it.
pub(super) struct Observed {
    pub observations: Observations,
    pub simulation: Simulation,
    /// An old Redis password waits for its consumers.
    pub rotating: bool,
    /// The trouble is on Redis's side (password Secret, Redis up but unusable, scripts): not watched.
    pub redis_side_problem: bool,
}

pub(super) async fn observe(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    inputs: &Inputs,
    target: &RedisTarget,
    applied: Applied,
) -> Result<Observed> {
    let Applied { redis: sts, deployments, users, simulator_job } = applied;
    let password_problem = inputs.redis_password.problem.clone();
    let redis = match (password_problem, users) {
        (Some(problem), _) => problem,
        (None, Some(Err(problem))) => problem,
        // Only a pod that is not ready needs explaining: a ready store does not read it.
        (None, _) if redis_ready(&sts) => redis_check(&sts, None, validated.engine()),
        (None, _) => redis_check(&sts, redis_pod(ctx, validated).await.as_ref(), validated.engine()),
    };
    let (scripts, sale) = scripts_and_sale(ctx, validated, target, &redis).await;
    let (grafana, processor) = components(ctx, validated, inputs, &deployments).await;
    // A failing engine has its scripts in place: the sale (and its Job) goes on while the status says why.
    let scripts_in_place = scripts.ok || scripts.reason == reason::ENGINE_FAILING;
    let simulation = simulator(ctx, store, validated, simulator_job, scripts_in_place).await?;
    let consumers = users::Consumers { deployments: &deployments, simulator_job: simulation.job() };
    let rotating =
        redis.ok && users::finish_rotations(ctx, store, validated, target, &inputs.credentials, consumers).await?;
    let redis_side_problem =
        inputs.redis_password.problem.is_some() || (!redis.ok && redis_ready(&sts)) || (redis.ok && !scripts.ok);
    let observations = Observations {
        generation: store.metadata.generation,
        redis,
        scripts,
        grafana,
        processor,
        simulation: simulation.check(&validated.namespace),
        sale,
        endpoints: endpoints(validated),
        simulator_job: simulation.job().map(str::to_string),
    };
    Ok(Observed { observations, simulation, rotating, redis_side_problem })
}

/// The Redis pod, to say why it is not ready. Best effort: without it the condition only lacks the cause.
async fn redis_pod(ctx: &Context, store: &ValidatedStore) -> Option<Pod> {
    let name = store.names.redis_pod();
    if cache::synced(&ctx.cache.redis_pods) {
        // The watch has every Redis pod: not there means not created yet.
        return ctx.cache.redis_pods.get(&ObjectRef::new(&name).within(&store.namespace)).map(Arc::unwrap_or_clone);
    }
    match apply::get::<Pod>(&ctx.client, &store.namespace, &name).await {
        Ok(pod) => pod,
        Err(e) => {
            tracing::warn!(store = %store.names.store, namespace = %store.namespace, %e, "cannot read the Redis pod (RBAC: get pods)");
            None
        }
    }
}

/// ScriptsLoaded (loading them if needed) and the sale numbers, once Redis is usable.
async fn scripts_and_sale(
    ctx: &Context,
    validated: &ValidatedStore,
    target: &RedisTarget,
    redis: &Check,
) -> (Check, Option<SaleStatus>) {
    if !redis.ok {
        return (Check::not(reason::WAITING_FOR_REDIS, "scripts are loaded once Redis is ready"), None);
    }
    let scripts = match ctx.redis.ensure_scripts(target, validated.engine(), &validated.spec.processing).await {
        Ok(message) => Check::ok(reason::LOADED, message),
        Err(p) => Check::not(p.reason, p.message),
    };
    let sale = match ctx.redis.read_sale(target).await {
        Ok(sale) => Some(sale),
        Err(p) => {
            tracing::debug!(store = %validated.names.store, reason = p.reason, "sale not readable: {}", p.message);
            None
        }
    };
    (scripts, sale)
}

/// GrafanaReady (`None`: no Grafana) and ProcessorReady (`None`: not the native engine).
async fn components(
    ctx: &Context,
    validated: &ValidatedStore,
    inputs: &Inputs,
    deployments: &[Deployment],
) -> (Option<Check>, Option<Check>) {
    let find = |name: String| deployments.iter().find(|d| d.name_any() == name);
    let grafana = match validated.spec.grafana.effective_mode() {
        GrafanaMode::Managed => Some(managed_grafana(ctx, validated, inputs, find(validated.names.grafana())).await),
        GrafanaMode::Sidecar => Some(sidecar_check(validated)),
        GrafanaMode::None => None,
    };
    let processor = (validated.engine() == Engine::Native)
        .then(|| deployment_check(find(validated.names.processor()), "processor"));
    (grafana, processor)
}

/// A managed Grafana: its Deployment, and once that is available, Grafana's own answers (plugin,
/// datasource health, dashboard). HTTP to Grafana, not to the API server; asked at most once a minute
/// per store while the answers are fine (`grafana::Rounds`), again at once after a rollout.
async fn managed_grafana(
    ctx: &Context,
    validated: &ValidatedStore,
    inputs: &Inputs,
    deployment: Option<&Deployment>,
) -> Check {
    let store = format!("{}/{}", validated.namespace, validated.names.store);
    let available = deployment_check(deployment, "Grafana");
    let Some(deployment) = deployment.filter(|_| available.ok) else {
        ctx.grafana_rounds.forget(&store);
        return available;
    };
    let rollout = format!("{}/{}", deployment.uid().unwrap_or_default(), deployment.metadata.generation.unwrap_or(0));
    if let Some(check) = ctx.grafana_rounds.remembered(&store, &rollout, Instant::now()) {
        return check;
    }
    let target = GrafanaTarget {
        url: ctx.config.grafana_url(validated),
        user: render::grafana::ADMIN_USER.into(),
        password: inputs.grafana_admin_password.clone(),
        datasource_uid: render::grafana::datasource_uid(validated),
        dashboard_uid: render::grafana::dashboard_uid(validated),
    };
    let check = status::grafana::check(validated, &target.url, &ctx.grafana.round(&target).await);
    tracing::debug!(store = %validated.names.store, namespace = %validated.namespace, ok = check.ok, reason = %check.reason, "asked Grafana");
    ctx.grafana_rounds.remember(&store, &rollout, Instant::now(), check.clone());
    check
}

/// Creates the simulator Job once the scripts are loaded, removes Jobs of older settings, reports progress.
async fn simulator(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    job: Option<Job>,
    scripts_loaded: bool,
) -> Result<Simulation> {
    let Some(job) = job else { return Ok(Simulation::Disabled) };
    if !scripts_loaded {
        return Ok(Simulation::WaitingForScripts);
    }
    let name = job.name_any();
    let live = apply::create_if_missing(&ctx.client, cache::seen(&ctx.cache.jobs, &job), job).await?;
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
    Ok(Simulation::of_job(name, &live.status.unwrap_or_default()))
}

/// Where the store's Redis and Grafana are, for the status.
fn endpoints(validated: &ValidatedStore) -> Endpoints {
    let ns = &validated.namespace;
    let grafana_name = validated.names.grafana();
    let managed = validated.spec.grafana.effective_mode() == GrafanaMode::Managed;
    Endpoints {
        redis: validated.names.redis_address(ns),
        grafana: managed.then(|| format!("http://{grafana_name}.{ns}.svc:{}", render::GRAFANA_PORT)),
        grafana_port_forward: managed
            .then(|| format!("kubectl -n {ns} port-forward svc/{grafana_name} 3000:{}", render::GRAFANA_PORT)),
    }
}
