//! The dashboard on a real Grafana: Grafana 8.3 with the real redis-datasource 2.2.0 plugin (the runtime in
//! `../shared/grafana8`, or where `POPUP_GRAFANA8` points: its folder or its `grafana8.tar.xz`), started
//! with the provisioning the operator renders for a store (datasource, dashboard provider, dashboard; only
//! the Redis address and the dashboards folder changed to local ones, the passwords fed through the same
//! environment variables the Grafana pod gets from its Secrets), next to a real redis-stack-server that
//! loads the store's rendered ACL file and has just run a sale.
//!
//! Checked through Grafana's HTTP API: the plugin is loaded, the datasource is healthy, the dashboard is
//! found, every panel's queries come back from `POST /api/ds/query` with data and without an error, and
//! every line is named as the dashboard means it (never "Value"); the operator's own GrafanaReady client
//! (`controller::grafana::LiveGrafana`) says Available, and names each failure on Grafanas made to fail.
//! Then headless Chromium (Debian's `chromium`) renders the dashboard: the page must show every panel,
//! every legend and no panel error, and the screenshot is kept in the target's tmp directory.
//!
//! Without the runtime the tests print "SKIPPED: no real Grafana" and pass; without Chromium only the
//! browser part is skipped (it says so). `POPUP_GRAFANA8` set to a path that does not exist fails.
//!
//! `cargo test --test grafana_real -- --ignored readme_screenshot` runs a longer sale and writes the
//! README's picture, docs/images/dashboard.png, while it runs.

pub mod support;
use support::{acl_users, dashboard_page, poll, redis_server};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acl_users::Users;
use dashboard_page::{chromium, chromium_run, every_meant_name, meant_names, read_page, render_dashboard};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use popup_operator::controller::grafana::LiveGrafana;
use popup_operator::controller::{GrafanaGateway, GrafanaTarget};
use popup_operator::crd::Engine;
use popup_operator::render::acl::{self, Role};
use popup_operator::render::{self, BuildInputs, Children, ValidatedStore};
use popup_operator::sale::{self, EngineKind, ProcessingSettings};
use popup_operator::status::grafana::{self as grafana_status, Round};
use popup_operator::status::reason;
use redis_server::{ChildGuard, RedisServer, free_port};
use serde_json::{Value as Json, json};
use support::temp_dir::TempDir;

// ---- the runtime -------------------------------------------------------------------------------

/// `grafana8.tar.xz` of the real-Grafana runtime, or `None` (the caller says it skipped).
fn runtime_tarball() -> Option<PathBuf> {
    let (path, explicit) = match std::env::var_os("POPUP_GRAFANA8") {
        // Set but empty: no runtime, even where ../shared has one (as for POPUP_REDISGEARS1).
        Some(p) if p.is_empty() => return None,
        Some(p) => (PathBuf::from(p), true),
        None => (Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/grafana8"), false),
    };
    let tarball = if path.is_dir() { path.join("grafana8.tar.xz") } else { path.clone() };
    if tarball.is_file() {
        return Some(tarball);
    }
    assert!(!explicit, "POPUP_GRAFANA8={} names no grafana8.tar.xz (nor a folder with one)", path.display());
    None
}

fn skipped(test: &str) {
    eprintln!(
        "SKIPPED: no real Grafana for {test}: set POPUP_GRAFANA8 to the grafana8 runtime (folder or grafana8.tar.xz) or put it at ../shared/grafana8"
    );
}

/// The unpacked runtime (`bin/grafana-server`, `conf/`, `public/`, `plugins/redis-datasource`), unpacked
/// once per tarball into the cache; an unpacking is renamed into place only when complete.
fn grafana_home(tarball: &Path) -> PathBuf {
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = UNPACKING.lock().unwrap_or_else(|p| p.into_inner());
    let meta = std::fs::metadata(tarball).unwrap();
    let stamp = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let cache = std::env::var("POPUP_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/popup-operator")
    });
    let dir = cache.join("grafana8").join(format!("{}-{stamp}", meta.len()));
    let home = dir.join("grafana8");
    if home.join("bin/grafana-server").is_file() {
        return home;
    }
    let partial = cache.join("grafana8").join(format!("unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    let status = Command::new("tar").arg("-xJf").arg(tarball).arg("-C").arg(&partial).status().unwrap();
    assert!(status.success(), "unpacking {} failed", tarball.display());
    if std::fs::rename(&partial, &dir).is_err() {
        // Another process was quicker; its copy is as good.
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(home.join("bin/grafana-server").is_file(), "{} has no bin/grafana-server", home.display());
    home
}

// ---- HTTP ----------------------------------------------------------------------------------------

/// One request; `(status, body)`.
async fn http(method: &str, url: &str, auth: Option<(&str, &str)>, body: Option<&Json>) -> (u16, String) {
    use base64::Engine as _;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder().method(method).uri(url).header("accept", "application/json");
    if let Some((user, password)) = auth {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("authorization", format!("Basic {basic}"));
    }
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(Bytes::from(bytes))).unwrap();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => (0, e),
        Err(_) => (0, format!("{method} {url}: no answer in 30 s")),
    }
}

