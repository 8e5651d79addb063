//! Workload checks: what the Redis StatefulSet and its pod, the Deployments, sidecar mode and the
//! simulator Job say, as conditions (pure; the controller's observe stage reads the objects).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::Pod;

use super::Check;
use super::reason::{
    AVAILABLE, CONTAINER_ERROR, DISABLED, FAILED, HELD, IMAGE_UNAVAILABLE, REDIS_CRASHING, RUNNING, SIDECAR, STARTING,
    SUCCEEDED, UNAVAILABLE, UNSCHEDULABLE, WAITING_FOR_SALE, WAITING_FOR_SCRIPTS,
};
use crate::crd::Engine;
use crate::render::{self, ValidatedStore};

pub fn redis_ready(sts: &StatefulSet) -> bool {
    sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1
}

/// `RedisReady` from the StatefulSet, and from its pod when that is not ready: a pod no node can take
/// says so, with the scheduler's reason and, for the amd64-only gears image, the way out.
pub fn redis_check(sts: &StatefulSet, pod: Option<&Pod>, engine: Engine) -> Check {
    if redis_ready(sts) {
        return Check::ok(RUNNING, "the Redis pod is ready");
    }
    match pod.and_then(unschedulable) {
        // "N node(s) didn't match Pod's node affinity/selector": the nodeSelector is ours (gears only).
        Some(why) if engine == Engine::Gears && why.contains("node affinity/selector") => Check::not(
            UNSCHEDULABLE,
            format!(
                "the Redis pod cannot be scheduled: the gears engine (spec.engine) needs the redismod image, which is built for amd64 only, so its pod asks for {}={} and no schedulable amd64 node can take it (scheduler: {why}). Add an amd64 node, or on arm64 nodes create the store with engine: triggers or engine: native (spec.engine cannot change after creation)",
                render::redis::ARCH_LABEL,
                render::redis::GEARS_ARCH
            ),
        ),
        Some(why) => Check::not(UNSCHEDULABLE, format!("the Redis pod cannot be scheduled: {why}")),
        None => match pod.and_then(redis_container_trouble) {
            Some((reason, what)) if engine == Engine::Gears && reason == REDIS_CRASHING => Check::not(
                reason,
                format!(
                    "{what}. The gears engine (spec.engine) starts redis-server with the redismod image's modules (RedisGears 1 and the others it loads from /usr/lib/redis/modules); spec.redis.image must be redislabs/redismod or an image with those modules at those paths"
                ),
            ),
            Some((reason, what)) => Check::not(reason, what),
            None => Check::not(STARTING, "waiting for the Redis pod to become ready (0/1)"),
        },
    }
}

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
pub fn sidecar_check(store: &ValidatedStore) -> Check {
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
        SIDECAR,
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

pub fn deployment_check(d: Option<&Deployment>, what: &str) -> Check {
    let status = d.and_then(|d| d.status.clone()).unwrap_or_default();
    let wanted = d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    if available >= 1 {
        Check::ok(AVAILABLE, format!("{what}: {available}/{wanted} pods available"))
    } else {
        Check::not(UNAVAILABLE, format!("waiting for {what} pods: {available}/{wanted} available"))
    }
}

/// Where the sale's simulator Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Simulation {
    /// `spec.simulator.enabled: false`.
    Disabled,
    /// The Job is created once the scripts are in place.
    WaitingForScripts,
    /// The Job is created once its sale is started (not while Redis has lost it).
    WaitingForSale,
    /// The sale is started and its customers held back (`spec.simulator.hold`): no Job yet.
    Held {
        store: String,
    },
    Running {
        job: String,
    },
    Succeeded {
        job: String,
    },
    Failed {
        job: String,
        /// Why, in a sentence (`failure_cause`).
        cause: String,
    },
}

impl Simulation {
    /// From the live Job's status. A failure's cause is the Job's own until the pod's is read
    /// (`failure_cause`).
    pub fn of_job(job: String, status: &JobStatus) -> Self {
        if status.succeeded.unwrap_or(0) > 0 {
            Simulation::Succeeded { job }
        } else if status.failed.unwrap_or(0) > 0 {
            Simulation::Failed { cause: failure_cause(status, &[]), job }
        } else {
            Simulation::Running { job }
        }
    }

    /// The simulator Job's name, once there is one.
    pub fn job(&self) -> Option<&str> {
        match self {
            Simulation::Disabled
            | Simulation::WaitingForScripts
            | Simulation::WaitingForSale
            | Simulation::Held { .. } => None,
            Simulation::Running { job } | Simulation::Succeeded { job } | Simulation::Failed { job, .. } => Some(job),
        }
    }

