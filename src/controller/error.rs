//! The controller's errors: [`Error`] for a reconcile (what it was doing, on which object) and
//! [`StartupError`] for [`super::run`] before any store is watched.

/// Every way a reconcile can fail: an API call, named by what it was doing and on which object. A spec
/// the operator cannot use is not an error (`Ready=False/InvalidSpec`, see `validate`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object from the API server failed.
    #[error("reading {kind} {name}: {source}")]
    Read { kind: &'static str, name: String, source: kube::Error },

    /// Server-side apply (or create/delete) of a child failed.
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },

    /// Writing the store's status failed.
    #[error("updating status of {name}: {source}")]
    Status { name: String, source: kube::Error },
}

impl Error {
    /// Short stage name, used as the `stage` label of `popup_operator_reconcile_failures_total`.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
        }
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
    fn stages_are_the_metric_labels() {
        let api = || kube::Error::LinesCodecMaxLineLengthExceeded;
        let read = Error::Read { kind: "Secret", name: "pw".into(), source: api() };
        assert_eq!(read.stage(), "read");
        assert!(read.to_string().starts_with("reading Secret pw: "), "{read}");
        let apply = Error::Apply { kind: "StatefulSet", name: "shop-redis".into(), source: api() };
        assert_eq!(apply.stage(), "apply");
        assert!(apply.to_string().starts_with("applying StatefulSet shop-redis: "), "{apply}");
        let status = Error::Status { name: "shop".into(), source: api() };
        assert_eq!(status.stage(), "status");
        assert!(status.to_string().starts_with("updating status of shop: "), "{status}");
    }
}
