//! Grafana: admin Secret, provisioning and dashboard ConfigMaps, Deployment and Service.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PodSpec, Probe, Secret, SecretKeySelector, Service, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use serde_json::json;

use super::acl::{self, Role};
use super::component::Component;
use super::{
    BuildInputs, GRAFANA_PORT, ValidatedStore, child_meta, container_security, deployment_of, resources_or, service_of,
    sha256_hex,
};

pub const COMPONENT: Component = Component::Grafana;
/// The Redis datasource plugin, installed before provisioning runs (`GF_PLUGINS_PREINSTALL_SYNC`, Grafana ≥ 12.1).
pub const PLUGIN: &str = "redis-datasource@2.2.0";
/// The startup probe allows 10 s × 60 = 10 minutes for the plugin download before the pod is restarted.
pub const STARTUP_PROBE_PERIOD: i32 = 10;
pub const STARTUP_PROBE_FAILURES: i32 = 60;
/// Grafana's admin user; the operator logs in as it to check the dashboard (GrafanaReady).
pub const ADMIN_USER: &str = "admin";
/// Key of the admin password in `<store>-grafana`.
pub const ADMIN_PASSWORD_KEY: &str = "admin-password";
/// The dashboard shipped with the operator; [`dashboard_json`] gives each store its own copy.
pub const DASHBOARD_JSON: &str = crate::dashboard::panels::GRAFANA_DASHBOARD;
pub const DASHBOARD_FILE: &str = "popup-store.json";
const DASHBOARDS_DIR: &str = "/etc/grafana/dashboards/popup";

/// Short stable id of a store, unique across namespaces (Grafana uids are at most 40 characters).
fn store_id(store: &ValidatedStore) -> String {
    sha256_hex(format!("{}/{}", store.namespace, store.names.store).as_bytes())[..10].to_string()
}

/// uid of the store's datasource; the dashboard's `datasource` variable defaults to it.
pub fn datasource_uid(store: &ValidatedStore) -> String {
    format!("popup-redis-{}", store_id(store))
}

pub fn dashboard_uid(store: &ValidatedStore) -> String {
    format!("popup-store-{}", store_id(store))
}

pub fn datasource_name(store: &ValidatedStore) -> String {
    format!("Redis {}/{}", store.namespace, store.names.store)
}

/// The shipped dashboard with this store's uid, title and default datasource, so several stores can
/// share one Grafana (sidecar mode) without overwriting each other.
pub fn dashboard_json(store: &ValidatedStore) -> String {
    // Parsing and printing 30 KB of JSON per store was a third of a store's build: the dashboard is
    // printed once with placeholders, and each store's values (JSON strings) replace them.
    static TEMPLATE: LazyLock<String> = LazyLock::new(|| {
        dashboard_with(json!(PLACEHOLDERS[0]), json!(PLACEHOLDERS[1]), json!(PLACEHOLDERS[2]), json!(PLACEHOLDERS[3]))
    });
    let values = [
        json!(dashboard_uid(store)),
        json!(dashboard_title(store)),
        json!(datasource_name(store)),
        json!(datasource_uid(store)),
    ];
    PLACEHOLDERS.iter().zip(values).fold(TEMPLATE.clone(), |text, (placeholder, value)| {
        text.replace(&json!(placeholder).to_string(), &value.to_string())
    })
}

/// Stand-ins for the uid, the title, the datasource's name and uid: strings the dashboard never holds.
const PLACEHOLDERS: [&str; 4] =
    ["@@popup-dashboard-uid@@", "@@popup-title@@", "@@popup-datasource-name@@", "@@popup-datasource-uid@@"];

fn dashboard_title(store: &ValidatedStore) -> String {
    format!("Pop-up Store {}/{}", store.namespace, store.names.store)
}

