//! A real Redis with a store's ACL users exactly as the operator renders them (`render::acl`): the ACL
//! file of a store, loaded with `--aclfile`, and a connection per user.

use std::sync::Arc;
use std::time::Duration;

use popup_operator::controller::users;
use popup_operator::crd::{Engine, PopUpStore, PopUpStoreSpec};
use popup_operator::render::acl::{self, Credentials, Role};
use popup_operator::render::{self, ValidatedStore};
use popup_operator::sale::simulator::{self, Resilience, SimulationSummary, SimulatorConfig};
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::redis_server::RedisServer;
use super::temp_dir::TempDir;

/// The admin (`default` user) password of the stores made here.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A store called `shop` in namespace `sales` with every component (the processor with `native`).
pub fn store(engine: Engine) -> ValidatedStore {
    let spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({ "engine": engine })).unwrap();
    let mut s = PopUpStore::new("shop", spec);
    s.metadata.namespace = Some("sales".into());
    render::validate(&s).unwrap()
}

/// The users of a store and their passwords.
pub struct Users {
    pub store: ValidatedStore,
    pub creds: Credentials,
    /// Where the ACL file is written: a folder of this `Users`' own (tests running at once in one process
    /// must never share it, or one's end removes the other's file before its Redis reads it).
    dir: TempDir,
}

impl Users {
    /// New passwords for every user of a store of `engine`, the admin's being [`ADMIN_PASSWORD`].
    pub fn new(engine: Engine) -> Users {
        Users::with_store(store(engine))
    }

    /// New passwords for every user of `store`, the admin's being [`ADMIN_PASSWORD`].
    pub fn with_store(store: ValidatedStore) -> Users {
        let creds = users::generated(&store, Some(ADMIN_PASSWORD));
        Users { store, creds, dir: TempDir::new("popup-acl") }
    }

    /// Writes the store's ACL file (as in the Secret `<store>-redis-acl`) and returns its path.
    pub fn write_acl_file(&self) -> String {
        self.dir.write("users.acl", &acl::acl_file(&self.store, &self.creds)).to_string_lossy().into_owned()
    }

    /// A redis-stack-server that loads the users at start, as the store's Redis pod does.
    pub fn start_server(&self) -> RedisServer {
        let path = self.write_acl_file();
        RedisServer::start_with(&["--aclfile", &path])
    }

    pub fn password(&self, role: Role) -> String {
        match role {
            Role::Admin => ADMIN_PASSWORD.into(),
            other => self.creds.password(other).into(),
        }
    }

    /// `redis://<user>@127.0.0.1:<port>` and the user's password: what the component's pod gets.
    pub fn url(&self, server: &RedisServer, role: Role) -> String {
        server.url_as(role.user())
    }

    pub async fn conn(&self, server: &RedisServer, role: Role) -> MultiplexedConnection {
        server.conn_as(Some(role.user()), &self.password(role)).await
    }

    /// The simulator Job in the sale the operator started as `sale` (`sale::marker::start`): `customers`
    /// arriving at `rate` a second, each ordering within 200 ms, sent as the simulator user with its
    /// send-once script and the Job's retries; it waits up to `wait` for every order to be decided, and
    /// every customer must have been processed.
    pub async fn join_sale(
        &self,
        server: &RedisServer,
        sale: &str,
        customers: u64,
        rate: f64,
        wait: Duration,
    ) -> SimulationSummary {
        let config = SimulatorConfig {
            customers,
            rate: Some(rate),
            max_order_delay: Duration::from_millis(200),
            join: Some(sale.into()),
            wait_complete: Some(wait),
            ..Default::default()
        };
        let summary = simulator::run_resilient(
            &self.url(server, Role::Simulator),
            Some(&self.password(Role::Simulator)),
            &config,
            &Resilience::default(),
            |_| {},
            Arc::new(|w: &str| eprintln!("simulator: {w}")),
        )
        .await
        .unwrap();
        assert!(summary.all_processed, "{summary:?}");
        summary
    }

    /// A connection as the Redis datasource plugin opens one (radix v3 with `acl: true`): `AUTH user
    /// password` and nothing else, as the Grafana user.
    pub async fn plugin_conn(&self, server: &RedisServer) -> MultiplexedConnection {
        use redis::IntoConnectionInfo;
        let info = self.url(server, Role::Grafana).into_connection_info().unwrap();
        let settings = info.redis_settings().clone().set_password(self.password(Role::Grafana)).set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings)).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

/// `(user, command or key, reason)` of every entry of the ACL log: what Redis refused, and to whom.
pub async fn acl_log(admin: &mut MultiplexedConnection) -> Vec<(String, String, String)> {
    let reply: Value = redis::cmd("ACL").arg("LOG").query_async(admin).await.unwrap();
    let Value::Array(entries) = reply else { panic!("ACL LOG: {reply:?}") };
    entries
        .iter()
        .map(|e| {
            let fields: Vec<(String, String)> = match e {
                Value::Array(kv) => kv.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect(),
                Value::Map(kv) => kv.iter().map(|(k, v)| (text(k), text(v))).collect(),
                other => panic!("ACL LOG entry {other:?}"),
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("username"), get("object"), get("reason"))
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        _ => String::new(),
    }
}

/// Runs `args` as the connection's user and returns Redis' refusal; panics when Redis accepts it.
pub async fn refused(conn: &mut MultiplexedConnection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<Value>(conn).await {
        Ok(v) => panic!("{args:?} was accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Redis' ACL refusal (`NOPERM …`; the client library may spell the code `NoPerm`).
pub fn is_noperm(error: &str) -> bool {
    error.to_uppercase().contains("NOPERM")
}

/// Like [`refused`], and the refusal is the ACL's (NOPERM), not some other error.
pub async fn refused_by_acl(conn: &mut MultiplexedConnection, args: &[&str]) {
    let e = refused(conn, args).await;
    assert!(is_noperm(&e), "{args:?}: refused, but not by the ACL: {e}");
}