fn parse(what: &str, (status, body): (u16, String)) -> Json {
    assert_eq!(status, 200, "{what}: HTTP {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

// ---- a store, rendered ---------------------------------------------------------------------------

/// A store's children as the operator renders them, with the users' passwords of `users`.
/// The store with `spec.grafana.anonymousViewers: true`: the browser opens the dashboard without logging
/// in (the API calls log in as the admin either way).
fn render_store(users: &Users) -> Children {
    let mut store = users.store.clone();
    store.spec.grafana.anonymous_viewers = true;
    let inputs = BuildInputs {
        redis_password: Some(acl_users::ADMIN_PASSWORD.into()),
        grafana_admin_password: "grafana-admin-password-for-tests".into(),
        credentials: users.creds.clone(),
        operator_image: "example.invalid/popup-operator:test".into(),
        operator_pods: None,
        scripts: BTreeMap::new(),
    };
    render::build_children(&store, &inputs)
}

fn config_map_data(children: &Children, name: &str) -> BTreeMap<String, String> {
    let cm = children.config_maps.iter().find(|c| c.metadata.name.as_deref() == Some(name));
    cm.unwrap_or_else(|| panic!("no ConfigMap {name}")).data.clone().unwrap()
}

fn secret_value(children: &Children, name: &str, key: &str) -> String {
    let secret = children.secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name));
    let data = secret.unwrap_or_else(|| panic!("no Secret {name}")).data.clone().unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// The rendered Redis: redis-stack-server loading the store's ACL file from its Secret.
fn start_redis(children: &Children, store: &ValidatedStore, dir: &Path) -> RedisServer {
    let file = dir.join("users.acl");
    std::fs::write(&file, secret_value(children, &store.names.redis_acl(), acl::ACL_FILE_KEY)).unwrap();
    RedisServer::start_with(&["--aclfile", file.to_str().unwrap()])
}

/// What every test starts from: the runtime unpacked, a triggers store's users and rendered children, and
/// its Redis in a folder of the test's.
struct Rig {
    home: PathBuf,
    users: Users,
    store: ValidatedStore,
    children: Children,
    redis: RedisServer,
    dir: TempDir,
}

impl Rig {
    /// `None`, said as `test` skipped, without the runtime.
    fn new(test: &str) -> Option<Rig> {
        let Some(tarball) = runtime_tarball() else {
            skipped(test);
            return None;
        };
        let home = grafana_home(&tarball);
        let users = Users::new(Engine::Triggers);
        let store = users.store.clone();
        let children = render_store(&users);
        let dir = TempDir::new(&format!("popup-grafana-{test}"));
        let redis = start_redis(&children, &store, &dir);
        Some(Rig { home, users, store, children, redis, dir })
    }

    /// The rendered Grafana of the store, made to fail by `fault`.
    fn grafana(&self, fault: Fault) -> Grafana {
        Grafana::start(&self.home, &self.children, &self.store, &self.redis, fault)
    }
}

/// What to change in the rendered Grafana to make it fail.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// The plugins folder is empty.
    NoPlugin,
    /// The datasource gets another password than its Redis user's.
    WrongRedisPassword,
}

/// A Grafana server, stopped (TERM, then KILL) and its folder removed on drop.
struct Grafana {
    process: ChildGuard,
    port: u16,
    dir: Arc<TempDir>,
    admin_password: String,
}

