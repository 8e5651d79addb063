//! The controller's view of a managed Grafana: one round of HTTP questions asked as its admin (which
//! questions and what the replies mean: `status::grafana`, pure), behind a small trait so reconcile
//! tests can stand in for it; and the memory that paces rounds per store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::status::Check;
use crate::status::grafana::{
    self as answers, Answers, Reply, Round, dashboard_path, datasource_id, datasource_path, health_by_id_path,
    health_by_uid_path, needs_id_fallback, plugin_path,
};

/// Where a store's Grafana is and how the operator logs in to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrafanaTarget {
    /// `http://host:port`
    pub url: String,
    pub user: String,
    pub password: String,
    pub datasource_uid: String,
    pub dashboard_uid: String,
}

/// What the controller needs from a managed Grafana.
pub trait GrafanaGateway: Send + Sync {
    /// Asks the round's questions; a transport failure ends the round as [`Round::Unreachable`].
    fn round<'a>(&'a self, target: &'a GrafanaTarget) -> BoxFuture<'a, Round>;
}

/// The real thing: plain HTTP/1.1 (Grafana's Service inside the cluster), a timeout per request.
pub struct LiveGrafana {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Default for LiveGrafana {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

/// Grafana's answers are small (a dashboard is ~25 KB); anything larger is not what was asked for.
const MAX_BODY: usize = 1 << 20;

impl LiveGrafana {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self { client: Client::builder(TokioExecutor::new()).build(connector), timeout }
    }

    async fn get(&self, target: &GrafanaTarget, path: &str) -> Result<Reply, String> {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", target.user, target.password));
        let request = hyper::Request::get(format!("{}{path}", target.url.trim_end_matches('/')))
            .header(hyper::header::AUTHORIZATION, format!("Basic {credentials}"))
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("GET {path}: {}", chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("GET {path}: reading the answer: {e}"))?
                .to_bytes();
            Ok(Reply::new(status, String::from_utf8_lossy(&body)))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("GET {path}: no answer within {:?}", self.timeout))?
    }

    async fn ask(&self, t: &GrafanaTarget) -> Result<Answers, String> {
        let plugin = self.get(t, &plugin_path()).await?;
        let mut health = self.get(t, &health_by_uid_path(&t.datasource_uid)).await?;
        let mut datasource = None;
        if needs_id_fallback(&health) {
            let lookup = self.get(t, &datasource_path(&t.datasource_uid)).await?;
            if let Some(id) = datasource_id(&lookup) {
                health = self.get(t, &health_by_id_path(id)).await?;
            }
            datasource = Some(lookup);
        }
        let dashboard = self.get(t, &dashboard_path(&t.dashboard_uid)).await?;
        Ok(Answers { plugin, health, datasource, dashboard })
    }
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

impl GrafanaGateway for LiveGrafana {
    fn round<'a>(&'a self, target: &'a GrafanaTarget) -> BoxFuture<'a, Round> {
        Box::pin(async move {
            match self.ask(target).await {
                Ok(a) => Round::Answered(a),
                Err(e) => Round::Unreachable(e),
            }
        })
    }
}

/// The last round of each store's Grafana, so that it is asked at most once a minute while it is fine
/// (`status::grafana::round_due`). A round belongs to one rollout of the Grafana Deployment: a new one
/// is asked at once.
#[derive(Default)]
pub struct Rounds {
    last: Mutex<HashMap<String, Last>>,
}

struct Last {
    rollout: String,
    at: Instant,
    check: Check,
}

/// Rounds older than this are forgotten (their stores are likely gone).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl Rounds {
    /// The check of the last round of `store` when no new one is due for this `rollout`.
    pub fn remembered(&self, store: &str, rollout: &str, now: Instant) -> Option<Check> {
        let last = self.last.lock().expect("not poisoned");
        let l = last.get(store).filter(|l| l.rollout == rollout)?;
        (!answers::round_due(Some((l.check.ok, now.saturating_duration_since(l.at))))).then(|| l.check.clone())
    }

    pub fn remember(&self, store: &str, rollout: &str, now: Instant, check: Check) {
        let mut last = self.last.lock().expect("not poisoned");
        last.retain(|_, l| now.saturating_duration_since(l.at) < FORGET_AFTER);
        last.insert(store.to_string(), Last { rollout: rollout.to_string(), at: now, check });
    }

    /// Its Grafana is not available: the next available one gets a round at once.
    pub fn forget(&self, store: &str) {
        self.last.lock().expect("not poisoned").remove(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::reason;

    #[test]
    fn a_fine_round_is_reused_for_a_minute_a_failed_one_for_ten_seconds() {
        let rounds = Rounds::default();
        let t0 = Instant::now();
        let fine = Check::ok(reason::AVAILABLE, "fine");
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0), None, "never asked: due");
        rounds.remember("sales/shop", "uid/1", t0, fine.clone());
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0 + Duration::from_secs(59)), Some(fine.clone()));
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0 + Duration::from_secs(60)), None);
        assert_eq!(rounds.remembered("sales/shop", "uid/2", t0 + Duration::from_secs(1)), None, "a new rollout");
        assert_eq!(rounds.remembered("sales/other", "uid/1", t0), None);
        let broken = Check::not(reason::PLUGIN_NOT_LOADED, "no plugin");
        rounds.remember("sales/shop", "uid/1", t0, broken.clone());
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0 + Duration::from_secs(9)), Some(broken));
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0 + Duration::from_secs(10)), None);
        rounds.remember("sales/shop", "uid/1", t0, fine);
        rounds.forget("sales/shop");
        assert_eq!(rounds.remembered("sales/shop", "uid/1", t0), None);
    }

    #[test]
    fn old_rounds_are_dropped() {
        let rounds = Rounds::default();
        let t0 = Instant::now();
        rounds.remember("sales/gone", "uid/1", t0, Check::ok(reason::AVAILABLE, "fine"));
        rounds.remember("sales/shop", "uid/1", t0 + FORGET_AFTER, Check::ok(reason::AVAILABLE, "fine"));
        assert_eq!(rounds.last.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable_with_the_cause() {
        // A port nobody listens on: bind one and drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = GrafanaTarget {
            url: format!("http://127.0.0.1:{port}"),
            user: "admin".into(),
            password: "x".into(),
            datasource_uid: "d".into(),
            dashboard_uid: "b".into(),
        };
        match LiveGrafana::new(Duration::from_secs(2)).round(&target).await {
            Round::Unreachable(e) => assert!(e.contains("/api/plugins/redis-datasource/settings"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
