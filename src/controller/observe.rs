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
use crate::crd::StartedSale;
use crate::crd::{Endpoints, Engine, GrafanaMode, PopUpStore, SaleStatus};
use crate::render::{self, ValidatedStore};
use crate::status;
use crate::status::sale::{Legacy, SaleStep, WantedSale};
use crate::status::workload::{Simulation, deployment_check, failure_cause, redis_check, redis_ready, sidecar_check};
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
    let (scripts, sale) = scripts_and_sale(ctx, store, validated, target, &redis).await;
    let (grafana, processor) = components(ctx, validated, inputs, &deployments).await;
    // A failing engine has its scripts in place: the sale (and its Job) goes on while the status says why.
    let scripts_in_place = scripts.ok || scripts.reason == reason::ENGINE_FAILING;
    let waiting = if !scripts_in_place {
        Some(Simulation::WaitingForScripts)
    } else if !sale.intact.ok {
        Some(Simulation::WaitingForSale)
    } else {
        None
    };
    let simulation = simulator(ctx, store, validated, simulator_job, waiting).await?;
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
        sale_intact: sale.intact,
        simulation: simulation.check(&validated.namespace),
        sale: sale.numbers,
        started_sale: sale.started,
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
        return ctx.cache.redis_pods.get(&ObjectRef::new(&name).within(&store.namespace)).map(|pod| pod.full());
    }
    match apply::get::<Pod>(&ctx.client, &store.namespace, &name).await {
        Ok(pod) => pod,
        Err(e) => {
            tracing::warn!(store = %store.names.store, namespace = %store.namespace, %e, "cannot read the Redis pod (RBAC: get pods)");
            None
        }
    }
}

/// What the store's Redis holds of its sale.
struct SaleObserved {
    /// The numbers for `status.sale` (`None`: not read).
    numbers: Option<SaleStatus>,
    /// SaleIntact.
    intact: Check,
    /// For `status.startedSale`.
    started: Option<StartedSale>,
}

/// ScriptsLoaded (loading them if needed) and the sale, once Redis is usable: its numbers, and whether
/// Redis holds the sale the operator started (starting it when the store asks for a new one).
async fn scripts_and_sale(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    target: &RedisTarget,
    redis: &Check,
) -> (Check, SaleObserved) {
    let recorded = store.status.as_ref().and_then(|s| s.started_sale.clone());
    let wanted = validated
        .spec
        .simulator
        .enabled
        .then(|| WantedSale { id: render::simulator::settings_hash(validated), stock: validated.spec.stock });
    if !redis.ok {
        let intact = match wanted {
            None => sale_off(),
            Some(_) => Check::not(reason::WAITING_FOR_REDIS, "the sale is looked at once Redis is ready"),
        };
        let scripts = Check::not(reason::WAITING_FOR_REDIS, "scripts are loaded once Redis is ready");
        return (scripts, SaleObserved { numbers: None, intact, started: recorded });
    }
    let scripts = match ctx.redis.ensure_scripts(target, validated.engine(), &validated.spec.processing).await {
        Ok(message) => Check::ok(reason::LOADED, message),
        Err(p) => Check::not(p.reason, p.message),
    };
    let (numbers, held) = match ctx.redis.read_sale(target).await {
        Ok(read) => read,
        Err(p) => {
            tracing::debug!(store = %validated.names.store, reason = p.reason, "sale not readable: {}", p.message);
            let intact = match wanted {
                None => sale_off(),
                Some(_) => Check::not(p.reason, format!("cannot read which sale Redis holds: {}", p.message)),
            };
            return (scripts, SaleObserved { numbers: None, intact, started: recorded });
        }
    };
    let legacy = Legacy {
        job_of_wanted_sale: wanted.as_ref().is_some_and(|w| {
            store.status.as_ref().and_then(|s| s.simulator_job.as_deref())
                == Some(validated.names.simulator_job(&w.id).as_str())
        }),
        product_exists: numbers.available.is_some(),
    };
    let step = status::sale::plan(wanted.as_ref(), recorded.as_ref(), held.as_ref(), legacy);
    let observed = carry_out(ctx, validated, target, step, numbers, recorded).await;
    (scripts, observed)
}