impl Grafana {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The rendered managed Grafana of `children` in a folder of its own: the provisioning ConfigMap's two
    /// files where the Deployment mounts them (`datasources/popup.yaml`, `dashboards/popup.yaml`), the
    /// dashboards ConfigMap's file, and the container's environment with every Secret reference resolved
    /// from the rendered Secrets. Local changes: the Redis URL, the dashboards folder, Grafana's paths and
    /// port, and the unsigned-plugin allowance this plugin build needs.
    fn start(home: &Path, children: &Children, store: &ValidatedStore, redis: &RedisServer, fault: Fault) -> Grafana {
        let dir = Arc::new(TempDir::new("popup-grafana"));
        for sub in ["provisioning/datasources", "provisioning/dashboards", "dashboards", "data", "logs", "no-plugins"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let rendered_redis = format!("redis://{}", store.names.redis_address(&store.namespace));
        let provisioning = config_map_data(children, &store.names.grafana_provisioning());
        let datasource =
            provisioning["datasource.yaml"].replace(&rendered_redis, &format!("redis://127.0.0.1:{}", redis.port));
        assert_ne!(datasource, provisioning["datasource.yaml"], "the rendered datasource names {rendered_redis}");
        std::fs::write(dir.join("provisioning/datasources/popup.yaml"), datasource).unwrap();
        let deployment = children
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(store.names.grafana().as_str()))
            .expect("a managed Grafana Deployment");
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let dashboards_mount = container.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "dashboards");
        let dashboards_mount = dashboards_mount.unwrap().mount_path.clone();
        let dashboards_dir = dir.join("dashboards");
        let provider = provisioning["dashboards.yaml"].replace(&dashboards_mount, dashboards_dir.to_str().unwrap());
        assert_ne!(provider, provisioning["dashboards.yaml"], "the provider reads {dashboards_mount}");
        std::fs::write(dir.join("provisioning/dashboards/popup.yaml"), provider).unwrap();
        for (file, text) in config_map_data(children, &store.names.grafana_dashboards()) {
            std::fs::write(dashboards_dir.join(file), text).unwrap();
        }

        let mut env: Vec<(String, String)> = Vec::new();
        for e in container.env.as_ref().unwrap() {
            let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())) {
                (Some(v), _) => v.replace(&dashboards_mount, dashboards_dir.to_str().unwrap()),
                (None, Some(r)) => secret_value(children, &r.name, &r.key),
                _ => panic!("env {} is neither a value nor a Secret", e.name),
            };
            env.push((e.name.clone(), value));
        }
        let admin_password = env.iter().find(|(n, _)| n == "GF_SECURITY_ADMIN_PASSWORD").unwrap().1.clone();
        if fault == Fault::WrongRedisPassword {
            for (name, value) in env.iter_mut() {
                if name == "REDIS_PASSWORD" {
                    *value = "not-the-password-of-popup-grafana".into();
                }
            }
        }
        assert!(env.iter().any(|(n, _)| n == "REDIS_PASSWORD"), "the datasource's password variable");
        let plugins = if fault == Fault::NoPlugin { dir.join("no-plugins") } else { home.join("plugins") };

        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.join("server.log")).unwrap();
            let child = Command::new(home.join("bin/grafana-server"))
                // Its own process group, with the plugin's process it starts: stopped together.
                .process_group(0)
                .arg("--homepath")
                .arg(home)
                .current_dir(home)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &**dir)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("GF_SERVER_HTTP_ADDR", "127.0.0.1")
                .env("GF_SERVER_HTTP_PORT", port.to_string())
                .env("GF_PATHS_DATA", dir.join("data"))
                .env("GF_PATHS_LOGS", dir.join("logs"))
                .env("GF_PATHS_PLUGINS", &plugins)
                .env("GF_PATHS_PROVISIONING", dir.join("provisioning"))
                // The runtime's plugin build is unsigned; grafana.com's download is signed.
                .env("GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS", grafana_status::PLUGIN_ID)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", home.join("bin/grafana-server").display()));
            let mut grafana = Grafana {
                process: ChildGuard(Some(child)),
                port,
                dir: dir.clone(),
                admin_password: admin_password.clone(),
            };
            match grafana.wait_healthy() {
                Ok(()) => return grafana,
                Err(log) if log.contains("address already in use") => {
                    grafana.stop();
                    continue;
                }
                Err(log) => panic!("Grafana did not start:\n{log}"),
            }
        }
        panic!("no free port for Grafana after 5 attempts");
    }

    /// Polls `/api/health` until Grafana answers; `Err(log)` when it exits or takes over 60 s.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(s, "GET /api/health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(_))) = self.process.0.as_mut().map(|c| c.try_wait()) {
                return Err(self.log());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on /api/health in 60 s\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// TERM first, so that Grafana stops its plugin's process; after it exited (or 10 s), KILL to its
    /// process group, which takes the plugin's process too if Grafana left it behind.
    fn stop(&mut self) {
        if let Some(mut child) = self.process.0.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: plain syscalls on a process (group) this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn admin(&self) -> Option<(&str, &str)> {
        Some((render::grafana::ADMIN_USER, self.admin_password.as_str()))
    }

    /// `GET path` as the admin.
    async fn get(&self, path: &str) -> (u16, String) {
        http("GET", &format!("{}{path}", self.url()), self.admin(), None).await
    }

    /// `GET path` as the admin, answered 200 with JSON (`what` names it in a failure).
    async fn get_json(&self, what: &str, path: &str) -> Json {
        parse(what, self.get(path).await)
    }

    /// The dashboard `uid`'s JSON model.
    async fn dashboard(&self, uid: &str) -> Json {
        self.get_json("dashboard", &grafana_status::dashboard_path(uid)).await["dashboard"].clone()
    }

    /// The operator's GrafanaReady target for this Grafana.
    fn target(&self, store: &ValidatedStore) -> GrafanaTarget {
        GrafanaTarget {
            url: self.url(),
            user: render::grafana::ADMIN_USER.into(),
            password: self.admin_password.clone(),
            datasource_uid: render::grafana::datasource_uid(store),
            dashboard_uid: render::grafana::dashboard_uid(store),
        }
    }
}

