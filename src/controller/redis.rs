//! The controller's view of a store's Redis, behind a small trait so reconcile tests can stand in for it.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::crd::{Engine, ProcessingSpec, SaleStatus};
use crate::render::acl::AclUser;
use crate::sale::marker::{self, SaleMarker};
use crate::sale::{self, EngineError, LoadOutcome, ProcessingSettings};
use crate::status::reason;
use crate::status::sale::WantedSale;

/// Where a store's Redis is, as the operator reaches it, and who the operator is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`
    pub address: String,
    /// The ACL user the operator logs in as (`None`: the default user).
    pub username: Option<String>,
    pub password: String,
    /// The admin (`default` user) password: the way in when Redis does not know the operator's user (yet),
    /// e.g. after its ACL Secret was deleted. `None` while the user's password Secret is missing.
    pub admin_password: Option<String>,
}

impl RedisTarget {
    pub fn url(&self) -> String {
        match &self.username {
            Some(user) => format!("redis://{user}@{}", self.address),
            None => format!("redis://{}", self.address),
        }
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

    /// The sale numbers for the status, and which sale Redis holds (its marker).
    fn read_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
    ) -> BoxFuture<'a, Result<(SaleStatus, Option<SaleMarker>), RedisProblem>>;

    /// Starts the `wanted` sale (`sale::marker::start`): the sale's keys deleted, its stock set, the
    /// marker written, in one transaction.
    fn start_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<SaleMarker, RedisProblem>>;

    /// Marks the sale Redis holds as the `wanted` one without touching it (`sale::marker::adopt`);
    /// `None` when a marker was there already.
    fn adopt_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<Option<SaleMarker>, RedisProblem>>;

    /// Makes Redis' ACL users exactly `users` (`ACL SETUSER`, idempotent), logged in as the operator, or
    /// as the default user with `target.admin_password` when Redis refuses the operator's user. Returns
    /// the users whose accepted passwords changed. Required: a gateway that skipped it would leave every
    /// component without its user while the store looked healthy.
    fn ensure_users<'a>(
        &'a self,
        target: &'a RedisTarget,
        users: &'a [AclUser],
    ) -> BoxFuture<'a, Result<Vec<String>, RedisProblem>>;
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

pub use crate::status::reason::ENGINE_FAILING;

