//! The parts of a store and their Redis users, in one place: each component's name (its label and the
//! suffix of its user's Secret), the uid its pods run as, its Redis user and whether a store has it.
//! The builders, the ACL file, the NetworkPolicies and the status checks take them from here.
//!
//! A leaf of `render`: it imports no builder, and every builder (`acl` included) may import it. What
//! a user may run (`Role::rules`) and its name in Redis (`Role::user`) are `acl`'s.

use super::{Names, ValidatedStore};
use crate::crd::{Engine, GrafanaMode};

/// A part of a store whose objects carry `app.kubernetes.io/component=<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The StatefulSet, its Services and Secrets: the store's data.
    Redis,
    /// The engine's settings and scripts, as loaded into Redis (a ConfigMap; no pods).
    Scripts,
    /// The dashboard (managed or sidecar mode).
    Grafana,
    /// The Job that plays the crowd.
    Simulator,
    /// The native engine's Deployment.
    Processor,
}

/// The operator's image runs as the distroless `nonroot` user: the simulator and the processor.
const OPERATOR_IMAGE_UID: i64 = 65532;

impl Component {
    pub const ALL: [Component; 5] =
        [Component::Redis, Component::Scripts, Component::Grafana, Component::Simulator, Component::Processor];

    /// The `app.kubernetes.io/component` label's value.
    pub fn name(self) -> &'static str {
        match self {
            Component::Redis => "redis",
            Component::Scripts => "scripts",
            Component::Grafana => "grafana",
            Component::Simulator => "simulator",
            Component::Processor => "processor",
        }
    }

    /// The uid (and gid) its pods run as: the image's own non-root user; `None` without pods.
    pub fn uid(self) -> Option<i64> {
        match self {
            // `redis` in the official Redis images (redismod and redis-stack derive from them).
            Component::Redis => Some(999),
            // `grafana` in the official image.
            Component::Grafana => Some(472),
            Component::Simulator | Component::Processor => Some(OPERATOR_IMAGE_UID),
            Component::Scripts => None,
        }
    }

    /// The Redis user its pods log in as, with a password Secret of its own; Redis itself has none (the
    /// admin, `default`, is people's).
    pub fn role(self) -> Option<Role> {
        match self {
            Component::Redis | Component::Scripts => None,
            Component::Grafana => Some(Role::Grafana),
            Component::Simulator => Some(Role::Simulator),
            Component::Processor => Some(Role::Processor),
        }
    }

    /// Whether `store` has this component: Redis always, the others as the spec says.
    pub fn wanted(self, store: &ValidatedStore) -> bool {
        match self {
            Component::Redis | Component::Scripts => true,
            Component::Grafana => store.spec.grafana.effective_mode() != GrafanaMode::None,
            Component::Simulator => store.spec.simulator.enabled,
            Component::Processor => store.engine() == Engine::Native,
        }
    }

    /// A label selector of the store's objects of this component (e.g. its Jobs, to delete old ones).
    pub fn selector(self, names: &Names) -> String {
        format!("app.kubernetes.io/instance={},app.kubernetes.io/component={}", names.store, self.name())
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One Redis user of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `default`: the admin password of people and tools.
    Admin,
    /// `popup-operator`: the operator itself.
    Operator,
    Grafana,
    Simulator,
    Processor,
}

/// Every role, in the order the ACL file lists them.
pub const ROLES: [Role; 5] = [Role::Admin, Role::Operator, Role::Grafana, Role::Simulator, Role::Processor];

impl Role {
    /// The component whose pods log in as this user, which names its password Secret
    /// (`<store>-redis-<component>`); none for the admin and the operator.
    pub fn component(self) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.role() == Some(self))
    }

    /// Whether `store` has this user: the admin and the operator always, the others with their component.
    pub fn wanted(self, store: &ValidatedStore) -> bool {
        self.component().is_none_or(|c| c.wanted(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_user_belongs_to_one_component_and_back() {
        for role in ROLES {
            match role.component() {
                Some(c) => assert_eq!(c.role(), Some(role), "{role:?}"),
                None => assert!(matches!(role, Role::Admin | Role::Operator), "{role:?} has no pods"),
            }
        }
        let names: std::collections::BTreeSet<&str> = Component::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Component::ALL.len(), "names are labels: each its own");
    }

    #[test]
    fn the_operators_watch_of_redis_pods_selects_the_redis_component() {
        let selector = crate::controller::cache::REDIS_PODS;
        assert!(
            selector.split(',').any(|l| l == format!("app.kubernetes.io/component={}", Component::Redis)),
            "{selector}"
        );
    }
}