/// The shipped dashboard with these values set, printed.
fn dashboard_with(
    uid: serde_json::Value,
    title: serde_json::Value,
    datasource_name: serde_json::Value,
    datasource_uid: serde_json::Value,
) -> String {
    let mut d: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).expect("the shipped dashboard is valid JSON");
    d["uid"] = uid;
    d["title"] = title;
    if let Some(vars) = d["templating"]["list"].as_array_mut() {
        for v in vars.iter_mut().filter(|v| v["name"] == "datasource") {
            v["current"] = json!({"text": datasource_name, "value": datasource_uid});
        }
    }
    // Compact: the API server parses each store's copy at every apply, stores it and sends it to every
    // watch; indented, it was 21.6 KB, the largest child. Grafana reads both alike.
    serde_json::to_string(&d).expect("serializes")
}

/// The datasource provisioning file. The plugin logs in as the Grafana user (`acl`: `AUTH user password`),
/// which may only read what the dashboard shows. `password` is what lands in `secureJsonData.password`:
/// the `$REDIS_PASSWORD` reference in managed mode (Grafana expands it from the env fed by the Secret),
/// the value itself in sidecar mode (where the file is a Secret).
pub fn datasource_yaml(store: &ValidatedStore, password: &str, is_default: bool) -> String {
    let file = json!({
        "apiVersion": 1,
        "datasources": [{
            "name": datasource_name(store),
            "uid": datasource_uid(store),
            "type": "redis-datasource",
            "access": "proxy",
            "orgId": 1,
            "isDefault": is_default,
            "editable": false,
            "url": format!("redis://{}", store.names.redis_address(&store.namespace)),
            "jsonData": {
                "client": "standalone", "poolSize": 5, "timeout": 10, "pingInterval": 0, "pipelineWindow": 0,
                "acl": true, "user": Role::Grafana.user(),
            },
            "secureJsonData": {"password": password},
        }],
    });
    serde_yaml::to_string(&file).expect("serializes")
}

/// Grafana's admin password, generated by the operator (anonymous visitors only get Viewer).
pub fn admin_secret(store: &ValidatedStore, inputs: &BuildInputs) -> Secret {
    Secret {
        metadata: child_meta(store, store.names.grafana(), COMPONENT),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            ("admin-user".to_string(), ByteString(ADMIN_USER.as_bytes().to_vec())),
            (ADMIN_PASSWORD_KEY.to_string(), ByteString(inputs.grafana_admin_password.clone().into_bytes())),
        ])),
        ..Default::default()
    }
}

/// Datasource and dashboard-provider files for the managed Grafana. The Redis password is not here.
pub fn provisioning_config_map(store: &ValidatedStore) -> ConfigMap {
    let provider = serde_yaml::to_string(&json!({
        "apiVersion": 1,
        "providers": [{
            "name": "popup-store",
            "orgId": 1,
            "type": "file",
            "disableDeletion": true,
            "allowUiUpdates": false,
            "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_DIR},
        }],
    }))
    .expect("serializes");
    ConfigMap {
        metadata: child_meta(store, store.names.grafana_provisioning(), COMPONENT),
        data: Some(BTreeMap::from([
            ("datasource.yaml".to_string(), datasource_yaml(store, "$REDIS_PASSWORD", true)),
            ("dashboards.yaml".to_string(), provider),
        ])),
        ..Default::default()
    }
}

pub fn dashboards_config_map(store: &ValidatedStore) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(store, store.names.grafana_dashboards(), COMPONENT),
        data: Some(BTreeMap::from([(DASHBOARD_FILE.to_string(), dashboard_json(store))])),
        ..Default::default()
    }
}

/// Sidecar mode: the datasource, password included, as a Secret labelled for the Grafana sidecar.
pub fn sidecar_datasource_secret(store: &ValidatedStore, inputs: &BuildInputs) -> Secret {
    let sc = &store.spec.grafana.sidecar;
    let mut meta = child_meta(store, store.names.grafana_datasource(), COMPONENT);
    meta.labels.get_or_insert_default().insert(sc.datasource_label.clone(), sc.label_value.clone());
    let password = inputs.credentials.password(Role::Grafana);
    // Another datasource of the user's Grafana is likely the default already.
    let file = datasource_yaml(store, password, false);
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            format!("popup-{}-{}.yaml", store.namespace, store.names.store),
            ByteString(file.into_bytes()),
        )])),
        ..Default::default()
    }
}