impl Drop for Grafana {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("Grafana's log ({}):\n{}", self.dir.display(), self.log());
        }
    }
}

// ---- a sale ----------------------------------------------------------------------------------------

const STOCK: u64 = 50;
const CUSTOMERS: u64 = 60;

/// A sale on the triggers engine, every part logged in as its own user: shorter than a minute, so the
/// minute-bucket panel has one point.
async fn run_sale(users: &Users, server: &RedisServer, stock: u64, customers: u64, rate: f64) {
    let mut conn = users.conn(server, Role::Operator).await;
    let settings = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(1) };
    sale::load_scripts(&mut conn, EngineKind::Triggers, &settings).await.unwrap();
    // The operator starts the sale, the simulator joins it.
    sale::marker::start(&mut conn, "grafana", stock as i64).await.unwrap();
    users.join_sale(server, "grafana", customers, rate, Duration::from_secs(60)).await;
    // The last lengths are sampled on the next interval (the triggers engine samples on stream activity).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sale::sample_if_due(&mut conn, &settings).await.unwrap();
    let s = sale::read_sale(&mut conn).await.unwrap();
    assert_eq!((s.completed, s.rejected, s.product), (stock, customers - stock, Some(0)));
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

// ---- what Grafana shows ------------------------------------------------------------------------------

/// A panel's targets as the dashboard page sends them to `/api/ds/query`.
fn panel_queries(panel: &Json, datasource_uid: &str) -> Vec<Json> {
    panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut q = t.clone();
            if q["datasource"]["uid"] == "${datasource}" {
                q["datasource"]["uid"] = json!(datasource_uid);
            }
            q["intervalMs"] = json!(5000);
            q["maxDataPoints"] = json!(1000);
            q
        })
        .collect()
}