/// Carries out what `status::sale::plan` decided about the sale, and what Redis then holds of it
/// (`numbers`: what was read before; `recorded`: `status.startedSale`).
async fn carry_out(
    ctx: &Context,
    validated: &ValidatedStore,
    target: &RedisTarget,
    step: SaleStep,
    numbers: SaleStatus,
    recorded: Option<StartedSale>,
) -> SaleObserved {
    match step {
        SaleStep::Off => SaleObserved { numbers: Some(numbers), intact: sale_off(), started: None },
        SaleStep::Intact(s) | SaleStep::Record(s) => {
            SaleObserved { numbers: Some(numbers), intact: status::sale::intact(&s), started: Some(s) }
        }
        SaleStep::Lost { started, held } => SaleObserved {
            numbers: Some(numbers),
            intact: status::sale::lost(
                &started,
                held.as_ref(),
                &validated.namespace,
                &validated.names.store,
                validated.spec.sale_run,
            ),
            started: Some(started),
        },
        SaleStep::Start(w) => match ctx.redis.start_sale(target, &w).await {
            Ok(m) => {
                tracing::info!(store = %validated.names.store, namespace = %validated.namespace, sale = %m.id, stock = m.stock, "started the sale");
                let started = StartedSale::from(&m);
                // What the transaction left: the stock, nothing queued or decided yet.
                let numbers = SaleStatus { available: Some(m.stock), ..Default::default() };
                SaleObserved { numbers: Some(numbers), intact: status::sale::intact(&started), started: Some(started) }
            }
            Err(p) => SaleObserved {
                numbers: Some(numbers),
                intact: Check::not(p.reason, format!("could not start sale {}: {}", w.id, p.message)),
                started: recorded,
            },
        },
        SaleStep::Adopt(w) => match ctx.redis.adopt_sale(target, &w).await {
            Ok(Some(m)) => {
                let started = StartedSale::from(&m);
                SaleObserved { numbers: Some(numbers), intact: status::sale::intact(&started), started: Some(started) }
            }
            // Somebody wrote a marker meanwhile: the next look decides.
            Ok(None) => SaleObserved {
                numbers: Some(numbers),
                intact: Check::not(reason::WAITING_FOR_REDIS, "a sale marker appeared in Redis; looking again"),
                started: recorded,
            },
            Err(p) => SaleObserved {
                numbers: Some(numbers),
                intact: Check::not(p.reason, format!("could not mark sale {}: {}", w.id, p.message)),
                started: recorded,
            },
        },
    }
}

fn sale_off() -> Check {
    Check::ok(
        reason::DISABLED,
        "the simulator is off (spec.simulator.enabled: false): the operator starts no sale and the one in Redis is yours",
    )
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

/// Creates the simulator Job once the scripts are loaded and its sale started (`waiting` says what it
/// still waits for) and its customers are not held back, removes Jobs of older settings, reports
/// progress. A Job that ran for a sale Redis has lost is reported, never created again: it would only
/// fail. A Job that exists when the store holds its customers back goes on.
async fn simulator(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    job: Option<Job>,
    waiting: Option<Simulation>,
) -> Result<Simulation> {
    let Some(job) = job else { return Ok(Simulation::Disabled) };
    let waiting = match waiting {
        Some(Simulation::WaitingForSale) => Some(Simulation::WaitingForSale),
        Some(other) => return Ok(other),
        None if validated.spec.simulator.hold => Some(Simulation::Held { store: validated.names.store.clone() }),
        None => None,
    };
    if let Some(waiting) = waiting {
        let live = match cache::seen(&ctx.cache.jobs, &job) {
            apply::Seen::Live(live) => Some(Arc::unwrap_or_clone(live)),
            apply::Seen::Absent => None,
            apply::Seen::Unknown => apply::get::<Job>(&ctx.client, &validated.namespace, &job.name_any()).await?,
        };
        return Ok(match live {
            Some(live) => job_outcome(ctx, store, validated, live.name_any(), &live).await,
            None => waiting,
        });
    }
    let name = job.name_any();
    let live = apply::create_if_missing(&ctx.client, cache::seen(&ctx.cache.jobs, &job), job).await?;
    let previous = store.status.as_ref().and_then(|s| s.simulator_job.clone());
    if previous.as_deref() != Some(name.as_str()) {
        let selector = render::simulator::COMPONENT.selector(&validated.names);
        let deleted = apply::delete_others::<Job>(&ctx.client, &validated.namespace, &selector, &name).await?;
        if !deleted.is_empty() {
            tracing::info!(store = %validated.names.store, ?deleted, "removed simulator Jobs of previous settings");
        }
    }
    Ok(job_outcome(ctx, store, validated, name, &live).await)
}

/// The Job's progress; for a failed Job, its cause: from the status when it already names it (no
/// request at rest), else from the Job's pod (its termination message or last log lines).
async fn job_outcome(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    name: String,
    job: &Job,
) -> Simulation {
    let status = job.status.clone().unwrap_or_default();
    let outcome = Simulation::of_job(name, &status);
    let Simulation::Failed { job: name, .. } = &outcome else { return outcome };
    let known = status::find(store.status.as_ref(), status::SIMULATION_COMPLETE)
        .filter(|c| c.reason == reason::FAILED && c.message.starts_with(&Simulation::failed_prefix(name)))
        .map(|c| c.message.clone());
    if let Some(cause) = known.and_then(|m| Simulation::cause_of_message(name, &m)) {
        return Simulation::Failed { job: name.clone(), cause };
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), &validated.namespace);
    let listed = pods.list(&kube::api::ListParams::default().labels(&format!("job-name={name}"))).await;
    let pods = listed
        .inspect_err(
            |e| tracing::warn!(store = %validated.names.store, %e, "cannot read the simulator's pod (RBAC: list pods)"),
        )
        .map(|l| l.items)
        .unwrap_or_default();
    Simulation::Failed { job: name.clone(), cause: failure_cause(&status, &pods) }
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
