//! The operator's Redis gateway (`LiveRedis`, what fills `ScriptsLoaded` and `status.sale`, and sets up
//! the store's ACL users) against a real password-protected redis-stack-server.

pub mod support;
use support::{acl_users, poll, redis_server};

use std::time::Duration;

use popup_operator::controller::redis::LiveRedis;
use popup_operator::controller::{RedisGateway, RedisTarget};
use popup_operator::crd::{Engine, ProcessingSpec};
use popup_operator::status::reason;
use redis::Value;
use redis_server::{RedisServer, free_port, quick_sale, simulate};

const PASSWORD: &str = "correct-horse";

fn target(server: &RedisServer, password: &str) -> RedisTarget {
    RedisTarget {
        address: format!("127.0.0.1:{}", server.port),
        username: None,
        password: password.into(),
        admin_password: None,
    }
}

fn gateway() -> LiveRedis {
    LiveRedis { timeout: Duration::from_secs(5) }
}

/// A Redis with a password, the operator's target for it, a store's processing settings (batches of 3,
/// metrics every second) and the operator's gateway.
fn redis_with_password() -> (RedisServer, RedisTarget, ProcessingSpec, LiveRedis) {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let t = target(&server, PASSWORD);
    (server, t, ProcessingSpec { batch_size: 3, metrics_interval_seconds: 1, replicas: 1 }, gateway())
}

#[tokio::test]
async fn scripts_load_once_and_the_sale_is_read_with_the_password() {
    let (server, t, processing, g) = redis_with_password();

    let first = g.ensure_scripts(&t, Engine::Triggers, &processing).await.unwrap();
    assert_eq!(first, "triggers scripts loaded");
    let second = g.ensure_scripts(&t, Engine::Triggers, &processing).await.unwrap();
    assert_eq!(second, "triggers scripts are loaded", "a reconcile that finds the scripts changes nothing");

    // Run a small sale through the triggers engine, then read it as the status does.
    let (mut conn, _) = popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    simulate(&mut conn, &quick_sale(20, 30)).await;
    let (sale, _) = g.read_sale(&t).await.unwrap();
    assert_eq!(sale.available, Some(0), "30 customers for 20 units: sold out");
    assert_eq!(sale.completed, 20);
    assert_eq!(sale.rejected, 10);
    assert_eq!((sale.customers_waiting, sale.orders_queued), (0, 0));

    // The native engine only needs TimeSeries, which redis-stack has.
    let native = g.ensure_scripts(&t, Engine::Native, &processing).await.unwrap();
    assert!(native.contains("TimeSeries"), "{native}");
}

#[tokio::test]
async fn problems_become_condition_reasons_that_name_the_cause() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let processing = ProcessingSpec::default();
    let g = gateway();

    let wrong = g.read_sale(&target(&server, "wrong")).await.unwrap_err();
    assert_eq!(wrong.reason, reason::REDIS_AUTH_FAILED, "{wrong:?}");

    let gears = g.ensure_scripts(&target(&server, PASSWORD), Engine::Gears, &processing).await.unwrap_err();
    assert_eq!(gears.reason, reason::MODULE_MISSING, "{gears:?}");
    assert!(gears.message.contains("RedisGears 1"), "{}", gears.message);

    let nowhere = RedisTarget {
        address: format!("127.0.0.1:{}", free_port()),
        username: None,
        password: PASSWORD.into(),
        admin_password: None,
    };
    let unreachable = g.read_sale(&nowhere).await.unwrap_err();
    assert_eq!(unreachable.reason, reason::REDIS_UNREACHABLE, "{unreachable:?}");
    assert!(unreachable.message.contains(&nowhere.address), "{}", unreachable.message);
}

