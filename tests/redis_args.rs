//! The triggers engine's Redis container, as rendered, run by the real redis-stack-server 7.4 (the PyPI
//! wheel): the StatefulSet's `command` and `args`, expanded the way the kubelet expands them (no shell),
//! with the image's paths (`/opt/redis-stack/…`) mapped to the wheel's, and `/data`, the mounted ACL file
//! and the port mapped to the test's. No password is on the command line any more: the users come from
//! the rendered ACL file (hashes), so a password full of shell characters, or starting with `--`, is
//! taken byte for byte; the engine's modules load; the probes' `redis-cli` logs in as the probe user.

pub mod support;
use support::temp_dir::TempDir;
use support::{poll, redis_server};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use popup_operator::controller::users;
use popup_operator::crd::{PopUpStore, PopUpStoreSpec};
use popup_operator::render::acl::{self, Credentials, Role};
use popup_operator::render::{self, BuildInputs, REDIS_PORT};
use redis_server::{ChildGuard, find_server, free_port};

/// Passwords a shell would split, glob, expand or unquote; one starting with `--`; one with the
/// newline `echo` leaves in a Secret.
const NASTY: &[&str] =
    &[r#"a b  *?[x] "dq" 'sq' $(HOME) $$ ${X} `id` ; \ end"#, "--looks-like-an-option --port 1", "trailing newline\n"];

/// The image's install root, as in redis/redis-stack-server's entrypoint.sh.
const IMAGE_ROOT: &str = "/opt/redis-stack/";

/// The rendered Redis container of a triggers store whose admin password is `password`, the ACL file of
/// its Secret `<store>-redis-acl`, and the users' passwords.
fn triggers_container(password: &str) -> (Container, String, Credentials) {
    let spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({"engine": "triggers"})).unwrap();
    let mut store = PopUpStore::new("shop", spec);
    store.metadata.namespace = Some("sales".into());
    let validated = render::validate(&store).unwrap();
    let credentials = users::generated(&validated, Some(password));
    let inputs = BuildInputs {
        redis_password: Some(password.into()),
        grafana_admin_password: "g".into(),
        credentials: credentials.clone(),
        operator_image: "example/popup-operator:test".into(),
        operator_pods: None,
        scripts: popup_operator::controller::sale_bridge::script_files(&validated),
    };
    let children = render::build_children(&validated, &inputs);
    let acl_secret = children.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-redis-acl")).unwrap();
    let file = String::from_utf8(acl_secret.data.as_ref().unwrap()[acl::ACL_FILE_KEY].0.clone()).unwrap();
    let sts = children.redis;
    (sts.spec.unwrap().template.spec.unwrap().containers.remove(0), file, credentials)
}

/// The kubelet's expansion of `command`/`args`: `$(VAR)` becomes VAR's value (not scanned again), `$$`
/// becomes `$`, anything else stays.
fn expand_like_kubelet(arg: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')'))
            && let Some(value) = vars.get(name)
        {
            out.push_str(value);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out + rest
}

/// The wheel's root (holding `bin/redis-server` and `lib/*.so`), standing in for `/opt/redis-stack`.
fn wheel_root() -> PathBuf {
    let root = find_server().parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        root.join("bin/redis-server").exists() && root.join("lib/redisgears.so").exists(),
        "{} is not a redis-stack layout (bin/redis-server, lib/*.so); run `bash hack/install-redis-stack.sh`",
        root.display()
    );
    root
}

/// One rendered argument on this machine: image paths → the wheel's, `/data` → `dir`, the mounted ACL
/// file → `dir/users.acl`, our port → `port`.
fn map_arg(arg: &str, previous: Option<&str>, root: &Path, dir: &Path, port: u16) -> String {
    if let Some(rest) = arg.strip_prefix(IMAGE_ROOT) {
        return root.join(rest).display().to_string();
    }
    match (previous, arg) {
        (Some("--dir"), "/data") => dir.display().to_string(),
        (Some("--aclfile"), "/etc/redis/acl/users.acl") => dir.join("users.acl").display().to_string(),
        (Some("--port"), p) if p == REDIS_PORT.to_string() => port.to_string(),
        _ => arg.to_string(),
    }
}

struct Started {
    _process: ChildGuard,
    port: u16,
    _dir: TempDir,
}

/// Starts the rendered container's command line for `password`, mapped to this machine, plus a loopback
/// bind and a log file (to know when it is ready), with the rendered ACL file where the pod mounts it.
/// `Err` holds the log when Redis refuses to start.
async fn start_rendered(password: &str) -> Result<(Started, Credentials), String> {
    let (container, acl_file, credentials) = triggers_container(password);
    assert!(container.env.is_none(), "no password in the environment: {:?}", container.env);
    let command = container.command.clone().expect("triggers sets the command: no entrypoint script");
    let args = container.args.clone().expect("triggers passes args");
    // Nothing for the kubelet to expand any more; the expansion stays to prove it.
    let vars = BTreeMap::new();
    let (root, port) = (wheel_root(), free_port());
    let dir = TempDir::new("popup-redis-args");
    dir.write("users.acl", &acl_file);
    let mut argv = Vec::new();
    for (i, arg) in command.iter().chain(&args).enumerate() {
        let previous = i.checked_sub(1).map(|p| command.iter().chain(&args).nth(p).unwrap().as_str());
        argv.push(map_arg(&expand_like_kubelet(arg, &vars), previous, &root, &dir, port));
    }
    assert!(argv[0].ends_with("bin/redis-server") && Path::new(&argv[0]).exists(), "{argv:?}");
    let log = dir.join("redis.log");
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--bind", "127.0.0.1", "--logfile"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut process = ChildGuard(Some(child));
    // None once it is ready, its exit status and log once it exited.
    let exited = poll::until(Duration::from_secs(20), Duration::from_millis(20), async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Ready to accept connections") {
            return Ok(None);
        }
        match process.0.as_mut().unwrap().try_wait() {
            Ok(Some(status)) => Ok(Some((status, text))),
            _ => Err(text),
        }
    })
    .await
    .unwrap_or_else(|text| panic!("redis-server not ready within 20 s:\n{text}"));
    match exited {
        None => Ok((Started { _process: process, port, _dir: dir }, credentials)),
        Some((status, text)) => {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = process.0.as_mut().unwrap().stderr.take().unwrap().read_to_string(&mut stderr);
            Err(format!("redis-server exited ({status}):\n{stderr}{text}"))
        }
    }
}

