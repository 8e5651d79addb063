//! Redis ACL users: one per component, each allowed only what it runs, with its own password.
//!
//! | user | who | may |
//! |---|---|---|
//! | `default` | people and tools with the admin password (`<store>-redis` or `spec.redis.passwordSecretRef`) | everything |
//! | `popup-operator` | the operator: users, scripts, the sale in the status | everything |
//! | `popup-grafana` | the dashboard's datasource | `GET`, `XLEN`, `TS.RANGE` on `product`, `queue:*`, `ts:*`; `PING` |
//! | `popup-simulator` | the simulator Job | what `simulate --join-sale` writes and reads: customers and orders, through the operator's script |
//! | `popup-processor` | the native processor | `FCALL` of the operator's functions and what they run, each write on its keys |
//!
//! No user is `nopass`: the kubelet's probes log in as nobody (Redis' `NOAUTH` answer shows it is up,
//! see `render::redis::PROBE_COMMAND`).
//!
//! Redis reads the users at start from an ACL file, rendered here into the Secret `<store>-redis-acl`
//! and mounted into the Redis pod. The file holds SHA-256 hashes of the passwords (Redis' `#<hash>`
//! form), never a password, so nothing secret is on Redis' command line or in its pod's environment.
//! The operator applies the very same rules live with `ACL SETUSER` on every reconcile
//! (`controller::users`): that is how a changed password reaches a running Redis, and how a Redis
//! that restarted before the kubelet refreshed the mounted file gets the current users back.
//!
//! Rules are command lists, not categories: a category grows with every Redis release. Commands run
//! inside a script or function (`EVALSHA`, `FCALL`) are checked against the same lists and key patterns,
//! as if the caller sent them: whatever a script a user may call writes, the user may write directly.
//! Components load no code: the operator loads the scripts they call (`sale::functions`), so no
//! component user has `EVAL`, `SCRIPT` or `FUNCTION`. The users every engine has use only what Redis 6.2
//! (the gears engine's redismod) understands; the processor, which only the native engine (Redis 7 or
//! later) has, uses selectors to tie each write to its keys.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};

use super::component::Component;
pub use super::component::{ROLES, Role};
use super::{PASSWORD_KEY, ValidatedStore, child_meta, sha256_hex};
use crate::crd::Engine;

/// Key of the ACL file in `<store>-redis-acl`, the only key the Redis pod mounts.
pub const ACL_FILE_KEY: &str = "users.acl";
/// Key of the operator's own Redis password in `<store>-redis-acl` (mounted nowhere).
pub const OPERATOR_PASSWORD_KEY: &str = "operator-password";
/// Key of the user name in each component's password Secret.
pub const USERNAME_KEY: &str = "username";
/// Where the Redis pod mounts the ACL file.
pub const ACL_DIR: &str = "/etc/redis/acl";
/// Annotation of `<store>-redis-acl`: since when (RFC 3339) users' previous passwords are on their way
/// out, as JSON `{"popup-processor": "2026-01-01T00:00:00Z"}`.
pub const RETIRING_SINCE_ANNOTATION: &str = "popup.dev/retiring-since";
/// Users of earlier versions that no store has any more: the operator deletes them from a running Redis
/// (`popup-probe` was `nopass`, so anyone could log in as it).
pub const RETIRED_USERS: &[&str] = &["popup-probe"];

/// Everything, on every key and channel: the two admin users.
const EVERYTHING: &[&str] = &["resetkeys", "~*", "resetchannels", "&*", "+@all"];

/// The dashboard's queries as redis-datasource 2.2 sends them (`GET product`, `XLEN queue:*`,
/// `TS.RANGE ts:* from to AGGREGATION agg bucket`, see grafana/popup-store.json) and the plugin's health
/// check (`PING`). Nothing that writes: a Viewer can send any command through the datasource.
const GRAFANA: &[&str] =
    &["resetkeys", "~product", "~queue:*", "~ts:*", "resetchannels", "-@all", "+ping", "+get", "+xlen", "+ts.range"];