/// The name Grafana's time series panel gives each value field of `frames` (all frames of one panel),
/// following Grafana's own rule: a `displayName` (from the panel's overrides by query, or the field's
/// config), else the frame's name when the panel's frames have different names, then the field's name
/// unless it is "Value"; nothing at all is "Value".
fn display_names(panel: &Json, frames: &[Json]) -> Vec<String> {
    let frame_names: Vec<&str> = frames.iter().map(|f| f["schema"]["name"].as_str().unwrap_or("")).collect();
    let names_differ = frame_names.windows(2).any(|w| w[0] != w[1]);
    let mut out = Vec::new();
    for frame in frames {
        let ref_id = frame["schema"]["refId"].as_str().unwrap_or("");
        let frame_name = frame["schema"]["name"].as_str().unwrap_or("");
        let overridden = panel["fieldConfig"]["overrides"].as_array().into_iter().flatten().find_map(|o| {
            (o["matcher"]["id"] == "byFrameRefID" && o["matcher"]["options"] == ref_id).then(|| {
                o["properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["id"] == "displayName")
                    .map(|p| p["value"].clone())
            })?
        });
        for field in frame["schema"]["fields"].as_array().unwrap().iter().filter(|f| f["type"] != "time") {
            let field_name = field["name"].as_str().unwrap_or("");
            if let Some(name) = overridden.as_ref().and_then(|v| v.as_str()).or(field["config"]["displayName"].as_str())
            {
                out.push(name.to_string());
                continue;
            }
            let mut parts = Vec::new();
            if names_differ && !frame_name.is_empty() {
                parts.push(frame_name);
            }
            if !field_name.is_empty() && field_name != "Value" {
                parts.push(field_name);
            }
            if parts.is_empty() && field_name == "Value" && !frame_name.is_empty() {
                parts.push(frame_name);
            }
            out.push(if !parts.is_empty() {
                parts.join(" ")
            } else if !field_name.is_empty() {
                field_name.to_string()
            } else {
                "Value".to_string()
            });
        }
    }
    out
}

/// The last value of the first field of a panel's first frame that is not time: what a stat panel shows
/// (the plugin answers GET with a string, which the panel reads as a number).
fn last_number(frames: &[Json]) -> f64 {
    let frame = &frames[0];
    let fields = frame["schema"]["fields"].as_array().unwrap();
    let i = fields.iter().position(|f| f["type"] != "time").unwrap_or_else(|| panic!("no value in {frame}"));
    let last = frame["data"]["values"][i].as_array().unwrap().last().cloned().unwrap_or_default();
    last.as_f64()
        .or_else(|| last.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {frame}"))
}

/// Every panel's queries through `/api/ds/query`, checked; the stat panels' numbers by title.
async fn check_every_panel(grafana: &Grafana, dashboard: &Json, datasource_uid: &str) -> BTreeMap<String, f64> {
    let mut stats = BTreeMap::new();
    let (from, to) = (now_ms() - 15 * 60 * 1000, now_ms());
    let panels: Vec<&Json> = dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect();
    assert_eq!(panels.len(), 13);
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let body =
            json!({"from": from.to_string(), "to": to.to_string(), "queries": panel_queries(panel, datasource_uid)});
        let reply =
            parse(title, http("POST", &format!("{}/api/ds/query", grafana.url()), grafana.admin(), Some(&body)).await);
        let results = reply["results"].as_object().unwrap_or_else(|| panic!("{title}: {reply}"));
        for (ref_id, result) in results {
            assert!(result.get("error").is_none(), "{title}: query {ref_id} failed: {result}");
        }
        let mut frames = Vec::new();
        for t in panel["targets"].as_array().unwrap().iter().filter(|t| !t["hide"].as_bool().unwrap_or(false)) {
            let ref_id = t["refId"].as_str().unwrap();
            let got = results.get(ref_id).and_then(|r| r["frames"].as_array()).cloned().unwrap_or_default();
            assert!(!got.is_empty(), "{title}: query {ref_id} returned no frame: {reply}");
            for f in &got {
                let values = f["data"]["values"].as_array().unwrap();
                assert!(values.iter().all(|v| !v.as_array().unwrap().is_empty()), "{title}: {ref_id} is empty: {f}");
            }
            frames.extend(got);
        }
        match panel["type"].as_str().unwrap() {
            "stat" => {
                stats.insert(title.to_string(), last_number(&frames));
            }
            "timeseries" => {
                let names = display_names(panel, &frames);
                assert!(!names.iter().any(|n| n == "Value"), "{title}: a line called Value: {names:?}");
                let shown: BTreeSet<String> = names.into_iter().collect();
                assert_eq!(shown, meant_names(panel), "{title}");
            }
            other => panic!("{title}: panel type {other}"),
        }
    }
    stats
}

/// Every legend the dashboard's time series panels are meant to show.
#[test]
fn the_page_reader_finds_panels_legends_and_panel_errors() {
    let fine = r#"<section class="panel-container" aria-label="Throughput panel"><div aria-label="VizLegend series orders per second">"#;
    let page = read_page(fine);
    assert_eq!(page.panels, ["Throughput"]);
    assert_eq!(page.legends, BTreeSet::from(["orders per second".to_string()]));
    assert!(page.errors.is_empty());
    // Grafana 8's header corner of a panel whose query failed.
    let failed = r#"<section class="panel-container" aria-label="Backlog panel"><section class="panel-info-corner panel-info-corner--error" aria-label="Panel header error">"#;
    assert_eq!(read_page(failed).errors, ["Panel header error", "panel-info-corner--error"]);
}

fn dashboard_url(grafana: &Grafana, store: &ValidatedStore) -> String {
    format!("{}/d/{}?orgId=1&from=now-5m&to=now&kiosk", grafana.url(), render::grafana::dashboard_uid(store))
}

// ---- the tests ------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_rendered_dashboard_shows_a_real_sale_on_a_real_grafana() {
    let Some(rig) = Rig::new("the_rendered_dashboard_shows_a_real_sale_on_a_real_grafana") else { return };
    let store = &rig.store;
    run_sale(&rig.users, &rig.redis, STOCK, CUSTOMERS, 20.0).await;
    let grafana = rig.grafana(Fault::None);
    let datasource_uid = render::grafana::datasource_uid(store);
    let dashboard_uid = render::grafana::dashboard_uid(store);

    // The plugin is loaded.
    let plugin = grafana.get_json("plugin", &grafana_status::plugin_path()).await;
    assert_eq!((plugin["id"].as_str(), plugin["info"]["version"].as_str()), (Some("redis-datasource"), Some("2.2.0")));
    // Health by uid is newer than 8.3; by id it answers, as the plugin logged in as popup-grafana.
    let by_uid = grafana.get(&grafana_status::health_by_uid_path(&datasource_uid)).await;
    assert_eq!(by_uid.0, 404, "{by_uid:?}");
    let ds = grafana.get_json("datasource", &grafana_status::datasource_path(&datasource_uid)).await;
    let id = ds["id"].as_i64().unwrap();
    let health = grafana.get_json("health", &grafana_status::health_by_id_path(id)).await;
    assert_eq!(health["status"], "OK", "{health}");
    // The dashboard is found (provisioning runs as Grafana starts; poll for it with a deadline).
    let title = format!("Pop-up Store {}/{}", store.namespace, store.names.store);
    let search = format!("/api/search?query={}", title.replace(' ', "%20"));
    let what = format!("dashboard {dashboard_uid} found by /api/search");
    poll::wait(&what, Duration::from_secs(30), Duration::from_millis(200), async || {
        let found = grafana.get_json("search", &search).await;
        let listed = found.as_array().unwrap().iter().any(|d| d["uid"] == dashboard_uid.as_str());
        if listed { Ok(()) } else { Err(found.to_string()) }
    })
    .await;
    let dashboard = grafana.dashboard(&dashboard_uid).await;

    // Every panel's queries, as the page sends them, and what they say.
    let stats = check_every_panel(&grafana, &dashboard, &datasource_uid).await;
    assert_eq!(stats["Product Available"], 0.0, "sold out");
    assert_eq!(stats["Percent Sold"], 100.0);
    assert_eq!(stats["Orders Completed"], STOCK as f64);
    assert_eq!(stats["Orders Rejected"], (CUSTOMERS - STOCK) as f64);
    assert_eq!((stats["Customers Ordering"], stats["Orders Processing"]), (0.0, 0.0));

    // The operator's own client: Available; and each wrong question gets its own reason.
    let ready =
        grafana_status::check(store, &grafana.url(), &LiveGrafana::default().round(&grafana.target(store)).await);
    assert_eq!((ready.ok, ready.reason.as_str()), (true, reason::AVAILABLE), "{}", ready.message);
    assert!(ready.message.contains("redis-datasource 2.2.0") && ready.message.contains(&title), "{}", ready.message);
    eprintln!("GrafanaReady: {}: {}", ready.reason, ready.message);
    let mut wrong = grafana.target(store);
    wrong.password = "not-the-admin-password".into();
    assert_eq!(ready_reason(store, &wrong).await, reason::GRAFANA_AUTH_FAILED);
    let mut wrong = grafana.target(store);
    wrong.dashboard_uid = "popup-store-0000000000".into();
    assert_eq!(ready_reason(store, &wrong).await, reason::DASHBOARD_MISSING);
    let mut wrong = grafana.target(store);
    wrong.datasource_uid = "popup-redis-0000000000".into();
    assert_eq!(ready_reason(store, &wrong).await, reason::DATASOURCE_MISSING);

    // The page, in a browser.
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: the browser part: no chromium on PATH (apt-get install -y chromium) nor POPUP_CHROMIUM");
        return;
    };
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grafana_real-dashboard.png");
    render_dashboard(&browser, &dashboard_url(&grafana, store), &dashboard, &png);
    eprintln!("screenshot: {}", png.display());
}

