//! The controller's view of a store's Redis, behind a small trait so reconcile tests can stand in for it.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::crd::{Engine, ProcessingSpec, SaleStatus};

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

/// The real thing: a short-lived connection per call, with a timeout so an unreachable Redis never
/// stalls a reconcile.
pub struct LiveRedis {
    pub timeout: Duration,
}

impl Default for LiveRedis {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5) }
    }
}

impl LiveRedis {
    async fn connect(&self, target: &RedisTarget) -> Result<redis::aio::MultiplexedConnection, RedisProblem> {
        let unreachable = |e: &dyn std::fmt::Display| RedisProblem {
            reason: "RedisUnreachable",
            message: format!("cannot connect to Redis at {}: {e}", target.address),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(target.url()).map_err(|e| unreachable(&e))?;
        let settings = info.redis_settings().clone().set_password(target.password.clone());
        let info = info.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|e| unreachable(&e))?;
        match tokio::time::timeout(self.timeout, client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => Err(RedisProblem {
                reason: "RedisAuthFailed",
                message: format!("Redis at {} rejected the password from the store's Secret: {e}", target.address),
            }),
            Ok(Err(e)) => Err(unreachable(&e)),
            Err(_) => Err(unreachable(&format!("no answer within {:?}", self.timeout))),
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
            let mut conn = self.connect(target).await?;
            let settings = crate::engine::ProcessingSettings {
                batch_size: processing.batch_size,
                metrics_interval: Duration::from_secs(processing.metrics_interval_seconds.into()),
            };
            let outcome = tokio::time::timeout(
                self.timeout * 2,
                crate::engine::load_scripts(&mut conn, engine.into(), &settings),
            )
            .await
            .map_err(|_| RedisProblem {
                reason: "RedisTimeout",
                message: format!("loading scripts into {} timed out", target.address),
            })?
            .map_err(|e| RedisProblem { reason: e.reason(), message: e.to_string() })?;
            Ok(outcome.to_string())
        })
    }

    fn read_sale<'a>(&'a self, target: &'a RedisTarget) -> BoxFuture<'a, Result<SaleStatus, RedisProblem>> {
        Box::pin(async move {
            let mut conn = self.connect(target).await?;
            let sale = tokio::time::timeout(self.timeout, crate::engine::read_sale(&mut conn))
                .await
                .map_err(|_| RedisProblem {
                    reason: "RedisTimeout",
                    message: format!("reading the sale from {} timed out", target.address),
                })?
                .map_err(|e| RedisProblem { reason: e.reason(), message: e.to_string() })?;
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
