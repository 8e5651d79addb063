//! The store's NetworkPolicies: who may open a connection to Redis and to Grafana.
//!
//! Redis holds the sale, so the password is not the only gate: `<store>-redis` lets in, on port 6379, only
//! this store's own pods (simulator, processor, Grafana: its instance labels, in its namespace) and the
//! operator's pods (their namespace and labels, [`OperatorPods`]). Grafana is the UI, so `<store>-grafana`
//! lets anyone reach port 3000 and nothing else. Only ingress is limited: an egress rule would have to
//! let DNS, Redis and the Grafana plugin download through and would protect nothing more.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::component::Component;
use super::validation::is_label_key;
use super::{BuildInputs, GRAFANA_PORT, REDIS_PORT, ValidatedStore, child_meta};
use crate::crd::GrafanaMode;

/// The label the API server puts on every namespace, with the namespace's name (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The operator pods' labels when nothing else is said: the name label of the chart's pods.
pub const DEFAULT_OPERATOR_POD_SELECTOR: &str = "app.kubernetes.io/name=popup-operator";

/// The operator's pods, as the Redis policy admits them: their namespace and labels that select them.
/// The chart passes both (`--operator-namespace`, `--operator-pod-selector`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl OperatorPods {
    /// `selector` is a comma-separated list of `key=value` labels, e.g.
    /// `app.kubernetes.io/name=popup-operator,app.kubernetes.io/instance=popup`. Errors name the flag.
    pub fn new(namespace: &str, selector: &str) -> Result<Self, String> {
        if !is_dns_label(namespace) {
            return Err(format!(
                "--operator-namespace: {namespace:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ));
        }
        let mut labels = BTreeMap::new();
        for pair in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())).ok_or_else(|| {
                format!("--operator-pod-selector: {pair:?} is not key=value (only equality selectors, e.g. app.kubernetes.io/name=popup-operator)")
            })?;
            if !is_label_key(key) {
                return Err(format!("--operator-pod-selector: {key:?} is not a label key"));
            }
            if !is_label_value(value) {
                return Err(format!("--operator-pod-selector: {value:?} (label {key}) is not a label value"));
            }
            labels.insert(key.to_string(), value.to_string());
        }
        if labels.is_empty() {
            // An empty podSelector would let every pod of the operator's namespace reach Redis.
            return Err(format!(
                "--operator-pod-selector: must name at least one label of the operator's pods, e.g. {DEFAULT_OPERATOR_POD_SELECTOR}"
            ));
        }
        Ok(Self { namespace: namespace.to_string(), labels })
    }
}

fn is_dns_label(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && alnum(s.chars().next())
            && alnum(s.chars().last()))
}

/// Labels every pod of the store carries, whatever its component: the pods Redis lets in.
pub fn store_pod_labels(store: &ValidatedStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "popup-store".to_string()),
        (super::STORE_LABEL.to_string(), store.names.store.clone()),
    ])
}

/// The store's policies: none when `spec.networkPolicy.enabled` is false, Grafana's only with a
/// managed Grafana.
pub fn policies(store: &ValidatedStore, inputs: &BuildInputs) -> Vec<NetworkPolicy> {
    if !store.spec.network_policy.enabled {
        return Vec::new();
    }
    let mut out = vec![redis_policy(store, inputs.operator_pods.as_ref())];
    if store.spec.grafana.effective_mode() == GrafanaMode::Managed {
        out.push(grafana_policy(store));
    }
    out
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some("TCP".into()), port: Some(IntOrString::Int(port)), ..Default::default() }
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels), ..Default::default() }
}

/// Ingress only (egress stays open), for the pods of one component.
fn ingress_policy(
    store: &ValidatedStore,
    name: String,
    component: Component,
    rule: NetworkPolicyIngressRule,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: child_meta(store, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(super::selector_labels(store, component))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![rule]),
            egress: None,
        }),
    }
}