/// The simulator's rules: its key patterns, then its commands, the same on every Redis but for how it
/// calls its send-once script (`call`).
macro_rules! simulator_rules {
    ([$($keys:literal),* $(,)?], $call:literal) => {
        &[
            "resetkeys",
            $($keys,)*
            "resetchannels",
            "-@all",
            "+ping",
            "+client|setinfo",
            "+get",
            "+xlen",
            "+exists",
            $call,
            "+xadd",
            "+hget",
            "+hset",
            "+hdel",
        ]
    };
}

/// The simulator Job: `simulate --join-sale` (src/sale/simulator.rs) joins the sale the operator started:
/// it reads the sale's join key (`GET popup:sale:<id>`) and the sale (`GET product`, `XLEN queue:*`),
/// and writes customers and orders through its send-once script, which the operator loaded (`FCALL`;
/// `EVALSHA` on Redis 6.2: it cannot load code of its own). The script checks the join key
/// (`EXISTS`), `XADD`s to the two queues it feeds and keeps a per-run log hash `popup:simulator:<id>`
/// (`HGET`, `HSET`, `HDEL`). The connection library's `CLIENT SETINFO` is allowed so that the ACL log
/// shows real refusals only. It may not set the stock, delete or expire a key, or trim a stream: the
/// operator starts and resets sales.
///
/// Redis 7 and later (triggers, native): read-only key permissions (`%R~`) for what it only reads, so
/// every write is tied to the two queues it feeds and its own log.
const SIMULATOR: &[&str] = simulator_rules!(
    [
        "%R~product",
        "%R~queue:complete",
        "%R~queue:rejected",
        "%R~popup:sale:*",
        "~queue:customers",
        "~queue:orders",
        "~popup:simulator:*",
    ],
    "+fcall"
);

/// The same commands on Redis 6.2 (the gears engine's redismod), which has no read-only key
/// permissions: its key patterns hold for every command it may run (docs/security.md says what that
/// leaves).
const SIMULATOR_REDIS6: &[&str] =
    simulator_rules!(["~product", "~queue:*", "~popup:sale:*", "~popup:simulator:*"], "+evalsha");

/// `process` (src/sale/native.rs): `MODULE LIST` at start, `XREAD BLOCK` on the orders, its heartbeat
/// (`SET … PX`, `DEL` at exit) and recorded failure (`SET popup:engine:error`), and `FCALL` of the two
/// functions the operator loads (`sale::functions`: `popup_decide` = native_apply.lua, `popup_sample` =
/// sample.lua), whose commands are checked against these rules too: `TYPE`, `XRANGE`, `XINFO STREAM`,
/// `GET`, `DECR`, `XADD`, `XDEL` (decide), `TIME`, `GET`/`SET` of its clock, `EXISTS`, `XLEN`,
/// `HGET`/`HSET`, `TS.ADD` (sample).
///
/// The processor only runs on the native engine's Redis (7 or later), so its rules use selectors: each
/// write command only on the keys it writes, and only the writes that cannot undo the sale wholesale:
/// `DECR product` (one unit; not `DECRBY`, which also takes a negative amount, nor `SET`), `XADD` of
/// results, `XDEL` of entries by id from the queues taken from (not `XTRIM`, which empties a queue at
/// once), `TS.ADD ts:*`, `SET`/`DEL`/`HGET`/`HSET` of its own `popup:` keys. The reads and `FCALL`
/// (whose declared keys must all be allowed) are on the root. `clearselectors` first keeps a second
/// `ACL SETUSER` from adding them twice. What it can still do is in docs/security.md.
const PROCESSOR: &[&str] = &[
    "resetkeys",
    "~product",
    "~queue:*",
    "~ts:*",
    "~popup:ts:*",
    "resetchannels",
    "-@all",
    "+ping",
    "+client|setinfo",
    "+module|list",
    "+fcall",
    "+time",
    "+xread",
    "+type",
    "+exists",
    "+get",
    "+xrange",
    "+xinfo|stream",
    "+xlen",
    "clearselectors",
    "(~product +decr)",
    "(~queue:complete ~queue:rejected +xadd)",
    "(~queue:orders ~queue:customers +xdel)",
    "(~ts:* +ts.add)",
    "(~popup:engine:error ~popup:ts:last +set)",
    "(~popup:worker:* +set +del)",
    "(~popup:ts:added +hget +hset)",
];

