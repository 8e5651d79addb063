//! The sale half of the product: the flash sale in Redis, with no Kubernetes and no terminal in it.
//!
//! The written contract lives in `docs/engines.md`; `keys` is its single source in code. Three engines
//! implement it:
//! - [`EngineKind::Gears`]: RedisGears 1 Python scripts (`gears.rs`),
//! - [`EngineKind::Triggers`]: RedisGears 2 JavaScript stream triggers (`triggers.rs`),
//! - [`EngineKind::Native`]: our own worker, `popup-operator process` (`native.rs`).
//!
//! The rest, one file per concern, re-exported here so callers write `sale::connect`,
//! `sale::EngineError`, ...:
//!
//! | file | concern |
//! |---|---|
//! | `keys` | key names, prefixes, rejection reasons |
//! | `error` | [`EngineError`], [`Result`] |
//! | `connect` | URLs and passwords, [`connect`], [`connect_reader`], [`connect_manager`], [`RedisConn`] |
//! | `reply` | reading RESP2/RESP3 replies |
//! | `modules` | `MODULE LIST` and the modules each engine needs |
//! | `engine` | [`EngineKind`], [`ProcessingSettings`], [`load_scripts`] |
//! | `snapshot` | [`SaleSnapshot`], [`read_sale`] |
//! | `health` | [`engine_health`], [`sale_problems`] |
//! | `sampling` | the queues' TimeSeries samples, [`sample_if_due`] |
//! | `functions` | the scripts only the operator loads and the components call |
//! | `marker` | starting a sale, and which sale a Redis holds |
//! | `scripts` | an engine's script files, as a store's scripts ConfigMap shows them |
//! | `simulator` | the load generator |
//! | `watch` | following a sale as it happens |
//!
//! Nothing here imports the operator (`crd`, `render`, `controller`, ...) or the command line (`cli`);
//! they import this.

pub mod functions;
pub mod gears;
pub mod marker;
pub mod native;
pub mod scripts;
pub mod simulator;
pub mod triggers;
pub mod watch;

mod connect;
mod engine;
mod error;
mod health;
mod keys;
mod modules;
mod reply;
mod sampling;
mod snapshot;

pub(crate) use connect::server_addr;
pub use connect::{RedisConn, connect, connect_manager, connect_reader, connection_info, redact};
pub use engine::{EngineKind, LoadOutcome, ProcessingSettings, load_scripts, script_hash};
pub use error::{EngineError, Result};
pub use health::{EngineHealth, engine_health, sale_problems};
pub use keys::*;
pub use modules::{ModuleInfo, module_list};
pub(crate) use modules::{RequiredModule, require_modules, require_timeseries};
pub use reply::is_canonical_i64;
pub(crate) use reply::{field, value_i64, value_items, value_pairs, value_str};
pub use sampling::{SAMPLE_LUA, sample_if_due, sample_with};
pub use snapshot::{SaleSnapshot, read_sale};
