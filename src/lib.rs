//! popup-operator: a Kubernetes operator that turns a `PopUpStore` into a live flash-sale demo.
//!
//! Layout (see `docs/architecture.md`): `crd` defines the resource; `render` builds every child object
//! (pure); `apply` writes them with server-side apply; `status` turns observations into conditions (pure);
//! `controller` wires validate → build → apply → observe → status together. `engine` is the sale
//! contract on the Redis side (three engines, script loading, the native worker) and `simulator` the
//! load generator; both also run without Kubernetes from the command line.

pub mod apply;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod render;
pub mod scripts;
pub mod simulator;
pub mod status;
pub mod telemetry;

/// Every way a reconcile can fail, one variant per stage, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be used; the store waits for the user to change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] render::SpecError),

    /// Reading an object from the API server failed.
    #[error("reading {kind} {name}: {source}")]
    Read { kind: &'static str, name: String, source: kube::Error },

    /// Server-side apply (or create/delete) of a child failed.
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },

    /// Writing the store's status failed.
    #[error("updating status of {name}: {source}")]
    Status { name: String, source: kube::Error },

    /// A Secret the store needs is missing or unusable.
    #[error("{0}")]
    Secret(String),

    /// The operator cannot start (CRD missing, no cluster access, bad flags).
    #[error("{0}")]
    Startup(String),
}

impl Error {
    /// Short stage name, used as a metrics label and an event reason.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "validate",
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Secret(_) => "secret",
            Error::Startup(_) => "startup",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
