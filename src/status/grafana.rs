//! GrafanaReady from Grafana's own answers (pure). Once a managed Grafana's Deployment is available, the
//! controller asks that Grafana over HTTP, as its admin, three questions: is the Redis datasource plugin
//! loaded, is the store's datasource healthy, is the store's dashboard there. This module says which
//! requests make up a round, what the replies mean as a condition, and when to ask again; the HTTP
//! client (`controller::grafana`) only sends the requests and hands the replies back.

use std::time::Duration;

use serde_json::Value;

use super::Check;
use super::reason::{
    AVAILABLE, DASHBOARD_MISSING, DATASOURCE_MISSING, DATASOURCE_UNHEALTHY, GRAFANA_AUTH_FAILED, GRAFANA_ERROR,
    GRAFANA_UNREACHABLE, PLUGIN_NOT_LOADED,
};
use crate::render::{self, ValidatedStore};

/// The plugin every panel reads through.
pub const PLUGIN_ID: &str = "redis-datasource";

/// While GrafanaReady is True, at most one round per store in this time.
pub const ROUND_INTERVAL_WHEN_READY: Duration = Duration::from_secs(60);
/// While it is False, rounds may come this often (a reconcile still has to happen).
pub const ROUND_INTERVAL_WHEN_NOT_READY: Duration = Duration::from_secs(10);

/// The paths of one round, for a store whose datasource and dashboard have these uids.
pub fn plugin_path() -> String {
    format!("/api/plugins/{PLUGIN_ID}/settings")
}
/// Datasource health by uid: Grafana 9 and later. Grafana 8 answers 404 (see [`needs_id_fallback`]).
pub fn health_by_uid_path(datasource_uid: &str) -> String {
    format!("/api/datasources/uid/{datasource_uid}/health")
}
/// The datasource itself, to learn its numeric id.
pub fn datasource_path(datasource_uid: &str) -> String {
    format!("/api/datasources/uid/{datasource_uid}")
}
/// Datasource health by numeric id: what Grafana 8 has.
pub fn health_by_id_path(id: i64) -> String {
    format!("/api/datasources/{id}/health")
}
pub fn dashboard_path(dashboard_uid: &str) -> String {
    format!("/api/dashboards/uid/{dashboard_uid}")
}

/// One HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, body: body.into() }
    }
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// Grafana's own words: the JSON body's `message`, else the body itself, on one short line.
    fn message(&self) -> String {
        let text = match self.json()["message"].as_str() {
            Some(m) => m.to_string(),
            None => self.body.clone(),
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.char_indices().nth(300) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    }
}

/// Whether the health-by-uid reply means "this Grafana has no such endpoint" (or no such datasource):
/// then the round looks the datasource up by uid and asks for its health by id.
pub fn needs_id_fallback(health_by_uid: &Reply) -> bool {
    health_by_uid.status == 404
}

/// The numeric id in a `GET /api/datasources/uid/<uid>` reply.
pub fn datasource_id(datasource: &Reply) -> Option<i64> {
    datasource.ok().then(|| datasource.json()["id"].as_i64()).flatten()
}

/// What one round heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// No HTTP answer at all (connection refused, no such host, timeout): what went wrong.
    Unreachable(String),
    Answered(Answers),
}

/// The replies of a round that reached Grafana.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers {
    /// [`plugin_path`]
    pub plugin: Reply,
    /// [`health_by_uid_path`], or when that needed the fallback, [`health_by_id_path`].
    pub health: Reply,
    /// [`datasource_path`], asked only for the fallback.
    pub datasource: Option<Reply>,
    /// [`dashboard_path`]
    pub dashboard: Reply,
}

/// GrafanaReady from a round's replies. `url` is where the operator asked. The first problem found,
/// in the order a person would look (reachable, password, plugin, datasource, health, dashboard),
/// is the one reported.
pub fn check(store: &ValidatedStore, url: &str, round: &Round) -> Check {
    let answers = match round {
        Round::Unreachable(error) => return unreachable(store, url, error),
        Round::Answered(a) => a,
    };
    refused(store, answers)
        .or_else(|| plugin_problem(&answers.plugin))
        .or_else(|| datasource_problem(store, answers.datasource.as_ref()))
        .or_else(|| health_problem(store, &answers.health))
        .or_else(|| dashboard_problem(store, &answers.dashboard))
        .unwrap_or_else(|| available(store, answers))
}

