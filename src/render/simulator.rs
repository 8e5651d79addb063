//! The simulator Job: `popup-operator simulate` against the store's Redis.
//!
//! Jobs are immutable, so the Job's name carries a hash of everything that shapes the sale; a changed
//! setting yields a new Job (the controller removes the old one). The same hash is the sale's id: the
//! operator starts the sale under it (`sale::marker`) before the Job runs, and the Job joins it
//! (`simulate --join-sale <id>`), so the Job neither resets Redis nor sets the stock.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::json;

use super::acl::{self, Role};
use super::component::Component;
use super::{BuildInputs, ValidatedStore, child_meta, operator_container, pod_template, resources_or, sha256_hex};
use crate::flags::{RedisArgs, SimulateArgs};

pub const COMPONENT: Component = Component::Simulator;
/// Annotation with the settings hash, also the suffix of the Job's name.
pub const SETTINGS_HASH_ANNOTATION: &str = "popup.dev/simulator-settings";

/// Short hash of the settings that define one sale: its id.
pub fn settings_hash(store: &ValidatedStore) -> String {
    let s = &store.spec.simulator;
    let mut input = json!({
        "stock": store.spec.stock,
        "customers": s.customers,
        "maxArrivalMillis": s.max_arrival_millis,
        "maxOrderDelayMillis": s.max_order_delay_millis,
        "ratePerSecond": s.rate_per_second,
        "resources": s.resources,
    });
    // Run 0 hashes as before there were runs: a store made by an earlier operator keeps its sale's id.
    if store.spec.sale_run != 0 {
        input["saleRun"] = json!(store.spec.sale_run);
    }
    sha256_hex(input.to_string().as_bytes())[..8].to_string()
}

/// The simulator's command line, the flags `simulate` parses. The operator started the sale (stock,
/// clean slate); the Job joins it and only plays the crowd.
pub fn args(store: &ValidatedStore) -> SimulateArgs {
    let s = &store.spec.simulator;
    SimulateArgs {
        customers: s.customers,
        max_arrival_millis: s.max_arrival_millis.into(),
        max_order_delay_millis: s.max_order_delay_millis.into(),
        rate: s.rate_per_second.map(f64::from),
        ..SimulateArgs::joining(RedisArgs::at(acl::url(store, Role::Simulator)), settings_hash(store))
    }
}

pub fn job(store: &ValidatedStore, inputs: &BuildInputs) -> Job {
    let hash = settings_hash(store);
    let mut meta = child_meta(store, store.names.simulator_job(&hash), COMPONENT);
    meta.annotations = Some(BTreeMap::from([(SETTINGS_HASH_ANNOTATION.to_string(), hash)]));
    let resources = resources_or(&store.spec.simulator.resources, "50m", "32Mi", "128Mi");
    let container = Container {
        // `simulate` writes why it failed to the termination log; a crash leaves its last log lines.
        // Either reaches the store's SimulationComplete condition.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..operator_container(store, inputs, COMPONENT, args(store).to_args(), vec![], resources)
    };
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            // A retried run would play a second crowd into the same sale, so a failed run stays failed
            // and is reported in the SimulationComplete condition instead.
            backoff_limit: Some(0),
            // The simulator's password when the Job was made: a Job cannot roll, so the operator keeps an
            // older password valid until the Jobs that started with it have finished.
            template: pod_template(
                store,
                COMPONENT,
                Some(inputs.credentials.revision(Role::Simulator)),
                PodSpec { containers: vec![container], restart_policy: Some("Never".into()), ..Default::default() },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Engine;
    use crate::render::tests::build;

    fn job_of(edit: impl FnOnce(&mut crate::crd::PopUpStoreSpec)) -> Job {
        build(Engine::Gears, edit).1.simulator_job.unwrap()
    }

    #[test]
    fn job_runs_simulate_with_the_seed_timing() {
        let j = serde_json::to_value(job_of(|_| {})).unwrap();
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        assert_eq!(
            args,
            [
                "simulate",
                "--redis",
                "redis://popup-simulator@shop-redis.sales.svc:6379",
                "--join-sale",
                &settings_hash(&build(Engine::Gears, |_| {}).0),
                "--customers",
                "0",
                "--max-arrival-millis",
                "100",
                "--max-order-delay-millis",
                "1000"
            ]
        );
        assert_eq!(j["spec"]["backoffLimit"], 0);
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn changed_settings_give_a_new_job_name_and_unrelated_changes_do_not() {
        let base = job_of(|_| {}).metadata.name.unwrap();
        assert!(base.starts_with("shop-simulator-") && base.len() == "shop-simulator-".len() + 8, "{base}");
        assert_ne!(base, job_of(|s| s.stock = 5).metadata.name.unwrap());
        assert_ne!(base, job_of(|s| s.simulator.rate_per_second = Some(500)).metadata.name.unwrap());
        assert_ne!(base, job_of(|s| s.simulator.customers = 10).metadata.name.unwrap());
        assert_ne!(base, job_of(|s| s.sale_run = 1).metadata.name.unwrap(), "a fresh sale");
        assert_eq!(base, job_of(|s| s.grafana.enabled = false).metadata.name.unwrap());
        assert_eq!(base, job_of(|s| s.processing.batch_size = 9).metadata.name.unwrap());
    }

    #[test]
    fn fixed_rate_is_passed_on() {
        let j = job_of(|s| s.simulator.rate_per_second = Some(250));
        let args = j.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert_eq!(&args[args.len() - 2..], ["--rate", "250"]);
    }
}
