//! Redis: password Secret, scripts ConfigMap, headless and client Services, the StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, Probe, Secret, SecretVolumeSource, Service, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::acl::{ACL_DIR, ACL_FILE_KEY};
use super::component::Component;
use super::{
    BuildInputs, PASSWORD_KEY, PasswordSource, REDIS_PORT, ValidatedStore, child_meta, container_security, pod_labels,
    pod_selector, pod_template, resources_or, service_of,
};
use crate::crd::Engine;

pub const COMPONENT: Component = Component::Redis;
const DATA_DIR: &str = "/data";

/// Modules of the redismod image. Its CMD loads them; passing our own args replaces the CMD, so every
/// module has to be repeated here or it silently disappears.
pub const REDISMOD_MODULES: &[&[&str]] = &[
    &["/usr/lib/redis/modules/redisai.so"],
    &["/usr/lib/redis/modules/redisearch.so"],
    &["/usr/lib/redis/modules/redisgraph.so"],
    &["/usr/lib/redis/modules/redistimeseries.so"],
    &["/usr/lib/redis/modules/rejson.so"],
    &["/usr/lib/redis/modules/redisbloom.so"],
    &["/usr/lib/redis/modules/redisgears.so", "Plugin", "/var/opt/redislabs/modules/rg/plugin/gears_python.so"],
];

/// Redis and the modules the triggers engine needs in `redis/redis-stack-server` 7.x, where its
/// entrypoint.sh finds them. The entrypoint is bypassed: it would pass our arguments through the
/// unquoted `${REDIS_ARGS}`, where a shell splits and globs the password.
pub const REDIS_STACK_SERVER: &str = "/opt/redis-stack/bin/redis-server";
pub const REDIS_STACK_MODULES: &[&[&str]] = &[
    &["/opt/redis-stack/lib/redistimeseries.so"],
    &["/opt/redis-stack/lib/redisgears.so", "v8-plugin-path", "/opt/redis-stack/lib/libredisgears_v8_plugin.so"],
];

/// RedisGears 1 exists only in the amd64 redismod image: on another node its pod would fail with "exec
/// format error", so the gears engine's pod asks for amd64 nodes (the status says when there is none).
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const GEARS_ARCH: &str = "amd64";

/// The operator-generated password Secret; none when the user brings their own.
pub fn password_secret(store: &ValidatedStore, inputs: &BuildInputs) -> Option<Secret> {
    let PasswordSource::Generated { secret } = &store.password else { return None };
    let password = inputs.redis_password.clone().unwrap_or_default();
    Some(Secret {
        metadata: child_meta(store, secret.clone(), COMPONENT),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(PASSWORD_KEY.to_string(), ByteString(password.into_bytes()))])),
        ..Default::default()
    })
}

/// The processing scripts and settings the engine loads, visible to users in one ConfigMap: `scripts` are
/// its files (name → text), computed by the caller ([`BuildInputs::scripts`]).
pub fn scripts_config_map(store: &ValidatedStore, scripts: &BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(store, store.names.scripts(), Component::Scripts),
        data: Some(scripts.clone()),
        ..Default::default()
    }
}

/// Headless Service: stable DNS for the StatefulSet's pod.
pub fn headless_service(store: &ValidatedStore) -> Service {
    let spec =
        ServiceSpec { cluster_ip: Some("None".into()), publish_not_ready_addresses: Some(true), ..Default::default() };
    service_of(store, store.names.redis_headless(), COMPONENT, "redis", REDIS_PORT, spec)
}

/// Client Service: what Grafana, the simulator, the processor and the operator connect to.
pub fn client_service(store: &ValidatedStore) -> Service {
    let spec = ServiceSpec { type_: Some("ClusterIP".into()), ..Default::default() };
    service_of(store, store.names.redis(), COMPONENT, "redis", REDIS_PORT, spec)
}

/// The ACL file inside the Redis container.
pub fn acl_file_path() -> String {
    format!("{ACL_DIR}/{ACL_FILE_KEY}")
}

/// Entries per stream node in the native engine's Redis (Redis' default: 100).
pub const STREAM_NODE_MAX_ENTRIES: u32 = 16;