    /// The SimulationComplete condition; `namespace` for the command that shows a failed Job's logs.
    pub fn check(&self, namespace: &str) -> Check {
        match self {
            Simulation::Disabled => Check::not(DISABLED, "the simulator is disabled (spec.simulator.enabled: false)"),
            Simulation::WaitingForScripts => {
                Check::not(WAITING_FOR_SCRIPTS, "the simulator starts once the scripts are loaded")
            }
            Simulation::WaitingForSale => {
                Check::not(WAITING_FOR_SALE, "the simulator starts once its sale is started (see SaleIntact)")
            }
            Simulation::Held { store } => Check::not(
                HELD,
                format!(
                    "the sale is ready and its customers are held back (spec.simulator.hold: true); let them in with \
                     kubectl -n {namespace} patch popupstore {store} --type merge -p \
                     '{{\"spec\":{{\"simulator\":{{\"hold\":false}}}}}}'"
                ),
            ),
            Simulation::Succeeded { job } => Check::ok(SUCCEEDED, format!("simulator Job {job} finished")),
            Simulation::Failed { job, cause } => Check::not(
                FAILED,
                format!("{}: {cause} (logs: kubectl -n {namespace} logs job/{job})", Self::failed_prefix(job)),
            ),
            Simulation::Running { job } => Check::not(RUNNING, format!("simulator Job {job} is running")),
        }
    }

    /// How the SimulationComplete message of a failed `job` begins.
    pub fn failed_prefix(job: &str) -> String {
        format!("simulator Job {job} failed")
    }

    /// The cause a SimulationComplete message of `check` holds (to reuse it without reading the pod again).
    pub fn cause_of_message(job: &str, message: &str) -> Option<String> {
        let rest = message.strip_prefix(&Self::failed_prefix(job))?.strip_prefix(": ")?;
        Some(rest.rsplit_once(" (logs: kubectl").map_or(rest, |(cause, _)| cause).to_string())
    }
}

