//! The controller's view of a store's Redis, behind a small trait so reconcile tests can stand in for it.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::crd::{Engine, ProcessingSpec, SaleStatus};
use crate::engine::{self, EngineError, EngineKind, LoadOutcome, ProcessingSettings};

/// Where a store's Redis is, as the operator reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`
    pub address: String,
    pub password: String,
}

impl RedisTarget {
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }
}

/// Why Redis could not do what the controller asked: a condition reason and a message naming the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisProblem {
    pub reason: &'static str,
    pub message: String,
}

/// What the controller needs from Redis.
pub trait RedisGateway: Send + Sync {
    /// Makes sure the engine's scripts are loaded (idempotent; reloads after a Redis restart).
    /// Returns a sentence for the ScriptsLoaded condition.
    fn ensure_scripts<'a>(
        &'a self,
        target: &'a RedisTarget,
        engine: Engine,
        processing: &'a ProcessingSpec,
    ) -> BoxFuture<'a, Result<String, RedisProblem>>;

    /// The sale numbers for the status.
    fn read_sale<'a>(&'a self, target: &'a RedisTarget) -> BoxFuture<'a, Result<SaleStatus, RedisProblem>>;
}

/// The real thing: a short-lived connection per call, with timeouts so an unreachable Redis never
/// stalls a reconcile.
pub struct LiveRedis {
    pub timeout: Duration,
}

impl Default for LiveRedis {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5) }
    }
}

/// ScriptsLoaded reason when the scripts are in place but the sale is not flowing: an engine
/// recorded a failure, an order waits too long, or `product` is not an integer.
pub const ENGINE_FAILING: &str = "EngineFailing";

/// The condition reason for an engine failure.
pub fn reason_of(e: &EngineError) -> &'static str {
    match e {
        EngineError::InvalidUrl { .. } | EngineError::Connect { .. } | EngineError::NotRedis { .. } => {
            "RedisUnreachable"
        }
        EngineError::Auth { .. } => "RedisAuthFailed",
        EngineError::MissingModule { .. } => "ModuleMissing",
        EngineError::ScriptLoad { .. } => "ScriptLoadFailed",
        EngineError::Timeout { .. } => "RedisTimeout",
        EngineError::Command { .. } | EngineError::Protocol { .. } | EngineError::Io(_) | EngineError::Other(_) => {
            "RedisError"
        }
    }
}

fn problem(e: EngineError) -> RedisProblem {
    RedisProblem { reason: reason_of(&e), message: e.to_string() }
}

impl LiveRedis {
    async fn within<T>(
        &self,
        what: &str,
        target: &RedisTarget,
        f: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, RedisProblem> {
        match tokio::time::timeout(self.timeout * 2, f).await {
            Ok(r) => r.map_err(problem),
            Err(_) => Err(RedisProblem {
                reason: "RedisTimeout",
                message: format!("{what} at {} took longer than {:?}", target.address, self.timeout * 2),
            }),
        }
    }
}

impl RedisGateway for LiveRedis {
    fn ensure_scripts<'a>(
        &'a self,
        target: &'a RedisTarget,
        engine: Engine,
        processing: &'a ProcessingSpec,
    ) -> BoxFuture<'a, Result<String, RedisProblem>> {
        Box::pin(async move {
            let settings = ProcessingSettings {
                batch_size: processing.batch_size,
                metrics_interval: Duration::from_secs(processing.metrics_interval_seconds.into()),
            };
            let kind = engine_kind(engine);
            let (outcome, problems) = self
                .within("loading the scripts", target, async {
                    let (mut conn, _) = engine::connect(&target.url(), Some(&target.password)).await?;
                    let outcome = engine::load_scripts(&mut conn, kind, &settings).await?;
                    Ok((outcome, engine::sale_problems(&mut conn).await?))
                })
                .await?;
            if !problems.is_empty() {
                return Err(RedisProblem {
                    reason: ENGINE_FAILING,
                    message: format!(
                        "the {kind} scripts are loaded but orders are not decided: {}",
                        problems.join("; ")
                    ),
                });
            }
            Ok(match (kind, outcome) {
                (EngineKind::Native, _) => {
                    "RedisTimeSeries is loaded; the processor Deployment completes the orders".into()
                }
                (_, LoadOutcome::AlreadyLoaded) => format!("{kind} scripts are loaded"),
                (_, LoadOutcome::Loaded) => format!("{kind} scripts loaded"),
                (_, LoadOutcome::Reloaded { reason }) => format!("{kind} scripts reloaded: {reason}"),
            })
        })
    }

    fn read_sale<'a>(&'a self, target: &'a RedisTarget) -> BoxFuture<'a, Result<SaleStatus, RedisProblem>> {
        Box::pin(async move {
            let sale = self
                .within("reading the sale", target, async {
                    let (mut conn, _) = engine::connect(&target.url(), Some(&target.password)).await?;
                    engine::read_sale(&mut conn).await
                })
                .await?;
            Ok(SaleStatus {
                available: sale.product,
                customers_waiting: sale.customers_waiting,
                orders_queued: sale.orders_queued,
                completed: sale.completed,
                rejected: sale.rejected,
            })
        })
    }
}

/// The engine behind a `spec.engine` value.
pub fn engine_kind(engine: Engine) -> EngineKind {
    match engine {
        Engine::Gears => EngineKind::Gears,
        Engine::Triggers => EngineKind::Triggers,
        Engine::Native => EngineKind::Native,
    }
}