/// What Redis may use of its container's memory, derived from the container's memory limit (its request
/// when no limit is set), so that a flood of data or of big requests gets errors, not a container killed
/// for memory or an evicted sale key:
///
/// | setting | value | why |
/// |---|---|---|
/// | `maxmemory` | 70% of the limit | writes are refused (`OOM`) past it; the rest is for the AOF rewrite's fork, fragmentation and the modules |
/// | `maxmemory-policy` | `noeviction` | never drop a key (the stock, an order) to make room |
/// | `client-output-buffer-limit normal` | hard 1/16 of the limit, soft 1/32 for 10 s | a client that asks for replies and does not read them is disconnected (by default normal clients have no limit) |
/// | `proto-max-bulk-len` | 1/64 of the limit, between 1 MiB and 512 MiB | no single argument bigger (the largest we send, a script library, is a few KiB) |
/// | `client-query-buffer-limit` | 1/32 of the limit, at least 1 MiB | a client's unparsed input |
/// | `maxmemory-clients` (Redis 7+: native, triggers) | 1/8 of the limit | all clients' buffers together; past it the biggest clients are disconnected |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    pub maxmemory: u64,
    pub output_hard: u64,
    pub output_soft: u64,
    pub output_soft_seconds: u32,
    pub max_bulk: u64,
    pub query_buffer: u64,
    pub clients: u64,
}

const MIB: u64 = 1024 * 1024;

impl MemoryLimits {
    /// The limits for a container limited to `container` bytes.
    pub fn for_container(container: u64) -> MemoryLimits {
        MemoryLimits {
            maxmemory: (u128::from(container) * 7 / 10) as u64,
            output_hard: (container / 16).max(MIB),
            output_soft: (container / 32).max(MIB / 2),
            output_soft_seconds: 10,
            max_bulk: (container / 64).clamp(MIB, 512 * MIB),
            query_buffer: (container / 32).max(MIB),
            clients: (container / 8).max(MIB),
        }
    }

    /// The server arguments; `clients` only where Redis knows `maxmemory-clients` (7.0 or later).
    pub fn args(&self, redis7: bool) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--maxmemory".into(),
            self.maxmemory.to_string(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
            // Separate arguments: Redis 6.2 takes a quoted "normal 1 2 3" as one word and refuses it.
            "--client-output-buffer-limit".into(),
            "normal".into(),
            self.output_hard.to_string(),
            self.output_soft.to_string(),
            self.output_soft_seconds.to_string(),
            "--proto-max-bulk-len".into(),
            self.max_bulk.to_string(),
            "--client-query-buffer-limit".into(),
            self.query_buffer.to_string(),
        ];
        if redis7 {
            args.extend(["--maxmemory-clients".into(), self.clients.to_string()]);
        }
        args
    }
}

/// Bytes of a Kubernetes quantity (`512Mi`, `1Gi`, `1.5G`, `128974848`, `129e6`); `None` when unreadable.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .or_else(|| q.strip_suffix('m').map(|n| (n, 1e-3)))
        .unwrap_or((q, 1.0));
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * factor) as u64)
}

/// The Redis container's memory limit in bytes (its request when no limit is set), as rendered.
pub fn container_memory(store: &ValidatedStore) -> Option<u64> {
    let resources = resources_or(&store.spec.redis.resources, "100m", "128Mi", "512Mi");
    let of = |m: &Option<BTreeMap<String, Quantity>>| m.as_ref()?.get("memory").and_then(|q| quantity_bytes(&q.0));
    of(&resources.limits).or_else(|| of(&resources.requests)).filter(|b| *b > 0)
}