impl Role {
    /// The Redis user name.
    pub fn user(self) -> &'static str {
        match self {
            Role::Admin => "default",
            Role::Operator => "popup-operator",
            Role::Grafana => "popup-grafana",
            Role::Simulator => "popup-simulator",
            Role::Processor => "popup-processor",
        }
    }

    /// What the user may run, on which keys (the `ACL SETUSER` rules after the password part), on the
    /// Redis of `engine`.
    pub fn rules(self, engine: Engine) -> &'static [&'static str] {
        match self {
            Role::Admin | Role::Operator => EVERYTHING,
            Role::Grafana => GRAFANA,
            Role::Simulator if engine == Engine::Gears => SIMULATOR_REDIS6,
            Role::Simulator => SIMULATOR,
            Role::Processor => PROCESSOR,
        }
    }

    pub fn from_user(user: &str) -> Option<Role> {
        ROLES.into_iter().find(|r| r.user() == user)
    }
}

/// The users a store has: the admin and the operator always; the others with their component.
pub fn roles(store: &ValidatedStore) -> Vec<Role> {
    ROLES.into_iter().filter(|r| r.wanted(store)).collect()
}

/// The passwords of a store's users, as the controller read or generated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The current password of the operator's user and of each component user: what their Secrets hold.
    pub passwords: BTreeMap<Role, String>,
    /// Per user, the SHA-256 hashes Redis accepts: the current password's first, then previous ones on
    /// their way out (the consumers that still use them have not rolled yet). Empty: the user is off
    /// (the admin while the user's password Secret is missing).
    pub accepted: BTreeMap<Role, Vec<String>>,
    /// Since when (RFC 3339) a user's previous passwords are on their way out.
    pub retiring_since: BTreeMap<Role, String>,
}

impl Credentials {
    pub fn password(&self, role: Role) -> &str {
        self.passwords.get(&role).map(String::as_str).unwrap_or_default()
    }

    /// Changes whenever the user's password changes; goes into the checksum of the pods that use it.
    pub fn revision(&self, role: Role) -> String {
        match self.passwords.get(&role) {
            Some(p) => sha256_hex(p.as_bytes())[..16].to_string(),
            None => "none".into(),
        }
    }

    /// True while Redis also accepts older passwords of `role`.
    pub fn retiring(&self, role: Role) -> bool {
        self.accepted.get(&role).is_some_and(|h| h.len() > 1)
    }
}

/// Redis' form of a password: the hex SHA-256 of its bytes.
pub fn password_hash(password: &str) -> String {
    sha256_hex(password.as_bytes())
}

/// One user as `ACL SETUSER <name> <args…>` creates it, and as a line of the ACL file. Idempotent: every
/// part starts with its reset (`resetpass`, `resetkeys`, `resetchannels`, `-@all`), so applying it again
/// changes nothing, and applying it to a user with other rules leaves exactly these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclUser {
    pub name: String,
    pub args: Vec<String>,
    /// The hashes the user accepts (what `ACL GETUSER` lists as passwords).
    pub hashes: Vec<String>,
}

/// The users of `store` with the passwords of `creds`.
pub fn users(store: &ValidatedStore, creds: &Credentials) -> Vec<AclUser> {
    roles(store).into_iter().map(|role| user(role, store.engine(), creds)).collect()
}

fn user(role: Role, engine: Engine, creds: &Credentials) -> AclUser {
    let hashes = creds.accepted.get(&role).cloned().unwrap_or_default();
    let mut args: Vec<String> = Vec::new();
    if hashes.is_empty() {
        // No password known (the admin's Secret is missing): nobody logs in as this user.
        args.extend(["off", "resetpass"].map(String::from));
    } else {
        args.extend(["on", "resetpass"].map(String::from));
        args.extend(hashes.iter().map(|h| format!("#{h}")));
    }
    args.extend(role.rules(engine).iter().map(|r| r.to_string()));
    AclUser { name: role.user().into(), args, hashes }
}

/// The ACL file: one `user <name> <rules>` line per user. Redis splits lines at single spaces and knows
/// no comments or quoting; hashes and rules contain neither.
pub fn acl_file(store: &ValidatedStore, creds: &Credentials) -> String {
    users(store, creds).iter().map(|u| format!("user {} {}\n", u.name, u.args.join(" "))).collect()
}