async fn ready_reason(store: &ValidatedStore, target: &GrafanaTarget) -> String {
    let round = LiveGrafana::default().round(target).await;
    assert!(matches!(round, Round::Answered(_)), "{round:?}");
    grafana_status::check(store, &target.url, &round).reason
}

#[tokio::test]
async fn grafana_ready_names_a_missing_plugin_and_a_wrong_datasource_password() {
    let Some(rig) = Rig::new("grafana_ready_names_a_missing_plugin_and_a_wrong_datasource_password") else { return };
    let store = &rig.store;

    let without_plugin = rig.grafana(Fault::NoPlugin);
    let round = LiveGrafana::default().round(&without_plugin.target(store)).await;
    let c = grafana_status::check(store, &without_plugin.url(), &round);
    assert_eq!((c.ok, c.reason.as_str()), (false, reason::PLUGIN_NOT_LOADED), "{}", c.message);
    eprintln!("without the plugin: {}: {}", c.reason, c.message);
    drop(without_plugin);

    let wrong_password = rig.grafana(Fault::WrongRedisPassword);
    let round = LiveGrafana::default().round(&wrong_password.target(store)).await;
    let Round::Answered(answers) = &round else { panic!("{round:?}") };
    assert!(answers.datasource.is_some(), "8.3 has no health by uid: the id fallback was taken");
    let c = grafana_status::check(store, &wrong_password.url(), &round);
    assert_eq!((c.ok, c.reason.as_str()), (false, reason::DATASOURCE_UNHEALTHY), "{}", c.message);
    eprintln!("with a wrong Redis password: {}: {}", c.reason, c.message);
    // Grafana's words, which are the plugin's, which are Redis's.
    assert!(c.message.to_uppercase().contains("WRONGPASS"), "{}", c.message);
    // Redis logged the refused login under the Grafana user.
    let mut admin = rig.users.conn(&rig.redis, Role::Operator).await;
    let log = acl_users::acl_log(&mut admin).await;
    assert!(log.iter().any(|(user, _, _)| user == Role::Grafana.user()), "{log:?}");
}