#[tokio::test]
async fn a_restarted_redis_gets_its_scripts_back() {
    let mut server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let t = target(&server, PASSWORD);
    let g = gateway();
    let processing = ProcessingSpec::default();
    g.ensure_scripts(&t, Engine::Triggers, &processing).await.unwrap();
    server.restart();
    let reloaded = poll::until(Duration::from_secs(10), Duration::from_millis(100), async || {
        g.ensure_scripts(&t, Engine::Triggers, &processing).await.map_err(|e| format!("{e:?}"))
    })
    .await;
    assert_eq!(reloaded.as_deref(), Ok("triggers scripts loaded"));
    let (mut conn, _) = popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    let libs: Value = redis::cmd("TFUNCTION").arg("LIST").query_async(&mut conn).await.unwrap();
    let text = format!("{libs:?}");
    assert!(text.contains("popup"), "the library is back: {text}");
}

/// An order whose customer field names nobody: the engine must reject it as invalid.
async fn add_bogus_order(conn: &mut redis::aio::MultiplexedConnection) {
    let _: String =
        redis::cmd("XADD").arg("queue:orders").arg("*").arg("customer").arg("nobody").query_async(conn).await.unwrap();
}

#[tokio::test]
async fn a_failing_engine_turns_scripts_loaded_false_with_the_cause() {
    let (server, t, processing, g) = redis_with_password();
    g.ensure_scripts(&t, Engine::Triggers, &processing).await.unwrap();

    // Someone made queue:rejected a string: the engine cannot record a rejection, so it decides
    // nothing and says so.
    let (mut conn, _) = popup_operator::sale::connect(&server.url(), Some(PASSWORD)).await.unwrap();
    let _: () = redis::cmd("SET").arg("queue:rejected").arg("x").query_async(&mut conn).await.unwrap();
    add_bogus_order(&mut conn).await;
    let problem = poll::wait(
        "the engine's failure reported",
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || match g.ensure_scripts(&t, Engine::Triggers, &processing).await {
            Err(p) => Ok(p),
            Ok(m) => Err(format!("still {m:?}")),
        },
    )
    .await;
    assert_eq!(problem.reason, reason::ENGINE_FAILING);
    assert!(problem.message.contains("queue:rejected holds a string, not a stream"), "{}", problem.message);

    // Fixed by the user: the next order brings the waiting one along, and the condition clears once
    // the recorded failure expires (here: removed by hand instead of waiting 5 minutes). Wait for
    // both orders to be decided, the state asserted, not for the first Ok on the way to it.
    let _: () = redis::cmd("DEL").arg("queue:rejected").arg("popup:engine:error").query_async(&mut conn).await.unwrap();
    add_bogus_order(&mut conn).await;
    poll::wait("both orders rejected as invalid", Duration::from_secs(10), Duration::from_millis(50), async || {
        let (sale, _) = g.read_sale(&t).await.unwrap();
        if (sale.rejected, sale.orders_queued) == (2, 0) { Ok(()) } else { Err(format!("{sale:?}")) }
    })
    .await;
    let healthy = g.ensure_scripts(&t, Engine::Triggers, &processing).await;
    assert!(healthy.is_ok(), "{healthy:?}");
}

// ---- ACL users ---------------------------------------------------------------------------------------

use acl_users::Users;
use popup_operator::controller::users;
use popup_operator::render::acl::{self, Credentials, Role};

/// The operator as the reconcile makes it: its own user, the admin password as the way back in.
fn operator_target(server: &RedisServer, users: &Users, creds: &Credentials) -> RedisTarget {
    RedisTarget {
        address: format!("127.0.0.1:{}", server.port),
        username: Some(Role::Operator.user().into()),
        password: creds.password(Role::Operator).into(),
        admin_password: Some(users.password(Role::Admin)),
    }
}

/// Whether `user` can log in with `password` on a new connection.
async fn logs_in(server: &RedisServer, user: &str, password: &str) -> bool {
    popup_operator::sale::connect(&server.url_as(user), Some(password)).await.is_ok()
}

async fn run_id(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap().trim().to_string()
}

