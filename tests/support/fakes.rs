//! The one stand-in for each of the controller's gateways: `FakeRedis` (a `RedisGateway`) and `FakeGrafana`
//! (a `GrafanaGateway`), used by the in-memory reconcile tests (`tests/reconcile.rs`) and the e2e harness
//! (`cluster::Operator`). Each records what it was asked and answers what the test sets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use popup_operator::controller::{GrafanaGateway, GrafanaTarget, RedisGateway, RedisProblem, RedisTarget};
use popup_operator::crd::{Engine, ProcessingSpec, SaleStatus};
use popup_operator::render::acl::AclUser;
use popup_operator::sale::marker::SaleMarker;
use popup_operator::status::grafana::{Answers, Reply, Round};
use popup_operator::status::sale::WantedSale;
use tokio::sync::Notify;

/// Stands in for Redis: scripts load, the sale reads as set, the users are taken; each answer can be
/// changed by the test. `ensure_scripts` can be told to hang until released (to kill the operator, or change
/// the store, mid-reconcile).
pub struct FakeRedis {
    /// What `ensure_scripts` answers.
    pub scripts: Mutex<Result<String, RedisProblem>>,
    /// What `read_sale` answers (with `marker`); `start_sale` resets it to the new stock.
    pub sale: Mutex<SaleStatus>,
    /// The sale's marker, as `start_sale` wrote it (or a test put it, to stand for Redis' data).
    pub marker: Mutex<Option<SaleMarker>>,
    /// The target of every `ensure_scripts` call, in order.
    pub targets: Mutex<Vec<RedisTarget>>,
    /// What `ensure_users` answers, and the users of each of its calls.
    pub users_result: Mutex<Result<Vec<String>, RedisProblem>>,
    pub users: Mutex<Vec<Vec<AclUser>>>,
    /// While set, `ensure_scripts` signals `entered` and waits for `release` (`notify_one`).
    pub hang: AtomicBool,
    pub entered: Notify,
    pub release: Notify,
}

impl Default for FakeRedis {
    fn default() -> Self {
        Self {
            scripts: Mutex::new(Ok("scripts loaded (fake Redis)".into())),
            sale: Mutex::new(SaleStatus {
                available: Some(9412),
                customers_waiting: 3,
                orders_queued: 2,
                completed: 588,
                rejected: 0,
            }),
            marker: Mutex::default(),
            targets: Mutex::default(),
            users_result: Mutex::new(Ok(Vec::new())),
            users: Mutex::default(),
            hang: AtomicBool::new(false),
            entered: Notify::new(),
            release: Notify::new(),
        }
    }
}

impl FakeRedis {
    /// How many times the scripts were ensured.
    pub fn calls(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
}

impl RedisGateway for FakeRedis {
    fn ensure_scripts<'a>(
        &'a self,
        target: &'a RedisTarget,
        _engine: Engine,
        _processing: &'a ProcessingSpec,
    ) -> BoxFuture<'a, Result<String, RedisProblem>> {
        self.targets.lock().unwrap().push(target.clone());
        let result = self.scripts.lock().unwrap().clone();
        Box::pin(async move {
            if self.hang.load(Ordering::SeqCst) {
                self.entered.notify_one();
                self.release.notified().await;
            }
            result
        })
    }

    fn read_sale<'a>(
        &'a self,
        _target: &'a RedisTarget,
    ) -> BoxFuture<'a, Result<(SaleStatus, Option<SaleMarker>), RedisProblem>> {
        let s = (self.sale.lock().unwrap().clone(), self.marker.lock().unwrap().clone());
        Box::pin(async move { Ok(s) })
    }

    fn start_sale<'a>(
        &'a self,
        _target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<SaleMarker, RedisProblem>> {
        let (id, stock) = (&wanted.id, wanted.stock);
        let m = SaleMarker { id: id.clone(), nonce: format!("n{}", id.len()), stock, started_at_ms: 1_800_000_000_000 };
        *self.marker.lock().unwrap() = Some(m.clone());
        // What the start's transaction leaves: the stock, nothing queued or decided.
        *self.sale.lock().unwrap() = SaleStatus { available: Some(stock), ..Default::default() };
        Box::pin(async move { Ok(m) })
    }

    fn adopt_sale<'a>(
        &'a self,
        target: &'a RedisTarget,
        wanted: &'a WantedSale,
    ) -> BoxFuture<'a, Result<Option<SaleMarker>, RedisProblem>> {
        Box::pin(async move {
            if self.marker.lock().unwrap().is_some() {
                return Ok(None);
            }
            self.start_sale(target, wanted).await.map(Some)
        })
    }

    fn ensure_users<'a>(
        &'a self,
        _target: &'a RedisTarget,
        users: &'a [AclUser],
    ) -> BoxFuture<'a, Result<Vec<String>, RedisProblem>> {
        self.users.lock().unwrap().push(users.to_vec());
        let result = self.users_result.lock().unwrap().clone();
        Box::pin(async move { result })
    }
}

/// Stands in for a managed Grafana: answers every round with `round` (a healthy Grafana's answers unless
/// the test changes it), and keeps whom it was asked for.
pub struct FakeGrafana {
    pub round: Mutex<Round>,
    /// The target of every round, in order.
    pub targets: Mutex<Vec<GrafanaTarget>>,
}

impl FakeGrafana {
    /// What a healthy Grafana answers: the plugin loaded, the datasource working, the dashboard there.
    pub fn healthy() -> Answers {
        Answers {
            plugin: Reply::new(200, r#"{"id":"redis-datasource","info":{"version":"2.2.0"}}"#),
            health: Reply::new(200, r#"{"status":"OK","message":"Data Source is working as expected."}"#),
            datasource: None,
            dashboard: Reply::new(200, r#"{"dashboard":{"title":"Pop-up Store sales/shop"}}"#),
        }
    }
}

impl Default for FakeGrafana {
    fn default() -> Self {
        Self { round: Mutex::new(Round::Answered(Self::healthy())), targets: Mutex::default() }
    }
}

impl GrafanaGateway for FakeGrafana {
    fn round<'a>(&'a self, target: &'a GrafanaTarget) -> BoxFuture<'a, Round> {
        self.targets.lock().unwrap().push(target.clone());
        let round = self.round.lock().unwrap().clone();
        Box::pin(async move { round })
    }
}
