//! The exact permissions the controller uses, each with the code path that needs it.
//!
//! The Helm chart's ClusterRole/Role grants exactly these (a test compares them), so a new API call in
//! the controller must come with a new line here, and nothing is granted "just in case". This list is the
//! source; the chart's `templates/_helpers.tpl` and the table of docs/security.md are copies kept by hand,
//! which `tests/helm.rs` holds equal to it.

/// One RBAC rule: an API group, its resources and the verbs used on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyRuleSpec {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

pub const RULES: &[PolicyRuleSpec] = &[
    PolicyRuleSpec {
        api_group: "popup.dev",
        resources: &["popupstores"],
        verbs: &["get", "list", "watch"],
        why: "the controller watches PopUpStores (controller::run)",
    },
    PolicyRuleSpec {
        api_group: "popup.dev",
        resources: &["popupstores/status"],
        verbs: &["get", "patch"],
        why: "status is written with server-side apply (controller::publish_status)",
    },
    PolicyRuleSpec {
        api_group: "popup.dev",
        resources: &["popupstores/finalizers"],
        verbs: &["update"],
        why: "children carry blockOwnerDeletion ownerReferences, which OwnerReferencesPermissionEnforcement checks",
    },
    PolicyRuleSpec {
        api_group: "",
        resources: &["secrets", "services", "configmaps"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "owned children are watched (Controller::owns_stream, which also fills controller::cache), read when the cache has not seen them, server-side applied (apply::apply), and deleted when a spec change no longer wants them (controller::prune); user password Secrets are read, and the metadata of every Secret the operator did not write is watched so that a changed passwordSecretRef is applied at once (controller::stores_using_secret)",
    },
    PolicyRuleSpec {
        api_group: "",
        resources: &["pods"],
        verbs: &["get", "list", "watch"],
        why: "the Redis pods are watched (controller::cache), so RedisReady can say at once why one is not ready (e.g. no node can take it: observe::redis_pod); read directly until the watch has synced",
    },
    PolicyRuleSpec {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "the Redis StatefulSet is watched and server-side applied",
    },
    PolicyRuleSpec {
        api_group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "Grafana and processor Deployments are watched and server-side applied; Grafana's is deleted when the spec turns it off (controller::prune)",
    },
    PolicyRuleSpec {
        api_group: "batch",
        resources: &["jobs"],
        verbs: &["get", "list", "watch", "create", "delete"],
        why: "the simulator Job is created once (apply::create_if_missing); Jobs of older settings are deleted (apply::delete_others)",
    },
    PolicyRuleSpec {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "each store's NetworkPolicies are watched (Controller::owns_stream), server-side applied before its pods, and deleted when spec.networkPolicy.enabled turns false or Grafana goes (controller::prune)",
    },
    PolicyRuleSpec {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "condition transitions and failures are published as Events (kube::runtime::events::Recorder)",
    },
];
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn rules_are_well_formed_and_unique() {
        let mut seen = BTreeSet::new();
        for r in RULES {
            assert!(!r.resources.is_empty() && !r.verbs.is_empty(), "{r:?}");
            assert!(!r.why.is_empty(), "{r:?}");
            for res in r.resources {
                assert!(!res.contains('*'), "no wildcard resources: {r:?}");
                for verb in r.verbs {
                    assert_ne!(*verb, "*", "no wildcard verbs: {r:?}");
                    assert!(seen.insert((r.api_group, *res, *verb)), "duplicate grant {:?}", (r.api_group, res, verb));
                }
            }
        }
    }
}