/// A rotation as the controller runs it: the new password next to the old one, then the old one gone,
/// with Redis running throughout and the connections made with the old password left alone.
#[tokio::test]
async fn a_password_rotates_live_with_both_valid_during_the_switch() {
    let users = Users::new(Engine::Native);
    let server = users.start_server();
    let g = gateway();
    let t = operator_target(&server, &users, &users.creds);
    let mut admin = users.conn(&server, Role::Operator).await;
    let started_as = run_id(&mut admin).await;

    // The file already made the users: applying the same again changes nothing, also not the selectors.
    let same = acl::users(&users.store, &users.creds);
    assert_eq!(g.ensure_users(&t, &same).await.unwrap(), Vec::<String>::new());
    assert_eq!(g.ensure_users(&t, &same).await.unwrap(), Vec::<String>::new());
    let processor: Value =
        redis::cmd("ACL").arg("GETUSER").arg("popup-processor").query_async(&mut admin).await.unwrap();
    let text = format!("{processor:?}");
    assert_eq!(text.matches("+decr").count(), 1, "one selector each, not one per apply: {text}");

    // The Grafana user's Secret gets a new password: both are accepted.
    let old = users.password(Role::Grafana);
    let mut grafana_old = users.conn(&server, Role::Grafana).await;
    let previous = acl::parse_acl_file(&acl::acl_file(&users.store, &users.creds));
    let mut passwords = users.creds.passwords.clone();
    passwords.insert(Role::Grafana, "the-new-grafana-password".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let rotating =
        users::plan(&users.store, passwords, Some(acl_users::ADMIN_PASSWORD), &previous, &Default::default(), now);
    assert!(rotating.retiring(Role::Grafana));
    let changed = g.ensure_users(&t, &acl::users(&users.store, &rotating)).await.unwrap();
    assert_eq!(changed, ["popup-grafana"]);
    assert!(logs_in(&server, "popup-grafana", "the-new-grafana-password").await);
    assert!(logs_in(&server, "popup-grafana", &old).await, "the old one still works during the switch");

    // The consumers rolled: only the new one.
    let mut done = rotating.clone();
    done.accepted.get_mut(&Role::Grafana).unwrap().truncate(1);
    done.retiring_since.clear();
    assert_eq!(g.ensure_users(&t, &acl::users(&users.store, &done)).await.unwrap(), ["popup-grafana"]);
    assert!(logs_in(&server, "popup-grafana", "the-new-grafana-password").await);
    assert!(!logs_in(&server, "popup-grafana", &old).await, "the old password is refused");
    // A connection made before keeps working (Redis does not drop it), and Redis never restarted.
    let _: Option<String> = redis::cmd("GET").arg("product").query_async(&mut grafana_old).await.unwrap();
    assert_eq!(run_id(&mut admin).await, started_as);
}

/// Redis does not know the operator's user (its ACL Secret was deleted and a new password generated):
/// the admin password gets the operator back in, and its user is set up again.
#[tokio::test]
async fn the_admin_password_lets_the_operator_set_up_its_own_user_again() {
    let users = Users::new(Engine::Triggers);
    let server = users.start_server();
    let g = gateway();
    let mut creds = users.creds.clone();
    creds.passwords.insert(Role::Operator, "a-password-redis-has-never-seen".into());
    creds.accepted.insert(Role::Operator, vec![acl::password_hash("a-password-redis-has-never-seen")]);
    let t = operator_target(&server, &users, &creds);
    assert!(!logs_in(&server, "popup-operator", "a-password-redis-has-never-seen").await);
    assert_eq!(g.ensure_users(&t, &acl::users(&users.store, &creds)).await.unwrap(), ["popup-operator"]);
    assert!(logs_in(&server, "popup-operator", "a-password-redis-has-never-seen").await);
    // From then on the operator is itself again.
    let processing = ProcessingSpec { batch_size: 3, metrics_interval_seconds: 1, replicas: 1 };
    assert_eq!(g.ensure_scripts(&t, Engine::Triggers, &processing).await.unwrap(), "triggers scripts loaded");

    // Without a password Redis takes, the reason says so.
    let lost = RedisTarget { admin_password: Some("not-the-admin-password".into()), password: "nope".into(), ..t };
    let problem = g.ensure_users(&lost, &acl::users(&users.store, &creds)).await.unwrap_err();
    assert_eq!(problem.reason, reason::REDIS_AUTH_FAILED, "{problem:?}");
}
