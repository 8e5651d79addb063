//! Status: observations → `PopUpStore.status` (pure), following the Kubernetes condition conventions:
//! one condition per concern plus a summary `Ready`, `lastTransitionTime` moving only when a
//! condition's status flips, `observedGeneration` on every condition and on the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{Endpoints, PopUpStoreStatus, SaleStatus, StartedSale};

pub mod grafana;
pub mod sale;
pub mod workload;

pub const REDIS_READY: &str = "RedisReady";
pub const SCRIPTS_LOADED: &str = "ScriptsLoaded";
pub const GRAFANA_READY: &str = "GrafanaReady";
pub const PROCESSOR_READY: &str = "ProcessorReady";
/// Redis holds the sale the operator started (`sale`).
pub const SALE_INTACT: &str = "SaleIntact";
pub const SIMULATION_COMPLETE: &str = "SimulationComplete";
pub const READY: &str = "Ready";

/// Every condition reason the operator writes, by the condition(s) that use it.
pub mod reason {
    // RedisReady, from the StatefulSet and its pod (`workload::redis_check`).
    pub const RUNNING: &str = "Running";
    pub const STARTING: &str = "Starting";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const REDIS_CRASHING: &str = "RedisCrashing";
    pub const IMAGE_UNAVAILABLE: &str = "ImageUnavailable";
    pub const CONTAINER_ERROR: &str = "ContainerError";
    // RedisReady, from the user's password Secret.
    pub const PASSWORD_SECRET_MISSING: &str = "PasswordSecretMissing";
    pub const PASSWORD_KEY_MISSING: &str = "PasswordKeyMissing";
    // RedisReady or ScriptsLoaded, from talking to Redis (`controller::redis::reason_of`).
    pub const REDIS_UNREACHABLE: &str = "RedisUnreachable";
    pub const REDIS_AUTH_FAILED: &str = "RedisAuthFailed";
    pub const MODULE_MISSING: &str = "ModuleMissing";
    pub const SCRIPT_LOAD_FAILED: &str = "ScriptLoadFailed";
    pub const REDIS_TIMEOUT: &str = "RedisTimeout";
    pub const REDIS_ERROR: &str = "RedisError";
    // ScriptsLoaded.
    pub const LOADED: &str = "Loaded";
    pub const WAITING_FOR_REDIS: &str = "WaitingForRedis";
    /// The scripts are in place but the sale is not flowing: an engine recorded a failure, an order
    /// waits too long, or `product` is not an integer.
    pub const ENGINE_FAILING: &str = "EngineFailing";
    // GrafanaReady, ProcessorReady (`workload::deployment_check`, `workload::sidecar_check`).
    pub const AVAILABLE: &str = "Available";
    pub const UNAVAILABLE: &str = "Unavailable";
    pub const SIDECAR: &str = "Sidecar";
    // GrafanaReady, from Grafana's own answers once its pod is available (`grafana::check`).
    pub const GRAFANA_UNREACHABLE: &str = "GrafanaUnreachable";
    pub const GRAFANA_AUTH_FAILED: &str = "GrafanaAuthFailed";
    pub const PLUGIN_NOT_LOADED: &str = "PluginNotLoaded";
    pub const DATASOURCE_MISSING: &str = "DatasourceMissing";
    pub const DATASOURCE_UNHEALTHY: &str = "DatasourceUnhealthy";
    pub const DASHBOARD_MISSING: &str = "DashboardMissing";
    pub const GRAFANA_ERROR: &str = "GrafanaError";
    // SaleIntact (`sale`; also `WAITING_FOR_REDIS`, `DISABLED`).
    pub const INTACT: &str = super::sale::INTACT;
    pub const SALE_LOST: &str = super::sale::SALE_LOST;
    // GrafanaReady, SaleIntact, SimulationComplete.
    pub const DISABLED: &str = "Disabled";
    // SimulationComplete (`workload::Simulation`; also `RUNNING`).
    pub const WAITING_FOR_SCRIPTS: &str = "WaitingForScripts";
    pub const WAITING_FOR_SALE: &str = "WaitingForSale";
    pub const HELD: &str = "Held";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    // Ready.
    pub const ALL_COMPONENTS_READY: &str = "AllComponentsReady";
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    pub const INVALID_SPEC: &str = "InvalidSpec";

    /// Reasons of a condition that is merely on its way (or off by choice): not worth a Warning Event.
    pub const PROGRESS: &[&str] = &[
        STARTING,
        UNAVAILABLE,
        WAITING_FOR_REDIS,
        WAITING_FOR_SCRIPTS,
        WAITING_FOR_SALE,
        HELD,
        RUNNING,
        DISABLED,
        COMPONENTS_NOT_READY,
    ];

    /// Whether a False condition with this reason is progress rather than a problem.
    pub fn is_progress(reason: &str) -> bool {
        PROGRESS.contains(&reason)
    }
}