/// The hashes each user of an ACL file accepts, by user name (how the controller finds out which
/// passwords are on their way out).
pub fn parse_acl_file(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            (words.next() == Some("user")).then_some(())?;
            let name = words.next()?.to_string();
            let hashes = words.filter_map(|w| w.strip_prefix('#')).map(str::to_string).collect();
            Some((name, hashes))
        })
        .collect()
}

/// `<store>-redis-acl`: the ACL file the Redis pod mounts, and the operator's own password.
pub fn acl_secret(store: &ValidatedStore, creds: &Credentials) -> Secret {
    let mut meta = child_meta(store, store.names.redis_acl(), Component::Redis);
    if !creds.retiring_since.is_empty() {
        let since: BTreeMap<&str, &String> = creds.retiring_since.iter().map(|(r, t)| (r.user(), t)).collect();
        let json = serde_json::to_string(&since).expect("a map of strings serializes");
        meta.annotations.get_or_insert_default().insert(RETIRING_SINCE_ANNOTATION.into(), json);
    }
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (ACL_FILE_KEY.to_string(), ByteString(acl_file(store, creds).into_bytes())),
            (OPERATOR_PASSWORD_KEY.to_string(), ByteString(creds.password(Role::Operator).as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// The password Secret of each component user of the store (`<store>-redis-grafana`, …).
pub fn user_secrets(store: &ValidatedStore, creds: &Credentials) -> Vec<Secret> {
    roles(store)
        .into_iter()
        .filter_map(|role| {
            let component = role.component()?;
            Some(Secret {
                metadata: child_meta(store, store.names.redis_user(component), component),
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([
                    (USERNAME_KEY.to_string(), ByteString(role.user().as_bytes().to_vec())),
                    (PASSWORD_KEY.to_string(), ByteString(creds.password(role).as_bytes().to_vec())),
                ])),
                ..Default::default()
            })
        })
        .collect()
}

/// The component user's password as a container env var, from its own Secret: a pod gets its own
/// password and no other.
pub fn password_env(store: &ValidatedStore, role: Role, var: &str) -> EnvVar {
    let component = role.component().expect("only component users have a password Secret");
    EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: store.names.redis_user(component),
                key: PASSWORD_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `redis://<user>@host:port`: the user name travels in the URL, the password in `REDIS_PASSWORD`.
pub fn url(store: &ValidatedStore, role: Role) -> String {
    format!("redis://{}@{}", role.user(), store.names.redis_address(&store.namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{build, inputs, store_with};
    use crate::render::validate;

    #[test]
    fn each_component_gets_its_user_only_when_it_exists() {
        let users = |engine, edit: fn(&mut crate::crd::PopUpStoreSpec)| {
            let v = validate(&store_with(engine, edit)).unwrap();
            roles(&v).into_iter().map(Role::user).collect::<Vec<_>>()
        };
        assert_eq!(
            users(Engine::Native, |_| {}),
            ["default", "popup-operator", "popup-grafana", "popup-simulator", "popup-processor"]
        );
        assert_eq!(users(Engine::Gears, |_| {}), ["default", "popup-operator", "popup-grafana", "popup-simulator"]);
        assert_eq!(
            users(Engine::Triggers, |s| {
                s.grafana.enabled = false;
                s.simulator.enabled = false;
            }),
            ["default", "popup-operator"]
        );
    }

    #[test]
    fn the_acl_file_holds_hashes_and_rules_never_a_password() {
        let (v, c) = build(Engine::Native, |_| {});
        let creds = &inputs().credentials;
        let file = acl_file(&v, creds);
        for (role, password) in &creds.passwords {
            assert!(!file.contains(password.as_str()), "{role:?}'s password is in the file");
            assert!(file.contains(&format!("#{}", password_hash(password))), "{role:?}'s hash is missing");
        }
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("user default on resetpass #"), "{}", lines[0]);
        assert!(lines[0].ends_with(" ~* resetchannels &* +@all"), "{}", lines[0]);
        assert!(lines[2].starts_with("user popup-grafana on resetpass #"), "{}", lines[2]);
        assert!(
            lines[2].ends_with(" resetkeys ~product ~queue:* ~ts:* resetchannels -@all +ping +get +xlen +ts.range"),
            "{}",
            lines[2]
        );
        assert!(!file.contains("nopass"), "every user needs its password:\n{file}");
        for line in &lines {
            assert!(!line.contains("  ") && !line.contains('"') && !line.contains('\''), "{line}");
        }
        assert!(lines[4].contains(" +fcall "), "{}", lines[4]);
        assert!(lines[4].contains(" clearselectors (~product +decr) "), "{}", lines[4]);
        // The Secret carries it; the parser reads the hashes back.
        let secret = c.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-redis-acl")).unwrap();
        let data = secret.data.as_ref().unwrap();
        let parsed = parse_acl_file(std::str::from_utf8(&data[ACL_FILE_KEY].0).unwrap());
        assert_eq!(parsed["popup-processor"], creds.accepted[&Role::Processor]);
        assert_eq!(data[OPERATOR_PASSWORD_KEY].0, creds.password(Role::Operator).as_bytes());
    }

    #[test]
    fn an_unknown_admin_password_turns_the_default_user_off_and_old_passwords_stay_listed() {
        let v = validate(&store_with(Engine::Triggers, |_| {})).unwrap();
        let mut creds = inputs().credentials;
        creds.accepted.remove(&Role::Admin);
        creds.accepted.insert(Role::Grafana, vec!["new".into(), "old".into()]);
        creds.retiring_since.insert(Role::Grafana, "2026-01-01T00:00:00Z".into());
        let file = acl_file(&v, &creds);
        assert!(file.starts_with("user default off resetpass resetkeys ~* "), "{file}");
        assert!(file.contains("user popup-grafana on resetpass #new #old resetkeys"), "{file}");
        let secret = acl_secret(&v, &creds);
        assert_eq!(
            secret.metadata.annotations.unwrap()[RETIRING_SINCE_ANNOTATION],
            r#"{"popup-grafana":"2026-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn component_secrets_carry_their_user_and_password_only() {
        let (_, c) = build(Engine::Native, |_| {});
        let creds = inputs().credentials;
        for (name, role) in [
            ("shop-redis-grafana", Role::Grafana),
            ("shop-redis-simulator", Role::Simulator),
            ("shop-redis-processor", Role::Processor),
        ] {
            let s = c.secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap();
            let data = s.data.as_ref().unwrap();
            assert_eq!(data.len(), 2, "{name}");
            assert_eq!(data[USERNAME_KEY].0, role.user().as_bytes(), "{name}");
            assert_eq!(data[PASSWORD_KEY].0, creds.password(role).as_bytes(), "{name}");
        }
    }

    #[test]
    fn only_admin_users_may_run_admin_commands() {
        let roles = [Role::Grafana, Role::Simulator, Role::Processor];
        for (role, engine) in roles.into_iter().flat_map(|r| [Engine::Gears, Engine::Native].map(|e| (r, e))) {
            let rules = role.rules(engine);
            assert!(rules.contains(&"-@all"), "{role:?} starts from nothing");
            for forbidden in [
                "+@all",
                "~*",
                "&*",
                "+flushall",
                "+flushdb",
                "+config",
                "+eval",
                "+script",
                "+function",
                "+acl",
                "+module",
                "+debug",
                "+shutdown",
            ] {
                assert!(!rules.contains(&forbidden), "{role:?} on {engine:?} has {forbidden}");
            }
            assert!(rules.iter().all(|r| !r.starts_with("+@")), "{role:?}: commands, not categories");
        }
        let processor = Role::Processor.rules(Engine::Native);
        for code in ["+evalsha", "+script|load", "+function|load", "+script|kill"] {
            assert!(!processor.contains(&code), "the processor has {code}: it could run code of its own");
        }
        for widening in ["+decrby", "+incrby", "+incr", "+set", "+xtrim", "+del"] {
            assert!(
                !processor.iter().any(|r| r.starts_with("(~product") && r.contains(widening)),
                "the processor may raise or set the stock: {widening}"
            );
        }
        assert!(!processor.iter().any(|r| r.contains("+xtrim")), "the processor may empty a queue");
        let grafana = Role::Grafana.rules(Engine::Native);
        for write in ["+set", "+del", "+xadd", "+evalsha", "+script|load"] {
            assert!(!grafana.contains(&write), "grafana has {write}");
        }
    }
}