/// The README's picture: a sale of a few minutes (POPUP_GRAFANA_SHOT_SECONDS, default 150) on a real
/// Grafana, photographed while it runs into docs/images/dashboard.png.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes docs/images/dashboard.png; run by hand"]
async fn readme_screenshot() {
    let Some(rig) = Rig::new("readme_screenshot") else { return };
    let browser = chromium().expect("chromium (apt-get install -y chromium)");
    let seconds: f64 = std::env::var("POPUP_GRAFANA_SHOT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150.0);
    let grafana = rig.grafana(Fault::None);
    let dashboard = grafana.dashboard(&render::grafana::dashboard_uid(&rig.store)).await;
    // More customers than units, arriving over `seconds`: sold out at two thirds, photographed at four
    // fifths, while customers still arrive and are turned away.
    let (stock, customers) = (1600, 2400);
    let rate = customers as f64 / seconds;
    let sale = { async { run_sale(&rig.users, &rig.redis, stock, customers, rate).await } };
    let shot = async {
        tokio::time::sleep(Duration::from_secs_f64(seconds * 0.8)).await;
        let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/dashboard.png");
        std::fs::create_dir_all(png.parent().unwrap()).unwrap();
        let url = dashboard_url(&grafana, &rig.store);
        tokio::task::block_in_place(|| {
            let profile = rig.dir.join("profile");
            let out = chromium_run(&browser, &url, "--dump-dom", &profile);
            let page = read_page(&String::from_utf8_lossy(&out.stdout));
            assert!(page.errors.is_empty(), "{:?}", page.errors);
            assert_eq!(page.legends, every_meant_name(&dashboard));
            chromium_run(&browser, &url, &format!("--screenshot={}", png.display()), &profile);
        });
        eprintln!("wrote {}", png.display());
    };
    tokio::join!(sale, shot);
}
