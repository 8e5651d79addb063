//! Next action: when to look at the store again, from what this reconcile found (pure).
//!
//! "Not ready yet" is a normal outcome with a quiet requeue. Pods report their readiness through the
//! owned watches, so waiting for them only needs a safety net; Redis itself is not watched, so a
//! Redis-side problem is looked at again soon.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::status::workload::Simulation;

/// Waiting for pods: their readiness reaches us through the owned watches, this is only a safety net.
pub const WAITING_FOR_PODS_REQUEUE: Duration = Duration::from_secs(30);
/// Redis is up but unusable (unreachable, wrong password, missing module) or the user's password Secret
/// is missing: Redis itself is not watched, so look again soon (the Secret's arrival is, see
/// `stores_using_secret`; this is a safety net there). Also while an old password waits for its
/// consumers: rollouts are watched, the grace period is not.
pub const REDIS_RETRY_REQUEUE: Duration = Duration::from_secs(10);
pub const IDLE_REQUEUE: Duration = Duration::from_secs(60);
/// The shortest status refresh while the simulation runs.
const MIN_METRICS_REQUEUE_SECONDS: u32 = 2;

/// What the next action depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlook<'a> {
    /// The store's Ready condition is True.
    pub ready: bool,
    /// What keeps it from Ready is on Redis's side (password Secret, Redis up but unusable, scripts).
    pub redis_side_problem: bool,
    /// An old Redis password waits for its consumers.
    pub rotating: bool,
    pub simulation: &'a Simulation,
    /// `spec.processing.metricsIntervalSeconds`.
    pub metrics_interval_seconds: u32,
}

pub fn next_action(o: &Outlook) -> Action {
    if !o.ready && o.redis_side_problem {
        Action::requeue(REDIS_RETRY_REQUEUE)
    } else if !o.ready {
        Action::requeue(WAITING_FOR_PODS_REQUEUE)
    } else if o.rotating {
        Action::requeue(REDIS_RETRY_REQUEUE)
    } else if matches!(o.simulation, Simulation::Running { .. }) {
        // Keep the sale numbers in the status as fresh as the dashboard's metrics.
        let seconds = o.metrics_interval_seconds.max(MIN_METRICS_REQUEUE_SECONDS);
        Action::requeue(Duration::from_secs(seconds.into()))
    } else {
        Action::requeue(IDLE_REQUEUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Simulation {
        Simulation::Running { job: "shop-simulator-abc".into() }
    }

    /// Ready, nothing rotating, the simulation running every 5 s.
    fn settled(simulation: &Simulation) -> Outlook<'_> {
        Outlook { ready: true, redis_side_problem: false, rotating: false, simulation, metrics_interval_seconds: 5 }
    }

    #[test]
    fn a_redis_side_problem_is_retried_soon() {
        let sim = running();
        let o = Outlook { ready: false, redis_side_problem: true, rotating: true, ..settled(&sim) };
        assert_eq!(next_action(&o), Action::requeue(REDIS_RETRY_REQUEUE));
    }

    #[test]
    fn waiting_for_pods_relies_on_the_watches_with_a_safety_net() {
        let sim = running();
        let o = Outlook { ready: false, rotating: true, ..settled(&sim) };
        assert_eq!(next_action(&o), Action::requeue(WAITING_FOR_PODS_REQUEUE));
    }

    #[test]
    fn a_rotation_waiting_for_its_consumers_comes_before_the_sale() {
        let sim = running();
        let o = Outlook { rotating: true, ..settled(&sim) };
        assert_eq!(next_action(&o), Action::requeue(REDIS_RETRY_REQUEUE));
    }

    #[test]
    fn a_running_simulation_follows_the_metrics_interval() {
        let sim = running();
        assert_eq!(next_action(&settled(&sim)), Action::requeue(Duration::from_secs(5)));
        let fast = Outlook { metrics_interval_seconds: 1, ..settled(&sim) };
        assert_eq!(next_action(&fast), Action::requeue(Duration::from_secs(2)), "never faster than 2 s");
        // A Redis-side problem seen while Ready (e.g. a failing engine) does not stop the refresh.
        let failing = Outlook { redis_side_problem: true, ..settled(&sim) };
        assert_eq!(next_action(&failing), Action::requeue(Duration::from_secs(5)));
    }

    #[test]
    fn otherwise_the_store_is_looked_at_every_minute() {
        for sim in [
            Simulation::Disabled,
            Simulation::WaitingForScripts,
            Simulation::Succeeded { job: "j".into() },
            Simulation::Failed { job: "j".into(), cause: "exit code 1".into() },
        ] {
            assert_eq!(next_action(&settled(&sim)), Action::requeue(IDLE_REQUEUE), "{sim:?}");
        }
    }
}