/// `<store>-redis`: port 6379 from this store's pods (same namespace) and the operator's pods.
pub fn redis_policy(store: &ValidatedStore, operator: Option<&OperatorPods>) -> NetworkPolicy {
    // A peer without namespaceSelector is in the policy's own namespace.
    let mut from =
        vec![NetworkPolicyPeer { pod_selector: Some(selector(store_pod_labels(store))), ..Default::default() }];
    if let Some(op) = operator {
        // Both selectors in one peer: pods with these labels *in* that namespace, not either one.
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                op.namespace.clone(),
            )]))),
            pod_selector: Some(selector(op.labels.clone())),
            ..Default::default()
        });
    }
    let rule = NetworkPolicyIngressRule { from: Some(from), ports: Some(vec![tcp(REDIS_PORT)]) };
    ingress_policy(store, store.names.redis(), Component::Redis, rule)
}

/// `<store>-grafana`: port 3000 from anywhere (no `from`: every source), nothing else.
pub fn grafana_policy(store: &ValidatedStore) -> NetworkPolicy {
    let rule = NetworkPolicyIngressRule { from: None, ports: Some(vec![tcp(GRAFANA_PORT)]) };
    ingress_policy(store, store.names.grafana(), Component::Grafana, rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Engine;
    use crate::render::tests::{build, inputs};
    use crate::render::{Children, build_children, validate};
    use serde_json::{Value, json};

    fn policies_of(c: &Children) -> BTreeMap<String, Value> {
        c.network_policies
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), serde_json::to_value(p).unwrap()))
            .collect()
    }

    /// The labels a pod template of `component` carries in the rendered children.
    fn pod_template_labels(c: &Children, component: &str) -> Value {
        c.to_values()
            .into_iter()
            .find(|v| {
                v["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
                    && v["kind"] != "Service"
            })
            .map(|v| v["spec"]["template"]["metadata"]["labels"].clone())
            .unwrap_or_else(|| panic!("no pod template of {component}"))
    }

    fn selects(selector: &Value, labels: &Value) -> bool {
        selector["matchLabels"].as_object().unwrap().iter().all(|(k, v)| labels[k] == *v)
    }

    #[test]
    fn redis_admits_the_stores_own_pods_and_the_operators_on_6379_only() {
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let (v, c) = build(engine, |_| {});
            let p = &policies_of(&c)["shop-redis"];
            let spec = &p["spec"];
            assert_eq!(spec["policyTypes"], json!(["Ingress"]), "{engine}");
            assert!(spec.get("egress").is_none(), "{engine}: egress is not limited");
            // It selects the Redis pod and nothing else of the store.
            assert!(selects(&spec["podSelector"], &pod_template_labels(&c, "redis")), "{engine}");
            assert!(!selects(&spec["podSelector"], &pod_template_labels(&c, "grafana")), "{engine}");
            let rules = spec["ingress"].as_array().unwrap();
            assert_eq!(rules.len(), 1, "{engine}");
            assert_eq!(rules[0]["ports"], json!([{"protocol": "TCP", "port": 6379}]), "{engine}");
            let from = rules[0]["from"].as_array().unwrap();
            assert_eq!(from.len(), 2, "{engine}: {from:?}");
            // The store's pods, in the store's namespace (no namespaceSelector).
            assert!(from[0].get("namespaceSelector").is_none(), "{engine}");
            assert_eq!(
                from[0]["podSelector"]["matchLabels"],
                json!({"app.kubernetes.io/name": "popup-store", "app.kubernetes.io/instance": "shop"})
            );
            // Every pod the store has (the simulator's Job included).
            for component in Component::ALL.into_iter().filter(|c| c.wanted(&v) && c.uid().is_some()) {
                let labels = pod_template_labels(&c, component.name());
                assert!(selects(&from[0]["podSelector"], &labels), "{engine} {component}");
            }
            // The operator: its namespace AND its labels, in one peer.
            assert_eq!(
                from[1]["namespaceSelector"]["matchLabels"],
                json!({"kubernetes.io/metadata.name": "popup-system"})
            );
            assert_eq!(
                from[1]["podSelector"]["matchLabels"],
                json!({"app.kubernetes.io/name": "popup-operator", "app.kubernetes.io/instance": "popup"})
            );
        }
    }

    #[test]
    fn another_store_in_the_namespace_is_not_let_in() {
        let (_, c) = build(Engine::Native, |_| {});
        let from = &policies_of(&c)["shop-redis"]["spec"]["ingress"][0]["from"][0]["podSelector"];
        let other = json!({"app.kubernetes.io/name": "popup-store", "app.kubernetes.io/instance": "other-shop",
                           "app.kubernetes.io/component": "simulator"});
        assert!(!selects(from, &other));
    }

    #[test]
    fn grafana_is_open_to_anyone_on_its_port_only() {
        let (_, c) = build(Engine::Gears, |_| {});
        let spec = &policies_of(&c)["shop-grafana"]["spec"];
        assert_eq!(spec["policyTypes"], json!(["Ingress"]));
        assert!(spec.get("egress").is_none());
        assert!(selects(&spec["podSelector"], &pod_template_labels(&c, "grafana")));
        assert!(!selects(&spec["podSelector"], &pod_template_labels(&c, "redis")));
        assert_eq!(spec["ingress"], json!([{"ports": [{"protocol": "TCP", "port": 3000}]}]), "no from: every source");
    }

    #[test]
    fn policies_follow_the_spec() {
        let names = |c: &Children| policies_of(c).keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&build(Engine::Gears, |_| {}).1), ["shop-grafana", "shop-redis"]);
        // No Grafana of ours (sidecar: the user's Grafana runs elsewhere; none: no Grafana).
        for mode in [GrafanaMode::Sidecar, GrafanaMode::None] {
            assert_eq!(names(&build(Engine::Triggers, |s| s.grafana.mode = mode).1), ["shop-redis"]);
        }
        let (_, c) = build(Engine::Native, |s| s.network_policy.enabled = false);
        assert!(c.network_policies.is_empty());
        assert!(c.to_values().iter().all(|v| v["kind"] != "NetworkPolicy"));
        // Children that may go away are pruned by kind and name.
        let optional = crate::render::optional_children(&crate::render::Names::new("shop"));
        for name in ["shop-redis", "shop-grafana"] {
            assert!(optional.contains(&(crate::render::ChildKind::NetworkPolicy, name.to_string())), "{name}");
        }
    }

    #[test]
    fn without_a_known_operator_only_the_stores_pods_get_in() {
        let v = validate(&crate::render::tests::store_with(Engine::Native, |_| {})).unwrap();
        let c = build_children(&v, &BuildInputs { operator_pods: None, ..inputs() });
        let from = &policies_of(&c)["shop-redis"]["spec"]["ingress"][0]["from"];
        assert_eq!(from.as_array().unwrap().len(), 1, "{from}");
    }

    #[test]
    fn the_operator_selector_is_checked_and_names_the_flag() {
        let ok = OperatorPods::new(
            "popup-system",
            " app.kubernetes.io/name=popup-operator , app.kubernetes.io/instance=popup",
        )
        .unwrap();
        assert_eq!(ok.labels.len(), 2);
        assert_eq!(ok.labels["app.kubernetes.io/instance"], "popup");
        for (ns, sel, flag) in [
            ("Popup", DEFAULT_OPERATOR_POD_SELECTOR, "--operator-namespace"),
            ("", DEFAULT_OPERATOR_POD_SELECTOR, "--operator-namespace"),
            ("popup-system", "", "--operator-pod-selector"),
            ("popup-system", "app.kubernetes.io/name", "--operator-pod-selector"),
            ("popup-system", "app in (a,b)", "--operator-pod-selector"),
            ("popup-system", "-bad=x", "--operator-pod-selector"),
            ("popup-system", "a=b c", "--operator-pod-selector"),
        ] {
            let err = OperatorPods::new(ns, sel).unwrap_err();
            assert!(err.starts_with(flag), "{ns:?} {sel:?}: {err}");
        }
    }
}