fn unreachable(store: &ValidatedStore, url: &str, error: &str) -> Check {
    Check::not(
        GRAFANA_UNREACHABLE,
        format!(
            "the Grafana pod is ready but the operator gets no answer from {url} ({error}); an operator running outside the cluster needs --grafana-address (e.g. with kubectl port-forward svc/{} 3000:{})",
            store.names.grafana(),
            render::GRAFANA_PORT
        ),
    )
}

/// Any question refused: the admin password is not the one Grafana keeps.
fn refused(store: &ValidatedStore, answers: &Answers) -> Option<Check> {
    let every = [Some(&answers.plugin), Some(&answers.health), answers.datasource.as_ref(), Some(&answers.dashboard)];
    let refused = every.into_iter().flatten().find(|r| r.status == 401 || r.status == 403)?;
    Some(Check::not(
        GRAFANA_AUTH_FAILED,
        format!(
            "Grafana refuses the admin password of Secret {} (HTTP {}: {}); Grafana keeps the password it first started with in its database, so restart the Grafana pod (kubectl -n {} rollout restart deployment/{}) to have it take the Secret's",
            store.names.grafana(),
            refused.status,
            refused.message(),
            store.namespace,
            store.names.grafana()
        ),
    ))
}

/// What the answer to the lookup of `path` says: `missing` when Grafana has no such thing (404), the
/// unexpected answer when it failed otherwise, nothing when it is there.
fn lookup_problem(path: &str, reply: &Reply, missing: impl FnOnce() -> Check) -> Option<Check> {
    if reply.status == 404 {
        return Some(missing());
    }
    (!reply.ok()).then(|| unexpected(path, reply))
}

fn plugin_problem(plugin: &Reply) -> Option<Check> {
    lookup_problem(&plugin_path(), plugin, || {
        Check::not(
            PLUGIN_NOT_LOADED,
            format!(
                "Grafana runs without the {PLUGIN_ID} plugin, so every panel stays empty ({}: {}). Grafana 12.1 and later install {} at start (GF_PLUGINS_PREINSTALL_SYNC) and stop when they cannot download it; an older Grafana ignores that setting, and a plugin that fails Grafana's signature check is not loaded. Set spec.grafana.image to Grafana 12.1 or later with access to grafana.com, or to an image with the plugin preinstalled outside /var/lib/grafana (an emptyDir in this pod) and GF_PATHS_PLUGINS pointing at it",
                plugin_path(),
                plugin.message(),
                render::grafana::PLUGIN
            ),
        )
    })
}

/// The datasource's lookup by uid, asked only on the way to its health by id (Grafana 8).
fn datasource_problem(store: &ValidatedStore, lookup: Option<&Reply>) -> Option<Check> {
    let uid = render::grafana::datasource_uid(store);
    let from = store.names.grafana_provisioning();
    not_provisioned(DATASOURCE_MISSING, "datasource", &uid, &datasource_path(&uid), &from, lookup?)
}

fn health_problem(store: &ValidatedStore, health: &Reply) -> Option<Check> {
    let health_status = health.json()["status"].as_str().unwrap_or_default().to_string();
    if health.ok() && health_status == "OK" {
        return None;
    }
    Some(Check::not(
        DATASOURCE_UNHEALTHY,
        format!(
            "the datasource {} cannot read the store's Redis; Grafana says: {} (HTTP {}). It logs in to {} as {} with the password of Secret {}",
            render::grafana::datasource_name(store),
            health.message(),
            health.status,
            store.names.redis_address(&store.namespace),
            render::acl::Role::Grafana.user(),
            store.names.redis_user(render::grafana::COMPONENT)
        ),
    ))
}

fn dashboard_problem(store: &ValidatedStore, dashboard: &Reply) -> Option<Check> {
    let uid = render::grafana::dashboard_uid(store);
    let from = store.names.grafana_dashboards();
    not_provisioned(DASHBOARD_MISSING, "dashboard", &uid, &dashboard_path(&uid), &from, dashboard)
}

