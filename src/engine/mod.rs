//! Interim engine module: reads the sale; script loading arrives with the engines (issue 3).
use std::time::Duration;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Gears,
    Triggers,
    Native,
}
impl From<crate::crd::Engine> for EngineKind {
    fn from(e: crate::crd::Engine) -> Self {
        match e {
            crate::crd::Engine::Gears => Self::Gears,
            crate::crd::Engine::Triggers => Self::Triggers,
            crate::crd::Engine::Native => Self::Native,
        }
    }
}
pub struct ProcessingSettings {
    pub batch_size: u32,
    pub metrics_interval: Duration,
}
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("not implemented")]
    Todo,
}
impl EngineError {
    pub fn reason(&self) -> &'static str {
        "Todo"
    }
}
pub struct LoadOutcome;
impl std::fmt::Display for LoadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loaded")
    }
}
#[derive(Default)]
pub struct SaleSnapshot {
    pub product: Option<i64>,
    pub customers_waiting: u64,
    pub orders_queued: u64,
    pub completed: u64,
    pub rejected: u64,
}
pub async fn load_scripts(
    _c: &mut redis::aio::MultiplexedConnection,
    _k: EngineKind,
    _s: &ProcessingSettings,
) -> Result<LoadOutcome, EngineError> {
    Err(EngineError::Todo)
}
pub async fn read_sale(_c: &mut redis::aio::MultiplexedConnection) -> Result<SaleSnapshot, EngineError> {
    Err(EngineError::Todo)
}