/// Sidecar mode: the dashboard as a ConfigMap labelled for the Grafana sidecar.
pub fn sidecar_dashboard_config_map(store: &ValidatedStore) -> ConfigMap {
    let sc = &store.spec.grafana.sidecar;
    let mut meta = child_meta(store, store.names.grafana_dashboards(), COMPONENT);
    meta.labels.get_or_insert_default().insert(sc.dashboard_label.clone(), sc.label_value.clone());
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            format!("popup-{}-{}.json", store.namespace, store.names.store),
            dashboard_json(store),
        )])),
        ..Default::default()
    }
}

pub fn service(store: &ValidatedStore) -> Service {
    let spec = ServiceSpec { type_: Some(store.spec.grafana.service_type.as_str().into()), ..Default::default() };
    service_of(store, store.names.grafana(), COMPONENT, "http", GRAFANA_PORT, spec)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// Grafana with the Redis plugin, the provisioned datasource and dashboard; anonymous Viewer access only
/// with `spec.grafana.anonymousViewers`.
/// `checksum` covers everything the pod reads, so a change rolls it.
pub fn deployment(store: &ValidatedStore, checksum: &str) -> Deployment {
    let env = vec![
        env("GF_PLUGINS_PREINSTALL_SYNC", PLUGIN),
        env("GF_SECURITY_ADMIN_USER", ADMIN_USER),
        EnvVar {
            name: "GF_SECURITY_ADMIN_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: store.names.grafana(),
                    key: ADMIN_PASSWORD_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The original demo gave anonymous visitors Admin; here they may only look, and only when the store
        // asks for it: a Viewer can send any query through the datasource (docs/security.md).
        env("GF_AUTH_ANONYMOUS_ENABLED", if store.spec.grafana.anonymous_viewers { "true" } else { "false" }),
        env("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"),
        env("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", &format!("{DASHBOARDS_DIR}/{DASHBOARD_FILE}")),
        env("GF_ANALYTICS_REPORTING_ENABLED", "false"),
        env("GF_ANALYTICS_CHECK_FOR_UPDATES", "false"),
        env("GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", "false"),
        acl::password_env(store, Role::Grafana, "REDIS_PASSWORD"),
    ];
    let health = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/api/health".into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let mount =
        |name: &str, path: &str| VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() };
    let container = Container {
        name: "grafana".into(),
        image: Some(store.grafana_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: GRAFANA_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Grafana installs the plugin before it serves HTTP (GF_PLUGINS_PREINSTALL_SYNC), which can take
        // minutes on a slow network: allow up to STARTUP_PROBE_PERIOD × STARTUP_PROBE_FAILURES. Readiness
        // and liveness only start once this passes, so they need no initial delay.
        startup_probe: Some(health(STARTUP_PROBE_PERIOD, STARTUP_PROBE_FAILURES)),
        readiness_probe: Some(health(5, 3)),
        liveness_probe: Some(health(10, 6)),
        resources: Some(resources_or(&store.spec.grafana.resources, "50m", "128Mi", "512Mi")),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/grafana"),
            mount("tmp", "/tmp"),
            // Grafana may log to files here; the root filesystem is read-only.
            mount("logs", "/var/log/grafana"),
            mount("provisioning", "/etc/grafana/provisioning"),
            mount("dashboards", DASHBOARDS_DIR),
        ]),
        ..Default::default()
    };
    let config_map =
        |name: String, items: Option<Vec<KeyToPath>>| ConfigMapVolumeSource { name, items, ..Default::default() };
    let item = |key: &str, path: &str| KeyToPath { key: key.into(), path: path.into(), ..Default::default() };
    let volumes = vec![
        Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        Volume { name: "logs".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        Volume {
            name: "provisioning".into(),
            config_map: Some(config_map(
                store.names.grafana_provisioning(),
                Some(vec![
                    item("datasource.yaml", "datasources/popup.yaml"),
                    item("dashboards.yaml", "dashboards/popup.yaml"),
                ]),
            )),
            ..Default::default()
        },
        Volume {
            name: "dashboards".into(),
            config_map: Some(config_map(store.names.grafana_dashboards(), None)),
            ..Default::default()
        },
    ];
    let pod = PodSpec { containers: vec![container], volumes: Some(volumes), ..Default::default() };
    deployment_of(store, store.names.grafana(), COMPONENT, 1, checksum, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_from_the_template_is_the_one_printed_directly() {
        for (ns, name) in [("sales", "shop"), ("a", "b-2"), ("popup-demo", "demo")] {
            let mut s = crate::crd::PopUpStore::new(name, serde_json::from_value(json!({})).unwrap());
            s.metadata.namespace = Some(ns.into());
            let store = crate::render::validate(&s).unwrap();
            let direct = dashboard_with(
                json!(dashboard_uid(&store)),
                json!(dashboard_title(&store)),
                json!(datasource_name(&store)),
                json!(datasource_uid(&store)),
            );
            assert_eq!(dashboard_json(&store), direct);
            assert!(!direct.contains("@@popup-"), "no placeholder left");
        }
    }
    use crate::crd::{Engine, ServiceType};
    use crate::render::CONFIG_CHECKSUM_ANNOTATION;
    use crate::render::tests::build;

    fn grafana_container(c: &crate::render::Children) -> serde_json::Value {
        let d = c.deployments.iter().find(|d| d.metadata.name.as_deref() == Some("shop-grafana")).unwrap();
        serde_json::to_value(d).unwrap()["spec"]["template"]["spec"]["containers"][0].clone()
    }

    fn env_value(c: &serde_json::Value, name: &str) -> serde_json::Value {
        c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_default()
    }

    #[test]
    fn grafana_is_provisioned_with_plugin_viewer_access_and_secret_passwords() {
        let (_, c) = build(Engine::Gears, |_| {});
        let g = grafana_container(&c);
        assert_eq!(g["image"], crate::render::images::GRAFANA);
        assert_eq!(env_value(&g, "GF_PLUGINS_PREINSTALL_SYNC")["value"], PLUGIN);
        assert_eq!(env_value(&g, "GF_AUTH_ANONYMOUS_ORG_ROLE")["value"], "Viewer");
        assert_eq!(env_value(&g, "GF_AUTH_ANONYMOUS_ENABLED")["value"], "false", "anonymous access is opt-in");
        let (_, c) = build(Engine::Gears, |s| s.grafana.anonymous_viewers = true);
        assert_eq!(env_value(&grafana_container(&c), "GF_AUTH_ANONYMOUS_ENABLED")["value"], "true");
        assert_eq!(env_value(&g, "GF_SECURITY_ADMIN_PASSWORD")["valueFrom"]["secretKeyRef"]["name"], "shop-grafana");
        assert_eq!(env_value(&g, "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["name"], "shop-redis-grafana");
        assert_eq!(g["readinessProbe"]["httpGet"]["path"], "/api/health");
        assert_eq!(g["securityContext"]["readOnlyRootFilesystem"], true);
    }

    #[test]
    fn a_startup_probe_waits_for_the_plugin_install_and_gates_the_other_probes() {
        let (_, c) = build(Engine::Triggers, |_| {});
        let g = grafana_container(&c);
        let startup = &g["startupProbe"];
        assert_eq!(startup["httpGet"], g["readinessProbe"]["httpGet"], "the same check as readiness");
        assert_eq!(startup["httpGet"]["path"], "/api/health");
        let budget = startup["periodSeconds"].as_i64().unwrap() * startup["failureThreshold"].as_i64().unwrap();
        assert!(budget >= 600, "a slow plugin download gets 10 minutes, got {budget} s");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(g[probe]["httpGet"]["path"], "/api/health", "{probe}");
            // The startup probe gates them: an initial delay would only postpone Ready.
            assert!(g[probe].get("initialDelaySeconds").is_none(), "{probe}: {}", g[probe]);
        }
        let liveness = &g["livenessProbe"];
        let patience = liveness["periodSeconds"].as_i64().unwrap() * liveness["failureThreshold"].as_i64().unwrap();
        assert!(patience >= 30, "a running Grafana is not restarted for one slow answer: {patience} s");
    }

    #[test]
    fn datasource_points_at_the_store_redis_without_the_password() {
        let (v, c) = build(Engine::Gears, |_| {});
        let cm =
            c.config_maps.iter().find(|m| m.metadata.name.as_deref() == Some("shop-grafana-provisioning")).unwrap();
        let ds: serde_yaml::Value = serde_yaml::from_str(&cm.data.as_ref().unwrap()["datasource.yaml"]).unwrap();
        let ds = &ds["datasources"][0];
        assert_eq!(ds["type"], "redis-datasource");
        assert_eq!(ds["url"], "redis://shop-redis.sales.svc:6379");
        assert_eq!(ds["uid"], datasource_uid(&v).as_str());
        assert_eq!(ds["isDefault"], true);
        assert_eq!(ds["jsonData"]["client"], "standalone");
        // The plugin logs in as the read-only Grafana user, not as the admin.
        assert_eq!(
            (ds["jsonData"]["acl"].as_bool(), ds["jsonData"]["user"].as_str()),
            (Some(true), Some("popup-grafana"))
        );
        assert_eq!(ds["secureJsonData"]["password"], "$REDIS_PASSWORD");
        let provider: serde_yaml::Value = serde_yaml::from_str(&cm.data.as_ref().unwrap()["dashboards.yaml"]).unwrap();
        assert_eq!(provider["providers"][0]["options"]["path"], DASHBOARDS_DIR);
    }

    #[test]
    fn each_store_gets_its_own_dashboard_and_datasource_identity() {
        let (a, _) = build(Engine::Gears, |_| {});
        let mut other = a.clone();
        other.namespace = "other".into();
        assert_ne!(dashboard_uid(&a), dashboard_uid(&other));
        assert_ne!(datasource_uid(&a), datasource_uid(&other));
        assert!(dashboard_uid(&a).len() <= 40 && datasource_uid(&a).len() <= 40);
        let d: serde_json::Value = serde_json::from_str(&dashboard_json(&a)).unwrap();
        assert_eq!(d["uid"], dashboard_uid(&a));
        assert_eq!(d["title"], "Pop-up Store sales/shop");
        let var = &d["templating"]["list"][0];
        assert_eq!((var["name"].as_str(), var["type"].as_str()), (Some("datasource"), Some("datasource")));
        assert_eq!(var["query"], "redis-datasource");
        assert_eq!(var["current"]["value"], datasource_uid(&a));
    }

    #[test]
    fn sidecar_mode_emits_labelled_datasource_and_dashboard_and_no_grafana() {
        let (v, c) = build(Engine::Gears, |s| {
            s.grafana.mode = crate::crd::GrafanaMode::Sidecar;
            s.grafana.sidecar.dashboard_label = "my_dashboards".into();
            s.grafana.sidecar.label_value = "yes".into();
        });
        assert!(c.deployments.is_empty(), "no Grafana is deployed in sidecar mode");
        assert!(c.services.iter().all(|s| !s.metadata.name.as_ref().unwrap().contains("grafana")));
        let secret = c.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-grafana-datasource")).unwrap();
        assert_eq!(secret.metadata.labels.as_ref().unwrap()["grafana_datasource"], "yes");
        let file = String::from_utf8(secret.data.as_ref().unwrap()["popup-sales-shop.yaml"].0.clone()).unwrap();
        let ds: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
        assert_eq!(
            ds["datasources"][0]["secureJsonData"]["password"], "s3cret-grafana-user",
            "the sidecar's Grafana has no env to expand"
        );
        assert_eq!(ds["datasources"][0]["isDefault"], false);
        let cm = c.config_maps.iter().find(|m| m.metadata.name.as_deref() == Some("shop-grafana-dashboards")).unwrap();
        assert_eq!(cm.metadata.labels.as_ref().unwrap()["my_dashboards"], "yes");
        assert_eq!(cm.data.as_ref().unwrap()["popup-sales-shop.json"], dashboard_json(&v));
        assert!(c.secrets.iter().all(|s| s.metadata.name.as_deref() != Some("shop-grafana")), "no admin Secret");
    }

    #[test]
    fn grafana_none_means_no_grafana_objects() {
        for edit in [(|s: &mut crate::crd::PopUpStoreSpec| s.grafana.enabled = false) as fn(&mut _), |s| {
            s.grafana.mode = crate::crd::GrafanaMode::None
        }] {
            let (_, c) = build(Engine::Gears, edit);
            let names: Vec<String> =
                c.to_values().iter().map(|v| v["metadata"]["name"].as_str().unwrap().to_string()).collect();
            assert!(names.iter().all(|n| !n.contains("grafana")), "{names:?}");
        }
    }

    #[test]
    fn invalid_sidecar_label_is_named() {
        let store = crate::render::tests::store_with(Engine::Gears, |s| {
            s.grafana.mode = crate::crd::GrafanaMode::Sidecar;
            s.grafana.sidecar.datasource_label = "not a label".into();
        });
        assert_eq!(crate::render::validate(&store).unwrap_err().fields(), ["spec.grafana.sidecar.datasourceLabel"]);
    }

    #[test]
    fn dashboard_change_or_password_change_rolls_the_pod() {
        let (v, _) = build(Engine::Gears, |_| {});
        let mut i = crate::render::tests::inputs();
        let before = crate::render::build_children(&v, &i);
        i.credentials.passwords.insert(Role::Grafana, "rotated".into());
        let after = crate::render::build_children(&v, &i);
        let checksum = |c: &crate::render::Children| {
            c.deployments[0].spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
                [CONFIG_CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_ne!(checksum(&before), checksum(&after));
    }

    #[test]
    fn service_type_follows_the_spec() {
        let (_, c) = build(Engine::Gears, |s| s.grafana.service_type = ServiceType::NodePort);
        let svc = c.services.iter().find(|s| s.metadata.name.as_deref() == Some("shop-grafana")).unwrap();
        assert_eq!(svc.spec.as_ref().unwrap().type_.as_deref(), Some("NodePort"));
    }

    #[test]
    fn shipped_dashboard_uses_the_current_query_model_and_the_datasource_variable() {
        let d: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        assert_eq!(d["refresh"], "5s");
        let panels: Vec<&serde_json::Value> =
            d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect();
        assert!(panels.len() >= 12, "the original's 8 panels and more: {}", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            let targets = p["targets"].as_array().unwrap();
            let refs: Vec<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
            for t in targets {
                if t["datasource"]["type"] == "__expr__" {
                    let expr = t["expression"].as_str().unwrap();
                    for r in expr.split('$').skip(1).map(|r| &r[..1]) {
                        assert!(refs.contains(&r), "{title}: expression {expr} uses unknown ${r}");
                    }
                    continue;
                }
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
                assert!(t["keyName"].is_string() && t.get("key").is_none(), "{title}: keyName, not the 2020 key");
                assert_eq!(t["query"], "", "{title}: a non-empty query would override the command");
                let command = t["command"].as_str().unwrap();
                assert_eq!(command, command.to_lowercase(), "{title}");
                match t["type"].as_str().unwrap() {
                    "command" => assert!(["get", "xlen"].contains(&command), "{title}: {command}"),
                    "timeSeries" => {
                        assert_eq!(command, "ts.range", "{title}");
                        assert!(t["bucket"].as_u64().unwrap() >= 1000, "{title}");
                        assert!(t["aggregation"].is_string(), "{title}");
                    }
                    other => panic!("{title}: query type {other}"),
                }
            }
        }
    }

    /// The name Grafana gives each line. The plugin names a TS.RANGE frame after the target's `legend`
    /// and its value field after the target's `value`; without `value` the field has no name and Grafana
    /// calls the line "Value". Grafana shows the field's name, prefixed by the frame's when a panel has
    /// frames of different names; an expression's line is called after its refId unless a
    /// `displayName` override names it. (tests/grafana_real.rs checks the same names on a real Grafana.)
    #[test]
    fn every_line_of_the_dashboard_is_named() {
        let d: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] == "timeseries") {
            let title = p["title"].as_str().unwrap();
            let targets = p["targets"].as_array().unwrap();
            let series: Vec<&serde_json::Value> = targets.iter().filter(|t| t["type"] == "timeSeries").collect();
            for t in &series {
                let value = t["value"].as_str().unwrap_or_default();
                assert!(!value.is_empty() && value != "Value", "{title}: target {} names no value", t["refId"]);
                assert!(!t["legend"].as_str().unwrap_or_default().is_empty(), "{title}: no legend");
            }
            let visible: Vec<&serde_json::Value> =
                targets.iter().filter(|t| !t["hide"].as_bool().unwrap_or(false)).collect();
            for t in &visible {
                if t["datasource"]["type"] == "__expr__" {
                    let named = p["fieldConfig"]["overrides"].as_array().unwrap().iter().any(|o| {
                        o["matcher"] == json!({"id": "byFrameRefID", "options": t["refId"]})
                            && o["properties"].as_array().unwrap().iter().any(|p| p["id"] == "displayName")
                    });
                    assert!(named, "{title}: the expression {} would be called {0}", t["refId"]);
                }
            }
            // One line: the frame's name is not shown, so the value says it all, and says the legend.
            // Several: the frames' names differ, so each line reads "<legend> <value>".
            if visible.len() == 1 && series.len() == 1 {
                assert_eq!(series[0]["value"], series[0]["legend"], "{title}");
            }
            let legends: std::collections::BTreeSet<&str> =
                visible.iter().filter_map(|t| t["legend"].as_str()).collect();
            assert_eq!(legends.len(), visible.iter().filter(|t| t["type"] == "timeSeries").count(), "{title}");
        }
    }

    /// A sale can be shorter than a panel's bucket: one bucket is one point, which a line without points
    /// does not draw. Panels with minute buckets therefore draw their points.
    #[test]
    fn a_sale_shorter_than_a_bucket_still_shows() {
        let d: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        let mut checked = 0;
        for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] == "timeseries") {
            let custom = &p["fieldConfig"]["defaults"]["custom"];
            let bucket = p["targets"].as_array().unwrap().iter().filter_map(|t| t["bucket"].as_u64()).max().unwrap();
            if custom["drawStyle"] == "line" && bucket >= 60_000 {
                assert_eq!(custom["showPoints"], "always", "{}", p["title"]);
                assert!(custom["pointSize"].as_u64().unwrap() >= 5, "{}", p["title"]);
                checked += 1;
            }
        }
        assert_eq!(checked, 1, "Throughput");
    }

    /// The original demo's dashboard (2020) had eight panels; each is still here with its query.
    #[test]
    fn the_original_demos_eight_panels_are_all_there() {
        let d: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        let panels = d["panels"].as_array().unwrap();
        let original = [
            ("stat", "Product Available", "get", "product"),
            ("stat", "Customers Ordering", "xlen", "queue:customers"),
            ("stat", "Orders Processing", "xlen", "queue:orders"),
            ("stat", "Orders Completed", "xlen", "queue:complete"),
            ("timeseries", "Customers Overflow", "ts.range", "ts:enqueue:queue:customers"),
            ("timeseries", "Customers Ordering", "ts.range", "ts:len:queue:customers"),
            // The original called it "In Queue", under an "Orders" row.
            ("timeseries", "Orders In Queue", "ts.range", "ts:len:queue:orders"),
            ("timeseries", "Completed Flow", "ts.range", "ts:enqueue:queue:complete"),
        ];
        for (kind, title, command, key) in original {
            let p = panels.iter().find(|p| p["type"] == kind && p["title"] == title);
            let p = p.unwrap_or_else(|| panic!("the original's {kind} {title:?} is missing"));
            let t = &p["targets"][0];
            assert_eq!((t["command"].as_str(), t["keyName"].as_str()), (Some(command), Some(key)), "{title}");
        }
        assert_eq!(panels.iter().filter(|p| p["type"] != "row").count(), 8 + 5, "the original's 8 and our 5");
    }
}