/// One observed concern: is it fine, a CamelCase reason, a sentence for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Check {
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self { ok: true, reason: reason.into(), message: message.into() }
    }
    pub fn not(reason: &str, message: impl Into<String>) -> Self {
        Self { ok: false, reason: reason.into(), message: message.into() }
    }
}

/// Everything one reconcile observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observations {
    pub generation: Option<i64>,
    pub redis: Check,
    pub scripts: Check,
    /// `None` when Grafana is disabled.
    pub grafana: Option<Check>,
    /// `None` unless the engine is `native`.
    pub processor: Option<Check>,
    /// SaleIntact.
    pub sale_intact: Check,
    pub simulation: Check,
    pub sale: Option<SaleStatus>,
    /// The sale the operator started (kept while Redis no longer holds it).
    pub started_sale: Option<StartedSale>,
    pub endpoints: Endpoints,
    pub simulator_job: Option<String>,
}

/// The status for `obs`, reusing `old`'s transition times where a condition kept its status.
pub fn compute(old: Option<&PopUpStoreStatus>, obs: &Observations, now: Timestamp) -> PopUpStoreStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut checks: Vec<(&str, Check)> = vec![(REDIS_READY, obs.redis.clone()), (SCRIPTS_LOADED, obs.scripts.clone())];
    checks.push((
        GRAFANA_READY,
        obs.grafana.clone().unwrap_or_else(|| {
            Check::ok(reason::DISABLED, "no dashboard (spec.grafana.mode: none, or enabled: false)")
        }),
    ));
    if let Some(p) = &obs.processor {
        checks.push((PROCESSOR_READY, p.clone()));
    }
    checks.push((SALE_INTACT, obs.sale_intact.clone()));
    checks.push((SIMULATION_COMPLETE, obs.simulation.clone()));

    // The store is Ready when the sale can run and be watched; the simulation's progress is not part of it.
    let blocking: Vec<String> = checks
        .iter()
        .filter(|(t, c)| *t != SIMULATION_COMPLETE && !c.ok)
        .map(|(t, c)| format!("{t}: {}", c.message))
        .collect();
    let ready = if blocking.is_empty() {
        let sale = if obs.sale_intact.reason == reason::INTACT { "; Redis holds the sale" } else { "" };
        Check::ok(reason::ALL_COMPONENTS_READY, format!("Redis, scripts and dashboard are up{sale}"))
    } else {
        Check::not(reason::COMPONENTS_NOT_READY, blocking.join("; "))
    };
    checks.push((READY, ready));

    let conditions = checks.into_iter().map(|(t, c)| condition(old_conditions, t, &c, obs.generation, now)).collect();
    PopUpStoreStatus {
        observed_generation: obs.generation,
        conditions,
        endpoints: Some(obs.endpoints.clone()),
        sale: obs.sale.clone().or_else(|| old.and_then(|o| o.sale.clone())),
        simulator_job: obs.simulator_job.clone(),
        started_sale: obs.started_sale.clone(),
    }
}