/// Grafana lacks the `what` (a datasource, a dashboard) the operator provisioned from ConfigMap `from`.
fn not_provisioned(reason: &str, what: &str, uid: &str, path: &str, from: &str, reply: &Reply) -> Option<Check> {
    lookup_problem(path, reply, || {
        Check::not(
            reason,
            format!(
                "Grafana has no {what} {uid}: it did not load it from ConfigMap {from} (see the Grafana pod's log for the provisioning error)"
            ),
        )
    })
}

/// Every answer fine: what Grafana said, for the condition's message.
fn available(store: &ValidatedStore, answers: &Answers) -> Check {
    let dashboard_uid = render::grafana::dashboard_uid(store);
    let version = answers.plugin.json()["info"]["version"].as_str().unwrap_or("?").to_string();
    let title = answers.dashboard.json()["dashboard"]["title"].as_str().unwrap_or(&dashboard_uid).to_string();
    Check::ok(
        AVAILABLE,
        format!(
            "Grafana answers: plugin {PLUGIN_ID} {version} loaded, datasource healthy ({}), dashboard \"{title}\" present",
            answers.health.message()
        ),
    )
}

fn unexpected(path: &str, reply: &Reply) -> Check {
    Check::not(GRAFANA_ERROR, format!("Grafana answered {path} with HTTP {}: {}", reply.status, reply.message()))
}