/// Redis server arguments for each image family. Persistence is on (AOF in `/data`) so a container
/// restart keeps the sale. The users come from the ACL file (password hashes only, see `acl`), so no
/// password is on the command line or in the environment. Memory: [`MemoryLimits`] of the container's
/// memory (none when neither a limit nor a request is set).
pub fn server_args(engine: Engine, memory: Option<u64>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--port".into(),
        REDIS_PORT.to_string(),
        "--dir".into(),
        DATA_DIR.into(),
        "--appendonly".into(),
        "yes".into(),
        "--aclfile".into(),
        acl_file_path(),
    ];
    if let Some(bytes) = memory {
        // redismod (gears) is Redis 6.2; redis-stack (triggers) and the native engine's images are 7 or later.
        args.extend(MemoryLimits::for_container(bytes).args(engine != Engine::Gears));
    }
    if engine == Engine::Native {
        // The processor removes the orders it decided by id (XDEL: its user may not trim a queue), and
        // XDEL finds an entry by walking its stream node from the start: nodes of 16 entries instead of
        // 100 keep a call of 510 orders about as fast as the trim was (docs/benchmarks.md), for about
        // 14 more bytes per stream entry.
        args.extend(["--stream-node-max-entries".into(), STREAM_NODE_MAX_ENTRIES.to_string()]);
    }
    let modules = match engine {
        Engine::Gears => REDISMOD_MODULES,
        Engine::Triggers => REDIS_STACK_MODULES,
        Engine::Native => &[],
    };
    for module in modules {
        args.push("--loadmodule".into());
        args.extend(module.iter().map(|s| s.to_string()));
    }
    args
}

/// The probes' command: Redis answers an unauthenticated `PING` with `NOAUTH` (every user has a password,
/// and the default user too, or is off), which shows it is up and serving its port, without a user or a
/// password for the probe (see docs/security.md, "Redis users"). A shell for the pipe only.
pub const PROBE_COMMAND: &str = "redis-cli -p 6379 ping 2>&1 | grep -qE '^(PONG|NOAUTH)'";