/// Status for a spec the operator cannot use: `Ready=False/InvalidSpec`, other conditions kept as they were.
pub fn invalid_spec(
    old: Option<&PopUpStoreStatus>,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> PopUpStoreStatus {
    let mut status = old.cloned().unwrap_or_default();
    let ready = condition(&status.conditions, READY, &Check::not(reason::INVALID_SPEC, message), generation, now);
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(ready);
    status.observed_generation = generation;
    status
}

fn condition(old: &[Condition], type_: &str, check: &Check, generation: Option<i64>, now: Timestamp) -> Condition {
    let status = if check.ok { "True" } else { "False" };
    let previous = old.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: check.reason.clone(),
        message: check.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether `status` says the store is Ready.
pub fn is_ready(status: &PopUpStoreStatus) -> bool {
    find(Some(status), READY).is_some_and(|c| c.status == "True")
}

pub fn find<'a>(status: Option<&'a PopUpStoreStatus>, type_: &str) -> Option<&'a Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// A condition whose status or reason changed between two statuses: worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

pub fn transitions(old: Option<&PopUpStoreStatus>, new: &PopUpStoreStatus) -> Vec<Transition> {
    new.conditions
        .iter()
        .filter(|c| match find(old, &c.type_) {
            Some(o) => o.status != c.status || o.reason != c.reason,
            // A condition that starts out on its way (Starting, WaitingForRedis…) is no news: a new
            // store would otherwise cost an Event per condition before anything happened.
            None => !(c.status == "False" && reason::is_progress(&c.reason)),
        })
        .map(|c| Transition {
            type_: c.type_.clone(),
            ok: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Observations {
        Observations {
            generation: Some(3),
            redis: Check::ok(reason::RUNNING, "redis is ready"),
            scripts: Check::ok(reason::LOADED, "scripts loaded"),
            grafana: Some(Check::ok(reason::AVAILABLE, "grafana is ready")),
            processor: None,
            sale_intact: Check::ok(reason::INTACT, "Redis holds sale abc"),
            simulation: Check::not(reason::RUNNING, "simulator running"),
            sale: Some(SaleStatus { available: Some(7), completed: 3, ..Default::default() }),
            started_sale: None,
            endpoints: Endpoints { redis: "r:6379".into(), ..Default::default() },
            simulator_job: Some("shop-simulator-abc".into()),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn ready_when_components_are_even_while_simulating() {
        let s = compute(None, &obs(), t(0));
        let ready = find(Some(&s), READY).unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(find(Some(&s), SIMULATION_COMPLETE).unwrap().status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(s.sale.unwrap().available, Some(7));
    }

    #[test]
    fn not_ready_names_every_blocking_condition() {
        let mut o = obs();
        o.redis = Check::not(reason::STARTING, "0/1 pods ready");
        o.processor = Some(Check::not(reason::UNAVAILABLE, "0/1 processors available"));
        let s = compute(None, &o, t(0));
        let ready = find(Some(&s), READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("RedisReady: 0/1 pods ready"), "{}", ready.message);
        assert!(ready.message.contains("ProcessorReady"), "{}", ready.message);
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let first = compute(None, &obs(), t(0));
        let same = compute(Some(&first), &obs(), t(60));
        assert_eq!(first, same, "nothing changed, so nothing to write");
        let mut o = obs();
        o.redis = Check::not(reason::STARTING, "restarting");
        let flipped = compute(Some(&same), &o, t(120));
        assert_eq!(find(Some(&flipped), REDIS_READY).unwrap().last_transition_time, Time(t(120)));
        assert_eq!(find(Some(&flipped), SCRIPTS_LOADED).unwrap().last_transition_time, Time(t(0)));
        let changes = transitions(Some(&same), &flipped);
        let types: Vec<_> = changes.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [REDIS_READY, READY]);
        assert!(transitions(Some(&flipped), &flipped).is_empty());
        // A new store: conditions that start out on their way are no news, a problem or a True one is.
        let first: Vec<String> = transitions(None, &flipped).into_iter().map(|t| t.type_).collect();
        let expected: Vec<String> = flipped
            .conditions
            .iter()
            .filter(|c| c.status == "True" || !reason::is_progress(&c.reason))
            .map(|c| c.type_.clone())
            .collect();
        assert_eq!(first, expected);
        let mut starting = flipped.clone();
        starting.conditions.iter_mut().for_each(|c| (c.status, c.reason) = ("False".into(), reason::STARTING.into()));
        assert!(transitions(None, &starting).is_empty());
    }

    #[test]
    fn a_lost_sale_is_not_ready() {
        let mut o = obs();
        o.sale_intact = Check::not(reason::SALE_LOST, "Redis no longer holds sale abc");
        let s = compute(None, &o, t(0));
        let ready = find(Some(&s), READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::COMPONENTS_NOT_READY));
        assert!(ready.message.contains("SaleIntact: Redis no longer holds sale abc"), "{}", ready.message);
        assert!(!reason::is_progress(reason::SALE_LOST), "a lost sale is worth a Warning");
    }

    #[test]
    fn disabled_grafana_does_not_block_ready() {
        let mut o = obs();
        o.grafana = None;
        let s = compute(None, &o, t(0));
        let g = find(Some(&s), GRAFANA_READY).unwrap();
        assert_eq!((g.status.as_str(), g.reason.as_str()), ("True", reason::DISABLED));
        assert_eq!(find(Some(&s), READY).unwrap().status, "True");
    }

    #[test]
    fn invalid_spec_keeps_other_conditions() {
        let good = compute(None, &obs(), t(0));
        let bad = invalid_spec(Some(&good), Some(4), "spec.stock: must be 0 or more", t(5));
        let ready = find(Some(&bad), READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::INVALID_SPEC));
        assert_eq!(find(Some(&bad), REDIS_READY), find(Some(&good), REDIS_READY));
        assert_eq!(bad.observed_generation, Some(4));
    }

    #[test]
    fn is_ready_reads_the_summary_condition() {
        assert!(is_ready(&compute(None, &obs(), t(0))));
        let mut o = obs();
        o.redis = Check::not(reason::STARTING, "restarting");
        assert!(!is_ready(&compute(None, &o, t(0))));
        assert!(!is_ready(&PopUpStoreStatus::default()));
    }

    #[test]
    fn progress_reasons_are_not_problems() {
        for r in [reason::STARTING, reason::RUNNING, reason::WAITING_FOR_SCRIPTS, reason::COMPONENTS_NOT_READY] {
            assert!(reason::is_progress(r), "{r}");
        }
        for r in [reason::UNSCHEDULABLE, reason::REDIS_AUTH_FAILED, reason::FAILED, reason::INVALID_SPEC] {
            assert!(!reason::is_progress(r), "{r}");
        }
    }

    #[test]
    fn last_sale_numbers_survive_a_failed_read() {
        let first = compute(None, &obs(), t(0));
        let mut o = obs();
        o.sale = None;
        assert_eq!(compute(Some(&first), &o, t(5)).sale, first.sale);
    }
}
