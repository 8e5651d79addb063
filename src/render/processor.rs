//! The `native` engine's processor: `popup-operator process` as a Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

use super::acl::{self, Role};
use super::component::Component;
use super::{BuildInputs, ValidatedStore, deployment_of, operator_container, resources_or};
use crate::flags::{ProcessArgs, RedisArgs, SettingsArgs};

pub const COMPONENT: Component = Component::Processor;

/// The processor's command line, the flags `process` parses.
pub fn args(store: &ValidatedStore) -> ProcessArgs {
    let p = &store.spec.processing;
    ProcessArgs {
        redis: RedisArgs::at(acl::url(store, Role::Processor)),
        settings: SettingsArgs {
            batch_size: p.batch_size,
            metrics_interval_seconds: p.metrics_interval_seconds.into(),
        },
        // Each replica names itself: the name keys its heartbeat and its log lines.
        consumer: Some("$(POD_NAME)".into()),
        no_sampler: false,
        sample_only: false,
    }
}

pub fn deployment(store: &ValidatedStore, inputs: &BuildInputs, checksum: &str) -> Deployment {
    let p = &store.spec.processing;
    let pod_name = EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = operator_container(
        store,
        inputs,
        COMPONENT,
        args(store).to_args(),
        vec![pod_name],
        resources_or(&None, "50m", "32Mi", "128Mi"),
    );
    let pod = PodSpec {
        containers: vec![container],
        // The worker finishes its current batch on SIGTERM.
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    };
    deployment_of(store, store.names.processor(), COMPONENT, p.replicas as i32, checksum, pod)
}

#[cfg(test)]
mod tests {
    use crate::crd::Engine;
    use crate::render::tests::build;

    #[test]
    fn processor_runs_the_operator_image_with_the_processing_settings() {
        let (_, c) = build(Engine::Native, |s| {
            s.processing.batch_size = 50;
            s.processing.metrics_interval_seconds = 2;
            s.processing.replicas = 3;
        });
        let d = serde_json::to_value(&c.deployments[1]).unwrap();
        assert_eq!(d["metadata"]["name"], "shop-processor");
        assert_eq!(d["spec"]["replicas"], 3);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "example/popup-operator:test");
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        assert_eq!(args[0], "process");
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("--redis"), "redis://popup-processor@shop-redis.sales.svc:6379");
        let env = &c["env"].as_array().unwrap().iter().find(|e| e["name"] == "REDIS_PASSWORD").unwrap()["valueFrom"];
        assert_eq!(env["secretKeyRef"]["name"], "shop-redis-processor", "its own password only");
        assert_eq!(after("--batch-size"), "50");
        assert_eq!(after("--metrics-interval-seconds"), "2");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    }
}
