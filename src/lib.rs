//! popup-operator: a Kubernetes operator that turns a `PopUpStore` into a live flash-sale demo.
//!
//! Two halves, and the command line over both (see `docs/architecture.md`):
//! - the sale, `sale`: the flash sale in Redis with no Kubernetes in it: the contract every engine
//!   implements (connecting, loading scripts, reading the sale), the three engines (`gears`,
//!   `triggers`, `native`), their script files for display (`scripts`), the load generator
//!   (`simulator`) and following a sale live (`watch`);
//! - the operator: `crd` defines the resource; `render` builds every child object (pure; the scripts
//!   come in as data); `apply` writes them with server-side apply; `status` turns observations into
//!   conditions (pure); `controller` wires validate → build → apply → observe → status together and is
//!   where the operator meets the sale (`controller::sale_bridge`); `telemetry` logs and serves metrics;
//! - `dashboard`: the Grafana dashboard's panels (grafana/popup-store.json) and their queries, which
//!   Grafana gets provisioned and the terminal dashboard draws (`cli::dashboard_view`);
//! - `cli`: both halves' subcommands, their clap arguments and their output;
//! - `flags`: the clap arguments of `process` and `simulate`, which `cli` parses and `render` writes into
//!   the processor's and the simulator Job's pods;
//! - `limits`: every bound and default of a number a user sets (the CRD, `render`'s check and the
//!   command line take them from there); imports nothing of the crate, so both halves may use it;
//! - `yaml`: YAML output that every Kubernetes reader takes the same way (the CRD, `render`).
//!
//! Dependencies point one way: `cli` → `controller` → `sale`, and `controller` → `render`/`crd`; the
//! sale imports neither the operator nor `cli`, and `render` and `crd` do not import the sale but for its
//! engine type (`crd::Engine` is `sale::EngineKind`, one type for which engine);
//! `dashboard` and `limits` import nothing of the crate, `flags` only `limits`.

pub mod apply;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod dashboard;
pub mod flags;
pub mod limits;
pub mod render;
pub mod sale;
pub mod status;
pub mod telemetry;
pub mod yaml;
