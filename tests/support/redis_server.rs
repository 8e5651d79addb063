//! A real redis-stack-server (Redis 7.4 + TimeSeries + RedisGears 2) per test, killed on drop, or the
//! real RedisGears 1 runtime (Redis 6.2 + RedisGears 1.2 + TimeSeries, `$POPUP_REDISGEARS1`) when given;
//! and a quick sale on it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use popup_operator::sale::connect;
use popup_operator::sale::simulator::{self, SimulationSummary, SimulatorConfig};
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use super::temp_dir::TempDir;

// ---- a quick sale ----------------------------------------------------------------------------------

/// A small sale the simulator plays fast: `customers` for `stock` units, arriving within 3 ms of one
/// another and ordering within 40 ms, the sale's keys reset first; it waits up to 30 s for every order
/// to be decided and runs 30 s at most.
pub fn quick_sale(stock: i64, customers: u64) -> SimulatorConfig {
    SimulatorConfig {
        stock,
        customers,
        max_arrival: Duration::from_millis(3),
        max_order_delay: Duration::from_millis(40),
        rate: None,
        reset: true,
        join: None,
        wait_complete: Some(Duration::from_secs(30)),
        max_duration: Some(Duration::from_secs(30)),
    }
}

/// Runs the simulator with `config` on `conn` to its end; every customer must have been processed.
pub async fn simulate(conn: &mut MultiplexedConnection, config: &SimulatorConfig) -> SimulationSummary {
    let summary = simulator::run(conn, config, |_| {}).await.unwrap();
    assert!(summary.all_processed, "not all orders processed: {summary:?}");
    summary
}

// ---- a redis-stack-server per test ---------------------------------------------------------------

