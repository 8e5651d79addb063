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