async fn unauthenticated(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Runs a rendered exec probe, mapped to the test's port, with the pod's environment (none of ours).
fn run_probe(probe: &[String], port: u16) -> bool {
    let mapped: Vec<String> =
        probe.iter().map(|a| a.replace(&format!("-p {REDIS_PORT}"), &format!("-p {port}"))).collect();
    assert_ne!(mapped, probe, "the probe names the port: {probe:?}");
    let path = format!("{}:{}", wheel_root().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    Command::new(&mapped[0])
        .args(&mapped[1..])
        .env("PATH", path)
        .env_remove("REDISCLI_AUTH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn the_rendered_triggers_command_line_keeps_any_password_and_loads_the_modules() {
    for &password in NASTY {
        let (redis, credentials) = start_rendered(password).await.unwrap_or_else(|log| panic!("{password:?}: {log}"));
        let mut conn = unauthenticated(redis.port).await;
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        assert!(ping.unwrap_err().to_string().contains("NOAUTH"), "{password:?}: a password is required");
        // Pieces a shell would have made of it are not the password.
        let first_word = password.split_whitespace().next().unwrap();
        let wrong: redis::RedisResult<String> = redis::cmd("AUTH").arg(first_word).query_async(&mut conn).await;
        assert!(wrong.is_err(), "{password:?}: {first_word:?} must not be accepted");
        let ok: String = redis::cmd("AUTH").arg(password).query_async(&mut conn).await.unwrap();
        assert_eq!(ok, "OK", "{password:?}: the default user takes the admin password byte for byte");
        let modules = popup_operator::sale::module_list(&mut conn).await.unwrap();
        let mut names: Vec<String> = modules.into_iter().map(|m| m.name).collect();
        names.sort();
        assert_eq!(names, ["redisgears_2", "timeseries"], "{password:?}: the engine's modules, loaded");
        let aof: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut conn).await.unwrap();
        assert_eq!(aof, ["appendonly", "yes"], "the rendered persistence setting arrived too");
        // And the memory settings derived from the container's limit (512Mi by default).
        for (name, value) in [
            ("maxmemory", "375809638"),
            ("maxmemory-policy", "noeviction"),
            ("proto-max-bulk-len", "8388608"),
            ("maxmemory-clients", "67108864"),
        ] {
            let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await.unwrap();
            assert_eq!(got, [name, value], "{password:?}");
        }
        let limits: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("client-output-buffer-limit").query_async(&mut conn).await.unwrap();
        assert!(limits[1].starts_with("normal 33554432 16777216 10 "), "{limits:?}");
        // Every user of the file logs in with its own password.
        for role in [Role::Operator, Role::Grafana, Role::Simulator] {
            let auth: String = redis::cmd("AUTH")
                .arg(role.user())
                .arg(credentials.password(role))
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{password:?}: {} cannot log in: {e}", role.user()));
            assert_eq!(auth, "OK");
        }

        let (container, _, _) = triggers_container(password);
        for (kind, probe) in [("readiness", &container.readiness_probe), ("liveness", &container.liveness_probe)] {
            let command = probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).unwrap();
            assert!(run_probe(&command, redis.port), "{password:?}: the {kind} probe logs in and gets PONG");
        }
    }
}

/// The probes ask for PONG: a stopped server fails them.
#[tokio::test]
async fn the_probes_fail_when_redis_does_not_answer() {
    let (container, _, _) = triggers_container("x");
    let command = container.readiness_probe.unwrap().exec.unwrap().command.unwrap();
    assert!(!run_probe(&command, free_port()));
}

/// What the fix avoids: the image's entrypoint passes `${REDIS_ARGS}` unquoted to the shell, which splits
/// (and globs) the expanded password, so Redis refuses its arguments or gets another password.
#[tokio::test]
async fn through_the_entrypoints_unquoted_redis_args_the_same_password_breaks() {
    let (root, port) = (wheel_root(), free_port());
    let dir = TempDir::new("popup-redis-args-old");
    let redis_args = format!("--port {port} --bind 127.0.0.1 --dir {} --requirepass {}", dir.display(), NASTY[0]);
    let child = Command::new("sh")
        .args(["-c", r#"exec "$0" --loadmodule "$1" ${REDIS_ARGS}"#])
        .arg(root.join("bin/redis-server"))
        .arg(root.join("lib/redistimeseries.so"))
        .env("REDIS_ARGS", &redis_args)
        .current_dir(&*dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut process = ChildGuard(Some(child));
    let status = poll::wait(
        "Redis to refuse the split arguments",
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || process.0.as_mut().unwrap().try_wait().unwrap().ok_or_else(|| "it started with them".to_string()),
    )
    .await;
    let out = process.0.take().unwrap().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "Redis must refuse the split arguments:\n{text}");
    assert!(text.contains("requirepass") && text.contains("wrong number of arguments"), "{text}");
}