pub fn find_server() -> PathBuf {
    if let Ok(p) = std::env::var("REDIS_STACK_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "REDIS_STACK_SERVER={} does not exist; run `bash hack/install-redis-stack.sh`",
            p.display()
        );
        return p;
    }
    let cache = std::env::var("POPUP_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/popup-operator")
    });
    let p = cache.join("redis-stack/bin/redis-stack-server");
    if p.exists() {
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("redis-stack-server");
            if c.exists() {
                return c;
            }
        }
    }
    panic!(
        "redis-stack-server not found (checked $REDIS_STACK_SERVER, {}, PATH); run `bash hack/install-redis-stack.sh` first",
        p.display()
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The port was taken by another process between choosing it and binding it.
struct PortTaken;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Its data, logs and files of the test's own; removed after the server is stopped.
    pub dir: TempDir,
    extra: Vec<String>,
    /// The unpacked RedisGears 1 runtime this server runs, instead of redis-stack.
    gears1: Option<PathBuf>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_fresh("popup-engines", extra, None)
    }

    /// Redis 6.2 with the real RedisGears 1.2 and RedisTimeSeries, loaded as the redismod image loads
    /// them. Panics when `$POPUP_REDISGEARS1` names no runtime: ask [`redisgears1`] first.
    pub fn start_gears1(extra: &[&str]) -> RedisServer {
        let root = redisgears1().expect("POPUP_REDISGEARS1 names no RedisGears 1 runtime");
        Self::start_fresh("popup-gears1", extra, Some(root))
    }

    /// A new server in a new directory `<tmp>/<name>-<pid>-<n>` on a free port.
    fn start_fresh(name: &str, extra: &[&str], gears1: Option<PathBuf>) -> RedisServer {
        // Not named after a free port: two tests may be handed the same one in turn.
        let dir = TempDir::new(name);
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut s = RedisServer { port: free_port(), child: None, dir, extra, gears1 };
        s.spawn(true);
        s
    }

    pub fn is_gears1(&self) -> bool {
        self.gears1.is_some()
    }

    /// Like [`RedisServer::start_with`] on a port chosen before (an operator already told where Redis
    /// is); waits for the port rather than moving away from it.
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let dir = TempDir::new("popup-engines");
        let mut s =
            RedisServer { port, child: None, dir, extra: extra.iter().map(|s| s.to_string()).collect(), gears1: None };
        s.spawn(false);
        s
    }

    /// Launch: directly `redis-server` with the two modules when the redis-stack layout is
    /// recognised (the wrapper script word-splits its arguments, which loses `--save ""`), else
    /// the wrapper itself.
    /// Launch on `self.port`; a fresh server moves to another free port when the port was taken
    /// meanwhile, a restarted one (whose clients know its port) retries the same port.
    fn spawn(&mut self, fresh: bool) {
        for _ in 0..10 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(PortTaken) if fresh => self.port = free_port(),
                Err(PortTaken) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        panic!("no free port for redis-stack-server after 10 attempts (last {})", self.port);
    }

    fn try_spawn(&mut self) -> Result<(), PortTaken> {
        let server = match &self.gears1 {
            Some(root) => root.join("bin/redis-server"),
            None => find_server(),
        };
        let bin = server.parent().unwrap();
        let lib = bin.parent().unwrap().join("lib");
        let direct = bin.join("redis-server");
        let mut cmd;
        if let Some(root) = &self.gears1 {
            // The redismod image's load line (RedisGears with its Python plugin, then TimeSeries).
            cmd = Command::new(&server);
            cmd.arg("--loadmodule")
                .arg(root.join("redisgears.so"))
                .arg("Plugin")
                .arg(root.join("gears_python/gears_python.so"))
                .arg("PythonInstallationDir")
                .arg(root);
            cmd.arg("--loadmodule").arg(root.join("redistimeseries.so"));
            cmd.args(["--save", ""]);
        } else if direct.exists() && lib.join("redistimeseries.so").exists() && lib.join("redisgears.so").exists() {
            cmd = Command::new(direct);
            cmd.arg("--loadmodule").arg(lib.join("redistimeseries.so"));
            cmd.arg("--loadmodule")
                .arg(lib.join("redisgears.so"))
                .arg("v8-plugin-path")
                .arg(lib.join("libredisgears_v8_plugin.so"));
            cmd.args(["--save", ""]);
        } else {
            cmd = Command::new(&server);
        }
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let _ = std::fs::remove_file(&log);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--appendonly", "no"])
            .arg("--dir")
            .arg(&*self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}; run `bash hack/install-redis-stack.sh`", server.display())
        });
        self.child = Some(child);
        // Ready when *this* server says so in its log: a bare TCP connect could reach another
        // process that took the port between free_port() and the bind.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                if text.contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "{} exited at start ({status}); missing libssl1.1? run `bash hack/install-redis-stack.sh`\n{text}",
                    server.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not get ready on port {} within 20s:\n{text}",
                server.display(),
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> MultiplexedConnection {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(&self.url(), None).await {
                Ok((mut c, _)) => {
                    // the wrapper-script fallback cannot pass --save ""
                    let _: redis::RedisResult<Value> =
                        redis::cmd("CONFIG").arg("SET").arg("save").arg("").query_async(&mut c).await;
                    return c;
                }
                Err(e) if Instant::now() < deadline && e.to_string().contains("LOADING") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("cannot connect to the test Redis: {e}"),
            }
        }
    }

    /// `redis://<user>@127.0.0.1:<port>`: the user in the URL, the password given apart (as the pods do).
    pub fn url_as(&self, user: &str) -> String {
        format!("redis://{user}@127.0.0.1:{}", self.port)
    }

    /// A connection logged in as an ACL user (`None`: the default user), for servers started with an ACL
    /// file or `--requirepass`.
    pub async fn conn_as(&self, user: Option<&str>, password: &str) -> MultiplexedConnection {
        let url = user.map(|u| self.url_as(u)).unwrap_or_else(|| self.url());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(&url, Some(password)).await {
                Ok((c, _)) => return c,
                Err(e) if Instant::now() < deadline && e.to_string().contains("LOADING") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("cannot connect to the test Redis as {}: {e}", user.unwrap_or("default")),
            }
        }
    }

    pub async fn manager(&self) -> ConnectionManager {
        popup_operator::sale::connect_manager(&self.url(), None).await.unwrap().0
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new server process on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(false);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- child processes ---------------------------------------------------------------------------

/// Kills a child process on drop (also when the test panics).
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- the real RedisGears 1 runtime, when given ---------------------------------------------------------

/// The real RedisGears 1 runtime, unpacked, when `$POPUP_REDISGEARS1` names one: a folder with
/// `bin/redis-server` (unpacked), a folder with `redisgears1.tar.xz` (../shared/redisgears1), or the
/// tarball. A tarball is unpacked once into `${POPUP_CACHE:-~/.cache/popup-operator}/redisgears1/`.
/// `None` when the variable is unset or empty: the gears tests then run on the CPython emulation.
pub fn redisgears1() -> Option<PathBuf> {
    let given = PathBuf::from(std::env::var_os("POPUP_REDISGEARS1").filter(|v| !v.is_empty())?);
    if given.join("bin/redis-server").exists() {
        return Some(given);
    }
    let tarball = if given.is_dir() { given.join("redisgears1.tar.xz") } else { given.clone() };
    assert!(
        tarball.is_file(),
        "POPUP_REDISGEARS1={} holds neither bin/redis-server nor redisgears1.tar.xz",
        given.display()
    );
    let meta = tarball.metadata().unwrap();
    let mtime = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let cache = std::env::var("POPUP_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/popup-operator")
    });
    let dest = cache.join("redisgears1").join(format!("{}-{mtime}", meta.len()));
    let root = dest.join("redisgears1");
    if !root.join("bin/redis-server").exists() {
        // Unpack beside it and rename into place: tests in other processes may do the same at once.
        let tmp = dest.with_extension(format!("unpacking-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&tmp).unwrap();
        let status = Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(&tmp).status().unwrap();
        assert!(status.success(), "cannot unpack {}", tarball.display());
        if std::fs::rename(&tmp, &dest).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    assert!(root.join("bin/redis-server").exists(), "{} lacks bin/redis-server", root.display());
    Some(root)
}

/// Where a gears test's engine runs.
pub enum GearsRuntime {
    /// Real RedisGears 1 in the server, the scripts registered by `load_scripts` as in production.
    Real,
    /// redis-stack with the scripts under the CPython emulation.
    Emulated(ChildGuard),
}

/// The gears engine on its own Redis: the real runtime when `$POPUP_REDISGEARS1` gives one, else the
/// emulation (and the test says so on stderr).
pub struct Gears {
    pub server: RedisServer,
    pub runtime: GearsRuntime,
}

impl Gears {
    pub async fn start(settings: &popup_operator::sale::ProcessingSettings) -> Gears {
        match Gears::real(settings, &[]).await {
            Some(g) => g,
            None => {
                eprintln!(
                    "NOTE: the gears engine ran on the CPython emulation only: POPUP_REDISGEARS1 is unset \
                     (point it at ../shared/redisgears1 to run it on real RedisGears 1)"
                );
                Gears::emulated(settings, &[])
            }
        }
    }

    /// On real RedisGears 1 (`None` when no runtime is given), the scripts loaded.
    pub async fn real(settings: &popup_operator::sale::ProcessingSettings, extra: &[&str]) -> Option<Gears> {
        redisgears1()?;
        let server = RedisServer::start_gears1(extra);
        let mut conn = server.conn().await;
        let outcome = popup_operator::sale::load_scripts(&mut conn, popup_operator::sale::EngineKind::Gears, settings)
            .await
            .unwrap();
        assert_eq!(outcome, popup_operator::sale::LoadOutcome::Loaded);
        Some(Gears { server, runtime: GearsRuntime::Real })
    }

    /// On redis-stack under the CPython emulation.
    pub fn emulated(settings: &popup_operator::sale::ProcessingSettings, extra: &[&str]) -> Gears {
        let server = RedisServer::start_with(extra);
        let shim = start_gears_shim(&server, settings);
        Gears { server, runtime: GearsRuntime::Emulated(shim) }
    }

    pub fn is_real(&self) -> bool {
        matches!(self.runtime, GearsRuntime::Real)
    }

    /// Which runtime, for messages.
    pub fn name(&self) -> &'static str {
        if self.is_real() { "real RedisGears 1" } else { "the CPython emulation" }
    }

    /// The emulation's log, or Redis' own (RedisGears 1 logs there), for failure messages.
    pub fn log(&self) -> String {
        let path = match self.runtime {
            GearsRuntime::Real => self.server.dir.join(format!("redis-{}.log", self.server.port)),
            GearsRuntime::Emulated(_) => self.server.dir.join("shim.log"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// The gears engine's scripts, exactly as `load_scripts` would send them, running under the
/// CPython shim (`tests/gears_shim/gears_shim.py`) against `server`; returns once the shim has
/// registered them. Its log is `<server dir>/shim.log`.
pub fn start_gears_shim(server: &RedisServer, settings: &popup_operator::sale::ProcessingSettings) -> ChildGuard {
    start_gears_shim_at(server, &server.url(), settings)
}

/// [`start_gears_shim`] connecting to `url`, e.g. `redis://user:password@…` on a server with ACL users:
/// RedisGears 1 runs a registration as the user who registered it, so the shim logs in as that user.
pub fn start_gears_shim_at(
    server: &RedisServer,
    url: &str,
    settings: &popup_operator::sale::ProcessingSettings,
) -> ChildGuard {
    let scripts: Vec<(String, String)> =
        popup_operator::sale::gears::scripts(settings).into_iter().map(|s| (s.id.to_string(), s.code)).collect();
    start_shim_with(server, url, &scripts)
}

/// The CPython emulation running `scripts` (name, code) against `url`; returns once they are registered.
pub fn start_shim_with(server: &RedisServer, url: &str, scripts: &[(String, String)]) -> ChildGuard {
    let py = Command::new("python3").args(["-c", "import redis"]).status();
    assert!(
        matches!(py, Ok(s) if s.success()),
        "python3 with the `redis` package is needed for the gears shim; run `bash hack/install-redis-stack.sh`"
    );
    let mut paths = Vec::new();
    for (name, code) in scripts {
        let path = server.dir.join(format!("{name}.py"));
        std::fs::write(&path, code).unwrap();
        paths.push(path);
    }
    let log_path = server.dir.join("shim.log");
    let mut shim = ChildGuard(Some(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gears_shim/gears_shim.py"))
            .args(["--redis", url, "--max-seconds", "120"])
            .args(&paths)
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap())
            .spawn()
            .unwrap(),
    ));
    use std::io::BufRead;
    let stdout = shim.0.as_mut().unwrap().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "shim did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
    shim
}