/// Why a simulator Job failed, in a sentence: its container's termination message (what `simulate`
/// wrote when it gave up, or the last log lines of a crash: `FallbackToLogsOnError`), the container's
/// reason and exit code (OOMKilled, …), else the Job's own Failed condition (a deadline, a pod
/// that was deleted).
pub fn failure_cause(status: &JobStatus, pods: &[Pod]) -> String {
    let terminated = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| {
            let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            now.or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
        })
        .find(|t| t.exit_code != 0);
    if let Some(t) = terminated {
        let how = match t.reason.as_deref() {
            Some("OOMKilled") => {
                format!("killed for using more memory than its limit (OOMKilled, exit code {})", t.exit_code)
            }
            Some(r) if r != "Error" => format!("{r}, exit code {}", t.exit_code),
            _ => format!("exit code {}", t.exit_code),
        };
        return match t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => format!("{} ({how})", last_lines(m)),
            None => how,
        };
    }
    let condition = status.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
    match condition {
        Some(c) => match (c.reason.as_deref(), c.message.as_deref()) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => "the Job says it failed without a reason".into(),
        },
        None => "its pod is gone, and the Job names no cause".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PopUpStore;
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
        assert_eq!(c.reason, UNSCHEDULABLE);
        for words in ["amd64 only", "redismod", "spec.engine", "engine: triggers", "engine: native", NO_AMD64] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
    }

    #[test]
    fn other_unschedulable_pods_quote_the_scheduler() {
        let memory = "0/1 nodes are available: 1 Insufficient memory.";
        let c = redis_check(&sts(0), Some(&pending("Unschedulable", memory)), Engine::Gears);
        assert_eq!(c.reason, UNSCHEDULABLE);
        assert!(c.message.contains(memory) && !c.message.contains("amd64"), "{}", c.message);
        // Without our nodeSelector, a selector mismatch is not about the architecture.
        let c = redis_check(&sts(0), Some(&pending("Unschedulable", NO_AMD64)), Engine::Triggers);
        assert!(c.message.contains(NO_AMD64) && !c.message.contains("redismod"), "{}", c.message);
    }

    #[test]
    fn a_pod_on_its_way_is_starting_and_a_ready_one_running() {
        assert_eq!(redis_check(&sts(0), None, Engine::Gears).reason, STARTING);
        let scheduling_gate = pending("SchedulingGated", "waiting");
        assert_eq!(redis_check(&sts(0), Some(&scheduling_gate), Engine::Gears).reason, STARTING);
        let c = redis_check(&sts(1), Some(&pending("Unschedulable", NO_AMD64)), Engine::Gears);
        assert_eq!((c.ok, c.reason.as_str()), (true, RUNNING), "readiness wins over a stale condition");
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
        assert_eq!((c.ok, c.reason.as_str()), (false, REDIS_CRASHING));
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
        assert_eq!(c.reason, IMAGE_UNAVAILABLE);
        assert!(c.message.contains("example.com/redis:1") && c.message.contains("spec.redis.image"), "{}", c.message);
        let c = redis_check(
            &sts(0),
            Some(&waiting("CreateContainerConfigError", "secret \"x\" not found", None)),
            Engine::Triggers,
        );
        assert_eq!((c.reason.as_str(), c.message.contains("secret \"x\" not found")), (CONTAINER_ERROR, true));
        assert_eq!(
            redis_check(&sts(0), Some(&waiting("ContainerCreating", "", None)), Engine::Triggers).reason,
            STARTING
        );
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

    #[test]
    fn the_simulation_follows_its_job() {
        let status = |succeeded: Option<i32>, failed: Option<i32>| k8s_openapi::api::batch::v1::JobStatus {
            succeeded,
            failed,
            ..Default::default()
        };
        let job = || "shop-simulator-abc".to_string();
        let s = Simulation::of_job(job(), &status(None, None));
        assert_eq!(s, Simulation::Running { job: job() });
        assert_eq!((s.check("sales").ok, s.check("sales").reason.as_str()), (false, RUNNING));
        let s = Simulation::of_job(job(), &status(Some(1), Some(2)));
        assert_eq!(s.check("sales"), Check::ok(SUCCEEDED, "simulator Job shop-simulator-abc finished"));
        let s = Simulation::of_job(job(), &status(Some(0), Some(1)));
        let c = s.check("sales");
        assert_eq!((c.ok, c.reason.as_str()), (false, FAILED));
        assert!(c.message.contains("kubectl -n sales logs job/shop-simulator-abc"), "{}", c.message);
        assert_eq!(Simulation::WaitingForSale.check("sales").reason, WAITING_FOR_SALE);
        let held = Simulation::Held { store: "shop".into() };
        assert_eq!(held.job(), None);
        let c = held.check("sales");
        assert_eq!((c.ok, c.reason.as_str()), (false, HELD));
        assert!(
            c.message.ends_with(
                r#"kubectl -n sales patch popupstore shop --type merge -p '{"spec":{"simulator":{"hold":false}}}'"#
            ),
            "{}",
            c.message
        );
        assert_eq!(s.job(), Some("shop-simulator-abc"));
        assert_eq!(Simulation::Disabled.job(), None);
        assert_eq!(Simulation::Disabled.check("sales").reason, DISABLED);
        assert_eq!(Simulation::WaitingForScripts.check("sales").reason, WAITING_FOR_SCRIPTS);
    }

    fn failed_pod(reason: &str, exit_code: i32, message: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "status": {"containerStatuses": [{
                "name": "simulator", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_simulation_names_its_cause() {
        let job = "shop-simulator-abc";
        let failed = JobStatus { failed: Some(1), ..Default::default() };
        let said = "Error: Redis at shop-redis:6379 no longer holds sale abc: it restarted without its data";
        let cause = failure_cause(&failed, &[failed_pod("Error", 1, Some(said))]);
        assert_eq!(cause, format!("{said} (exit code 1)"));
        let s = Simulation::Failed { job: job.into(), cause: cause.clone() };
        let c = s.check("sales");
        assert_eq!(c.message, format!("simulator Job {job} failed: {cause} (logs: kubectl -n sales logs job/{job})"));
        assert_eq!(Simulation::cause_of_message(job, &c.message), Some(cause), "read back without the pod");
        assert_eq!(Simulation::cause_of_message("other", &c.message), None);

        let oom = failure_cause(&failed, &[failed_pod("OOMKilled", 137, None)]);
        assert_eq!(oom, "killed for using more memory than its limit (OOMKilled, exit code 137)");

        let deadline = JobStatus {
            failed: Some(1),
            conditions: Some(vec![k8s_openapi::api::batch::v1::JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                message: Some("Job was active longer than specified deadline".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(failure_cause(&deadline, &[]), "DeadlineExceeded: Job was active longer than specified deadline");
        assert_eq!(failure_cause(&failed, &[]), "its pod is gone, and the Job names no cause");
    }
}