/// The Redis StatefulSet: one replica, its users from the ACL file, probes that need no user.
/// Nothing in the pod template depends on a password, so a rotation never restarts Redis.
pub fn statefulset(store: &ValidatedStore) -> StatefulSet {
    let engine = store.engine();
    let command = match engine {
        // redismod: ENTRYPOINT is redis-server, so our args replace its module list (repeated in server_args).
        Engine::Gears => None,
        // redis-stack-server: its entrypoint script would word-split our args (see REDIS_STACK_SERVER).
        Engine::Triggers => Some(vec![REDIS_STACK_SERVER.to_string()]),
        // The official image's entrypoint runs redis-server with args that start with `--`, as "$@".
        Engine::Native => None,
    };
    let args = Some(server_args(engine, container_memory(store)));
    let probe = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction { command: Some(vec!["sh".into(), "-c".into(), PROBE_COMMAND.into()]) }),
        initial_delay_seconds: Some(5),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let container = Container {
        name: "redis".into(),
        image: Some(store.redis_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command,
        args,
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(probe(5, 3)),
        liveness_probe: Some(probe(10, 6)),
        // A server that exits at start leaves its last log lines in the termination message, which the
        // operator quotes in RedisReady (a module that fails to load, a bad argument).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(resources_or(&store.spec.redis.resources, "100m", "128Mi", "512Mi")),
        // Third-party images may write outside /data at start-up, so the root filesystem stays writable.
        security_context: Some(container_security(false)),
        volume_mounts: Some(vec![
            VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() },
            // A directory mount, not subPath: the kubelet refreshes it when the Secret changes, so a Redis
            // restarted after a rotation reads the current users.
            VolumeMount { name: "acl".into(), mount_path: ACL_DIR.into(), read_only: Some(true), ..Default::default() },
        ]),
        ..Default::default()
    };
    // Only the ACL file: the operator's own password in the same Secret stays out of the pod.
    let acl_volume = Volume {
        name: "acl".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(store.names.redis_acl()),
            items: Some(vec![KeyToPath { key: ACL_FILE_KEY.into(), path: ACL_FILE_KEY.into(), ..Default::default() }]),
            // Group-readable for the redis user's fsGroup.
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (mut volumes, claims) = match &store.spec.redis.storage {
        Some(storage) => (
            Vec::new(),
            Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    // Claim templates are immutable: no operator version in them.
                    labels: Some(pod_labels(store, COMPONENT)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_string(), Quantity(storage.size.clone()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
        ),
        None => (
            vec![Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }],
            None,
        ),
    };
    volumes.push(acl_volume);
    StatefulSet {
        metadata: child_meta(store, store.names.redis(), COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(store.names.redis_headless()),
            selector: pod_selector(store, COMPONENT),
            volume_claim_templates: claims,
            // No checksum: Redis takes new passwords live (ACL SETUSER), and a restart could lose the sale.
            template: pod_template(
                store,
                COMPONENT,
                None,
                PodSpec {
                    containers: vec![container],
                    node_selector: (engine == Engine::Gears)
                        .then(|| BTreeMap::from([(ARCH_LABEL.to_string(), GEARS_ARCH.to_string())])),
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StorageSpec;
    use crate::render::tests::{build, inputs};
    use crate::render::{selector_labels, validate};
    use serde_json::json;

    fn container(engine: Engine, edit: impl FnOnce(&mut crate::crd::PopUpStoreSpec)) -> serde_json::Value {
        let (_, c) = build(engine, edit);
        serde_json::to_value(c.redis).unwrap()["spec"]["template"]["spec"]["containers"][0].clone()
    }

    #[test]
    fn redismod_args_repeat_every_module_with_the_acl_file() {
        let c = container(Engine::Gears, |_| {});
        assert_eq!(c["image"], crate::render::images::GEARS);
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        assert_eq!(args.iter().filter(|a| *a == "--loadmodule").count(), 7);
        for module in ["redisgears.so", "redistimeseries.so", "gears_python.so"] {
            assert!(args.iter().any(|a| a.ends_with(module)), "{module} missing from {args:?}");
        }
        let acl = args.iter().position(|a| a == "--aclfile").unwrap();
        assert_eq!(args[acl + 1], "/etc/redis/acl/users.acl");
        assert!(!args.iter().any(|a| a.contains("requirepass") || a.contains("$(")), "{args:?}");
    }

    #[test]
    fn redis_stack_runs_redis_server_directly_with_the_engine_modules() {
        let c = container(Engine::Triggers, |_| {});
        assert_eq!(c["command"], json!([REDIS_STACK_SERVER]), "not the entrypoint script, which word-splits");
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        assert_eq!(args, server_args(Engine::Triggers, Some(512 * MIB)));
        let modules: Vec<&str> = args.windows(2).filter(|w| w[0] == "--loadmodule").map(|w| w[1].as_str()).collect();
        assert_eq!(modules, ["/opt/redis-stack/lib/redistimeseries.so", "/opt/redis-stack/lib/redisgears.so"]);
        let gears = args.iter().position(|a| a.ends_with("redisgears.so")).unwrap();
        assert_eq!(args[gears + 1..gears + 3], ["v8-plugin-path", "/opt/redis-stack/lib/libredisgears_v8_plugin.so"]);
        assert!(c.get("env").is_none(), "no REDIS_ARGS: nothing goes through the entrypoint's shell");
    }

    #[test]
    fn no_password_reaches_the_redis_pod() {
        let nasty = r#"a b  *?[x] "dq" 'sq' $(HOME) $$ ${X} `id` ; \ --tail"#;
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let v = validate(&crate::render::tests::store_with(engine, |_| {})).unwrap();
            let mut i = inputs();
            i.redis_password = Some(nasty.into());
            let c = crate::render::build_children(&v, &i);
            let secret = c.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-redis")).unwrap();
            assert_eq!(secret.data.as_ref().unwrap()[PASSWORD_KEY].0, nasty.as_bytes(), "{engine}: stored as is");
            let sts = serde_json::to_value(c.redis).unwrap();
            let text = sts.to_string();
            assert!(!text.contains("dq") && !text.contains("s3cret"), "{engine}: no password in the StatefulSet");
            let pod = &sts["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            assert!(container.get("env").is_none(), "{engine}: no password in the environment");
            let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
            assert!(args.iter().all(|a| !a.contains("$(")), "{engine}: nothing for the kubelet to expand: {args:?}");
            // The ACL Secret is mounted with its file only, not the operator's password next to it.
            let acl = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "acl").unwrap();
            assert_eq!(acl["secret"]["secretName"], "shop-redis-acl");
            assert_eq!(acl["secret"]["items"], json!([{"key": "users.acl", "path": "users.acl"}]));
            let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "acl").unwrap();
            assert_eq!((mount["mountPath"].as_str(), mount.get("subPath")), (Some("/etc/redis/acl"), None));
        }
    }

    #[test]
    fn probes_need_no_user() {
        assert!(PROBE_COMMAND.contains(&format!("-p {REDIS_PORT} ")));
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let c = container(engine, |_| {});
            for probe in ["readinessProbe", "livenessProbe"] {
                let cmd = c[probe]["exec"]["command"][2].as_str().unwrap().to_string();
                assert_eq!(cmd, "redis-cli -p 6379 ping 2>&1 | grep -qE '^(PONG|NOAUTH)'", "{engine} {probe}");
                assert!(!cmd.contains("--user") && !cmd.contains("--pass") && !cmd.contains("-a "), "{cmd}");
            }
        }
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        for (q, bytes) in [
            ("512Mi", 512 * MIB),
            ("1Gi", 1024 * MIB),
            ("1.5Gi", 1536 * MIB),
            ("128974848", 128_974_848),
            ("129M", 129_000_000),
            ("129e6", 129_000_000),
            ("1k", 1000),
            ("64Ki", 65_536),
            ("1000m", 1),
        ] {
            assert_eq!(quantity_bytes(q), Some(bytes), "{q}");
        }
        for bad in ["", "lots", "-1Gi", "1Qi"] {
            assert_eq!(quantity_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_limits_are_shares_of_the_container_limit() {
        let m = MemoryLimits::for_container(512 * MIB);
        assert_eq!(m.maxmemory, 375_809_638, "70%");
        assert_eq!((m.output_hard, m.output_soft, m.output_soft_seconds), (32 * MIB, 16 * MIB, 10));
        assert_eq!((m.max_bulk, m.query_buffer, m.clients), (8 * MIB, 16 * MIB, 64 * MIB));
        // Small containers keep Redis' minimums; big ones stay under Redis' largest bulk.
        let small = MemoryLimits::for_container(16 * MIB);
        assert_eq!((small.max_bulk, small.query_buffer, small.output_hard), (MIB, MIB, MIB));
        assert_eq!(MemoryLimits::for_container(1024 * 1024 * MIB).max_bulk, 512 * MIB);
        // Everything Redis may hold at once stays under the limit: the data up to maxmemory (which counts the
        // clients' buffers too) and what is not counted there (the fork, fragmentation) in the rest.
        for limit in [128 * MIB, 512 * MIB, 4096 * MIB] {
            let m = MemoryLimits::for_container(limit);
            assert!(m.maxmemory < limit && m.clients < m.maxmemory && m.output_hard < m.clients, "{m:?}");
            assert!(m.query_buffer >= m.max_bulk, "a whole bulk fits the query buffer: {m:?}");
        }
    }

    #[test]
    fn the_memory_settings_follow_the_container_limit() {
        let arg = |args: &[String], name: &str| {
            args.iter().position(|a| a == name).map(|i| args[i + 1..].iter().take(4).cloned().collect::<Vec<_>>())
        };
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let c = container(engine, |_| {});
            let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
            assert_eq!(arg(&args, "--maxmemory").unwrap()[0], "375809638", "{engine}: 70% of the default 512Mi");
            assert_eq!(arg(&args, "--maxmemory-policy").unwrap()[0], "noeviction");
            assert_eq!(arg(&args, "--client-output-buffer-limit").unwrap(), ["normal", "33554432", "16777216", "10"]);
            assert_eq!(arg(&args, "--maxmemory-clients").is_some(), engine != Engine::Gears, "{engine}: 7+ only");
            let nodes = arg(&args, "--stream-node-max-entries").map(|v| v[0].clone());
            assert_eq!(nodes.as_deref(), (engine == Engine::Native).then_some("16"), "{engine}");
        }
        let with = |limits: Option<&str>, requests: Option<&str>| {
            let c = container(Engine::Native, |s| {
                let map = |v: Option<&str>| v.map(|v| BTreeMap::from([("memory".to_string(), Quantity(v.into()))]));
                s.redis.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                    limits: map(limits),
                    requests: map(requests),
                    ..Default::default()
                });
            });
            let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
            arg(&args, "--maxmemory").map(|v| v[0].clone())
        };
        assert_eq!(with(Some("2Gi"), Some("1Gi")).as_deref(), Some("1503238553"), "70% of the limit");
        assert_eq!(with(None, Some("1Gi")).as_deref(), Some("751619276"), "no limit: 70% of the request");
        assert_eq!(with(None, None), None, "neither: Redis' defaults");
    }

    #[test]
    fn only_the_gears_pod_is_kept_to_amd64_nodes() {
        for (engine, selector) in [
            (Engine::Gears, Some(json!({"kubernetes.io/arch": "amd64"}))),
            (Engine::Triggers, None),
            (Engine::Native, None),
        ] {
            let (_, c) = build(engine, |_| {});
            let pod = serde_json::to_value(c.redis).unwrap()["spec"]["template"]["spec"].clone();
            assert_eq!(pod.get("nodeSelector").cloned(), selector, "{engine}");
        }
    }

    #[test]
    fn storage_becomes_a_claim_template_else_an_empty_dir() {
        let (_, c) = build(Engine::Native, |s| {
            s.redis.storage = Some(StorageSpec { size: "2Gi".into(), storage_class_name: Some("fast".into()) })
        });
        let sts = serde_json::to_value(c.redis).unwrap();
        let claim = &sts["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        let volumes: Vec<&str> = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(volumes, ["acl"], "the data is on the claim");

        let (_, c) = build(Engine::Native, |_| {});
        let sts = serde_json::to_value(c.redis).unwrap();
        assert!(sts["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].is_object());
        assert!(sts["spec"].get("volumeClaimTemplates").is_none());
    }

    #[test]
    fn statefulset_shape() {
        let (v, c) = build(Engine::Gears, |_| {});
        let sts = c.redis;
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("shop-redis-headless"));
        assert_eq!(spec.selector.match_labels.unwrap(), selector_labels(&v, COMPONENT));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(999), "redis in the official images");
        // Nothing that changes with a password: a rotation must not restart Redis.
        assert!(spec.template.metadata.unwrap().annotations.is_none());
    }

    #[test]
    fn services_select_the_redis_pod() {
        let (v, c) = build(Engine::Gears, |_| {});
        let by_name = |n: &str| c.services.iter().find(|s| s.metadata.name.as_deref() == Some(n)).unwrap().clone();
        let headless = by_name("shop-redis-headless").spec.unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        let client = by_name("shop-redis").spec.unwrap();
        assert_eq!(client.ports.unwrap()[0].port, 6379);
        assert_eq!(client.selector.unwrap(), selector_labels(&v, COMPONENT));
    }

    #[test]
    fn generated_secret_holds_the_password() {
        let (_, c) = build(Engine::Gears, |_| {});
        let s = c.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-redis")).unwrap();
        assert_eq!(s.data.as_ref().unwrap()[PASSWORD_KEY].0, b"s3cret-redis");
    }

    #[test]
    fn scripts_config_map_carries_the_scripts_given() {
        let (_, c) = build(Engine::Triggers, |_| {});
        let cm = c.config_maps.iter().find(|m| m.metadata.name.as_deref() == Some("shop-scripts")).unwrap();
        assert_eq!(cm.data.as_ref(), Some(&crate::render::tests::test_scripts()));
    }

    #[test]
    fn other_scripts_roll_the_native_processor() {
        let v = validate(&crate::render::tests::store_with(Engine::Native, |_| {})).unwrap();
        let checksum = |i: &BuildInputs| {
            let c = crate::render::build_children(&v, i);
            let processor =
                c.deployments.iter().find(|d| d.metadata.name.as_deref() == Some("shop-processor")).unwrap();
            processor.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone()
        };
        let mut i = inputs();
        let before = checksum(&i);
        assert_eq!(before, checksum(&i));
        i.scripts.insert("native_apply.lua".into(), "return 1".into());
        assert_ne!(before, checksum(&i));
    }
}
