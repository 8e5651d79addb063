//! The controller's errors: [`Error`] for a reconcile (its stage, and what it was doing there on which
//! object) and [`StartupError`] for [`super::run`] before any store is watched.

pub use crate::apply::Error as ApiError;

/// A reconcile that failed: the stage it was in (see `super::reconcile_store`) and the API call that
/// failed there, on which object. A spec the operator cannot use is not an error
/// (`Ready=False/InvalidSpec`, see `validate`), nor is a Redis that is not usable yet (a condition).
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {source}")]
pub struct Error {
    pub stage: Stage,
    pub source: ApiError,
}

/// The stages of a reconcile that call the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Validate,
    Dereference,
    Apply,
    Observe,
    Status,
}

impl Stage {
    /// The stage's name: its module, and the `stage` label of `popup_operator_reconcile_failures_total`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::Dereference => "dereference",
            Stage::Apply => "apply",
            Stage::Observe => "observe",
            Stage::Status => "status",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    /// Short stage name, used as the `stage` label of `popup_operator_reconcile_failures_total`.
    pub fn stage(&self) -> &'static str {
        self.stage.name()
    }

    /// Wraps a stage's failed API call (for `map_err`).
    pub(super) fn at(stage: Stage) -> impl FnOnce(ApiError) -> Error {
        move |source| Error { stage, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the controller cannot start; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "the PopUpStore CRD is not installed: run `popup-operator crd | kubectl apply -f -` (or install the Helm chart) and start the operator again"
    )]
    CrdMissing,

    /// `at` is empty for the whole cluster, else " in namespace <ns>".
    #[error(
        "not allowed to list popupstores.popup.dev{at} ({message}): check the operator's RBAC (charts/popup-operator: watchNamespace/watchNamespaces must list every --watch-namespace)"
    )]
    Forbidden { at: String, message: String },

    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(kube::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_stage_then_the_call_and_object() {
        let api = || kube::Error::LinesCodecMaxLineLengthExceeded;
        let read = Error::at(Stage::Dereference)(ApiError::new("reading", "Secret", "pw", api()));
        assert_eq!(read.stage(), "dereference");
        assert!(read.to_string().starts_with("dereference: reading Secret pw: "), "{read}");
        let apply = Error::at(Stage::Apply)(ApiError::new("applying", "StatefulSet", "shop-redis", api()));
        assert_eq!(apply.stage(), "apply");
        assert!(apply.to_string().starts_with("apply: applying StatefulSet shop-redis: "), "{apply}");
        let status = Error::at(Stage::Status)(ApiError::new("updating the status of", "PopUpStore", "shop", api()));
        assert!(status.to_string().starts_with("status: updating the status of PopUpStore shop: "), "{status}");
    }
}
