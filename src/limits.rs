//! Every bound and default of a number a user can set, in one place: the CRD's schema (`crd`), its CEL
//! rules' text, the operator's own check (`render::validation`) and the command line's parsers (`cli`)
//! all take them from here.
//!
//! A store's value reaches the command line too: the simulator Job and the native processor run
//! `popup-operator simulate`/`process` with the store's settings as flags. So each command-line range
//! holds the store's whole range; where it is wider, the wider bounds are named in [`cli`] with the
//! reason. `cli::tests` checks, field by field, that the three agree or differ only as named here.
//!
//! A leaf: it imports nothing of the crate, so both halves (the operator and the sale) may use it.

/// A closed range of whole numbers, `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: i64,
    pub max: i64,
}

impl Bounds {
    pub const fn new(min: i64, max: i64) -> Self {
        Self { min, max }
    }

    /// Whether `value` lies within; wide enough for any field's type (`u64` included).
    pub fn contains(self, value: i128) -> bool {
        i128::from(self.min) <= value && value <= i128::from(self.max)
    }
}

/// A closed range of finite numbers, `min..=max`, for flags that take fractions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloatBounds {
    pub min: f64,
    pub max: f64,
}

/// Longest `metadata.name` a store may have: child names add suffixes (`-simulator-<hash>`, `-grafana`),
/// and pod names derived from them must stay within the 63-character label limit.
pub const MAX_NAME_LEN: usize = 40;

/// Most units of stock, customers and sale runs: a billion.
const MAX_COUNT: i64 = 1_000_000_000;

// ---- a store's spec (the CRD's `minimum`/`maximum`) ---------------------------------------------------

/// `spec.stock`, units on sale (`simulate --stock`).
pub const STOCK: Bounds = Bounds::new(0, MAX_COUNT);
pub const DEFAULT_STOCK: i64 = 10_000;
/// `spec.saleRun`: any other value starts a fresh sale.
pub const SALE_RUN: Bounds = Bounds::new(0, MAX_COUNT);
/// `spec.processing.batchSize`, orders decided per batch (`--batch-size`).
pub const BATCH_SIZE: Bounds = Bounds::new(1, 10_000);
/// As in the original demo.
pub const DEFAULT_BATCH_SIZE: u32 = 3;
/// `spec.processing.metricsIntervalSeconds`: whole seconds up to an hour. While a simulation runs the
/// operator reads each store's sale this often, so a store may not ask for less than a second.
pub const METRICS_INTERVAL_SECONDS: Bounds = Bounds::new(1, 3600);
pub const DEFAULT_METRICS_INTERVAL_SECONDS: u32 = 5;
/// `spec.processing.replicas`, processor pods of the native engine.
pub const REPLICAS: Bounds = Bounds::new(1, 16);
pub const DEFAULT_REPLICAS: u32 = 1;
/// `spec.simulator.customers`; 0 = until sold out (`simulate --customers`).
pub const CUSTOMERS: Bounds = Bounds::new(0, MAX_COUNT);
pub const DEFAULT_CUSTOMERS: u64 = 0;
/// `spec.simulator.maxArrivalMillis` and `maxOrderDelayMillis`: up to ten minutes, so that a store's
/// sale ends within a demo.
pub const DELAY_MILLIS: Bounds = Bounds::new(0, 600_000);
/// A customer every random 0–100 ms, as in the original demo.
pub const DEFAULT_MAX_ARRIVAL_MILLIS: u32 = 100;
pub const DEFAULT_MAX_ORDER_DELAY_MILLIS: u32 = 1000;
/// `spec.simulator.ratePerSecond`, customers per second (`simulate --rate`).
pub const RATE_PER_SECOND: Bounds = Bounds::new(1, 1_000_000);

/// The command line's own bounds and defaults: flags no store sets, and where a flag takes more than
/// a store may ask for (each with its reason).
pub mod cli {
    use super::{Bounds, FloatBounds};

    /// Wider than [`super::METRICS_INTERVAL_SECONDS`]: by hand, fractions of a second sample a local
    /// Redis finely (tests, benchmarks), and up to a day. No operator reads the sale at that pace.
    pub const METRICS_INTERVAL_SECONDS: FloatBounds = FloatBounds { min: 0.001, max: 86_400.0 };
    /// Wider than [`super::DELAY_MILLIS`]: by hand, gaps and delays up to an hour (a run's
    /// `--max-seconds` cuts them; tests/simulator.rs relies on it).
    pub const DELAY_MILLIS: Bounds = Bounds::new(0, 3_600_000);
    /// Wider than [`super::RATE_PER_SECOND`]: by hand, fractions of a customer per second, a trickle.
    pub const RATE_PER_SECOND: FloatBounds = FloatBounds { min: 0.001, max: 1_000_000.0 };
    /// Differs from [`super::DEFAULT_STOCK`] on purpose: a run by hand is short.
    pub const DEFAULT_STOCK: i64 = 100;
    /// `simulate --wait-complete`: up to a day.
    pub const WAIT_SECONDS: Bounds = Bounds::new(0, 86_400);
    /// `simulate --max-seconds`: up to a week.
    pub const RUN_SECONDS: Bounds = Bounds::new(1, 604_800);
    /// `simulate --reconnect-seconds`: 0 stops at the first failure.
    pub const RECONNECT_SECONDS: Bounds = Bounds::new(0, 3_600);
    pub const DEFAULT_RECONNECT_SECONDS: u64 = 30;
    /// `sale --watch --interval-millis` and `dashboard --interval-millis`.
    pub const WATCH_INTERVAL_MILLIS: Bounds = Bounds::new(10, 60_000);
    pub const DEFAULT_WATCH_INTERVAL_MILLIS: u64 = 500;
}