/// Whether a new round is due, given how the last one ended and how long ago. No previous round: due.
pub fn round_due(last: Option<(bool, Duration)>) -> bool {
    match last {
        None => true,
        Some((true, age)) => age >= ROUND_INTERVAL_WHEN_READY,
        Some((false, age)) => age >= ROUND_INTERVAL_WHEN_NOT_READY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Engine, PopUpStore, PopUpStoreSpec};
    use crate::status::reason;

    fn store() -> ValidatedStore {
        let mut spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.engine = Engine::Triggers;
        let mut s = PopUpStore::new("shop", spec);
        s.metadata.namespace = Some("sales".into());
        render::validate(&s).unwrap()
    }

    const URL: &str = "http://shop-grafana.sales.svc:3000";
    const PLUGIN: &str = r#"{"id":"redis-datasource","type":"datasource","info":{"version":"2.2.0"}}"#;
    const HEALTHY: &str = r#"{"message":"Data Source is working as expected.","status":"OK"}"#;
    const DASHBOARD: &str = r#"{"dashboard":{"uid":"x","title":"Pop-up Store sales/shop"},"meta":{}}"#;

    /// A Grafana 12 that is fine.
    fn fine() -> Answers {
        Answers {
            plugin: Reply::new(200, PLUGIN),
            health: Reply::new(200, HEALTHY),
            datasource: None,
            dashboard: Reply::new(200, DASHBOARD),
        }
    }

    fn checked(edit: impl FnOnce(&mut Answers)) -> Check {
        let mut a = fine();
        edit(&mut a);
        check(&store(), URL, &Round::Answered(a))
    }

    #[test]
    fn a_grafana_that_answers_everything_is_available_and_says_what_it_saw() {
        let c = checked(|_| {});
        assert_eq!((c.ok, c.reason.as_str()), (true, reason::AVAILABLE));
        for words in ["redis-datasource 2.2.0", "Data Source is working as expected.", "Pop-up Store sales/shop"] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
        // Grafana 8: health by uid is 404, by id after the lookup answers.
        let c = checked(|a| a.datasource = Some(Reply::new(200, r#"{"id":1,"uid":"popup-redis-x"}"#)));
        assert!(c.ok, "{c:?}");
    }

    #[test]
    fn the_health_fallback_reads_the_id_of_the_datasource() {
        assert!(needs_id_fallback(&Reply::new(404, r#"{"message":"Not found"}"#)));
        assert!(!needs_id_fallback(&Reply::new(400, HEALTHY)));
        assert_eq!(datasource_id(&Reply::new(200, r#"{"id":7,"uid":"u"}"#)), Some(7));
        assert_eq!(datasource_id(&Reply::new(404, r#"{"id":7}"#)), None);
        assert_eq!(datasource_id(&Reply::new(200, "not json")), None);
        assert_eq!(health_by_id_path(7), "/api/datasources/7/health");
        assert_eq!(health_by_uid_path("u"), "/api/datasources/uid/u/health");
    }

    #[test]
    fn a_missing_plugin_says_how_to_get_it() {
        let c = checked(|a| {
            a.plugin = Reply::new(404, r#"{"message":"Plugin not found, no installed plugin with that id"}"#)
        });
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::PLUGIN_NOT_LOADED));
        for words in [
            "Plugin not found",
            "GF_PLUGINS_PREINSTALL_SYNC",
            "12.1",
            "spec.grafana.image",
            "preinstalled",
            "GF_PATHS_PLUGINS",
            "redis-datasource@2.2.0",
        ] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
    }

    #[test]
    fn an_unhealthy_datasource_quotes_grafana_and_names_the_login() {
        let said = "WRONGPASS invalid username-password pair or user is disabled.";
        let c = checked(|a| a.health = Reply::new(400, format!(r#"{{"message":"{said}","status":"ERROR"}}"#)));
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::DATASOURCE_UNHEALTHY));
        for words in [said, "HTTP 400", "popup-grafana", "shop-redis-grafana", "shop-redis.sales.svc:6379"] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
        // A 200 whose status is not OK is not healthy either.
        let c = checked(|a| a.health = Reply::new(200, r#"{"message":"dial tcp: i/o timeout","status":"ERROR"}"#));
        assert_eq!(c.reason, reason::DATASOURCE_UNHEALTHY);
        assert!(c.message.contains("dial tcp: i/o timeout"), "{}", c.message);
    }

    #[test]
    fn a_datasource_or_dashboard_grafana_does_not_have_is_missing() {
        let c = checked(|a| {
            a.health = Reply::new(404, r#"{"message":"Not found"}"#);
            a.datasource = Some(Reply::new(404, r#"{"message":"Data source not found"}"#));
        });
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::DATASOURCE_MISSING));
        assert!(c.message.contains("shop-grafana-provisioning"), "{}", c.message);
        let c = checked(|a| a.dashboard = Reply::new(404, r#"{"message":"Dashboard not found"}"#));
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::DASHBOARD_MISSING));
        assert!(c.message.contains("shop-grafana-dashboards"), "{}", c.message);
    }

    #[test]
    fn no_answer_a_refused_password_or_a_server_error_are_named() {
        let c = check(&store(), URL, &Round::Unreachable("connection refused".into()));
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::GRAFANA_UNREACHABLE));
        for words in [URL, "connection refused", "--grafana-address"] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
        // A refused password comes first: every other answer would be a refusal too.
        let c = checked(|a| {
            a.plugin = Reply::new(401, r#"{"message":"invalid username or password"}"#);
            a.dashboard = Reply::new(401, "{}");
        });
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::GRAFANA_AUTH_FAILED));
        for words in ["shop-grafana", "invalid username or password", "rollout restart"] {
            assert!(c.message.contains(words), "{words:?} missing: {}", c.message);
        }
        let c = checked(|a| a.dashboard = Reply::new(500, "internal\nerror"));
        assert_eq!((c.ok, c.reason.as_str()), (false, reason::GRAFANA_ERROR));
        assert!(c.message.contains("HTTP 500: internal error"), "{}", c.message);
    }

    #[test]
    fn rounds_come_once_a_minute_when_fine_and_sooner_when_not() {
        assert!(round_due(None));
        assert!(!round_due(Some((true, Duration::from_secs(59)))));
        assert!(round_due(Some((true, Duration::from_secs(60)))));
        assert!(!round_due(Some((false, Duration::from_secs(9)))));
        assert!(round_due(Some((false, Duration::from_secs(10)))));
        assert!(ROUND_INTERVAL_WHEN_NOT_READY < ROUND_INTERVAL_WHEN_READY);
    }

    #[test]
    fn long_or_multi_line_messages_are_kept_short() {
        let r = Reply::new(500, "x\n".repeat(400));
        assert_eq!(r.message().chars().count(), 301);
        assert!(!r.message().contains('\n'));
    }
}