/// The condition reason for an engine failure.
pub fn reason_of(e: &EngineError) -> &'static str {
    match e {
        EngineError::InvalidUrl { .. } | EngineError::Connect { .. } | EngineError::NotRedis { .. } => {
            reason::REDIS_UNREACHABLE
        }
        EngineError::Auth { .. } => reason::REDIS_AUTH_FAILED,
        EngineError::MissingModule { .. } => reason::MODULE_MISSING,
        EngineError::ScriptLoad { .. } | EngineError::ScriptMissing { .. } => reason::SCRIPT_LOAD_FAILED,
        EngineError::Timeout { .. } => reason::REDIS_TIMEOUT,
        EngineError::Command { .. } | EngineError::Protocol { .. } | EngineError::Io(_) | EngineError::Other(_) => {
            reason::REDIS_ERROR
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
                reason: reason::REDIS_TIMEOUT,
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
            let settings = ProcessingSettings::from(processing);
            let (outcome, problems) = self
                .within("loading the scripts", target, async {
                    let (mut conn, _) = sale::connect(&target.url(), Some(&target.password)).await?;
                    let outcome = sale::load_scripts(&mut conn, engine, &settings).await?;
                    Ok((outcome, sale::sale_problems(&mut conn).await?))
                })
                .await?;
            if !problems.is_empty() {
                return Err(RedisProblem {
                    reason: ENGINE_FAILING,
                    message: format!(
                        "the {engine} scripts are loaded but orders are not decided: {}",
                        problems.join("; ")
                    ),
                });
            }
            Ok(match (engine, outcome) {
                (Engine::Native, _) => {
                    "RedisTimeSeries and the processor's functions are loaded; the processor Deployment completes the orders".into()
                }
                (_, LoadOutcome::AlreadyLoaded) => format!("{engine} scripts are loaded"),
                (_, LoadOutcome::Loaded) => format!("{engine} scripts loaded"),
                (_, LoadOutcome::Reloaded { reason }) => format!("{engine} scripts reloaded: {reason}"),
            })
        })
    }

    fn ensure_users<'a>(
        &'a self,
        target: &'a RedisTarget,
        users: &'a [AclUser],
    ) -> BoxFuture<'a, Result<Vec<String>, RedisProblem>> {
        Box::pin(async move {
            self.within("setting up the Redis users", target, async {
                let mut conn = match sale::connect(&target.url(), Some(&target.password)).await {
                    Ok((conn, _)) => conn,
                    Err(EngineError::Auth { .. }) if target.admin_password.is_some() => {
                        let admin = RedisTarget { username: None, ..target.clone() };
                        sale::connect(&admin.url(), target.admin_password.as_deref()).await?.0
                    }
                    Err(e) => return Err(e),
                };
                set_users(&mut conn, users).await
            })
            .await
        })
    }

    fn read_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
    ) -> BoxFuture<'a, Result<(SaleStatus, Option<SaleMarker>), RedisProblem>> {
        Box::pin(async move {
            let (sale, held) = self
                .within("reading the sale", target, async {
                    let (mut conn, _) = sale::connect(&target.url(), Some(&target.password)).await?;
                    Ok((sale::read_sale(&mut conn).await?, marker::read(&mut conn).await?))
                })
                .await?;
            Ok((SaleStatus::from(sale), held))
        })
    }

    fn start_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<SaleMarker, RedisProblem>> {
        Box::pin(self.within("starting the sale", target, async move {
            let (mut conn, _) = sale::connect(&target.url(), Some(&target.password)).await?;
            marker::start(&mut conn, &wanted.id, wanted.stock).await
        }))
    }

    fn adopt_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<Option<SaleMarker>, RedisProblem>> {
        Box::pin(self.within("marking the sale", target, async move {
            let (mut conn, _) = sale::connect(&target.url(), Some(&target.password)).await?;
            marker::adopt(&mut conn, &wanted.id, wanted.stock).await
        }))
    }
}

/// `ACL SETUSER` of every user in one round trip; returns those whose passwords were not already the
/// ones given (read with `ACL GETUSER` just before, in the same pipeline).
async fn set_users(conn: &mut impl sale::RedisConn, users: &[AclUser]) -> Result<Vec<String>, EngineError> {
    let mut pipe = redis::pipe();
    for u in users {
        pipe.cmd("ACL").arg("GETUSER").arg(&u.name);
    }
    for u in users {
        pipe.cmd("ACL").arg("SETUSER").arg(&u.name).arg(&u.args).ignore();
    }
    // Users no store has any more (the `nopass` probe user of earlier versions), from a Redis that
    // started with an older ACL file.
    for name in crate::render::acl::RETIRED_USERS {
        pipe.cmd("ACL").arg("DELUSER").arg(*name).ignore();
    }
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let before: Vec<redis::Value> = pipe
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command(format!("ACL GETUSER/SETUSER {}", names.join(" ")), e))?;
    Ok(users
        .iter()
        .zip(before)
        .filter(|(u, reply)| {
            let mut had = getuser_passwords(reply);
            let mut want = u.hashes.clone();
            had.sort();
            want.sort();
            had != want
        })
        .map(|(u, _)| u.name.clone())
        .collect())
}

/// The `passwords` of an `ACL GETUSER` reply (hex hashes); none for a user that does not exist.
fn getuser_passwords(reply: &redis::Value) -> Vec<String> {
    sale::value_pairs(reply)
        .and_then(|pairs| sale::field(&pairs, "passwords").and_then(sale::value_items).map(|items| items.to_vec()))
        .unwrap_or_default()
        .iter()
        .filter_map(sale::value_str)
        .collect()
}
