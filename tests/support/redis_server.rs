//! A real redis-stack-server (Redis 7.4 + TimeSeries + RedisGears 2) per test, killed on drop.
//! Shared by the integration tests that need Redis (`#[path = "support/redis_server.rs"] mod …`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use popup_operator::sale::connect;
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};

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
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("popup-engines-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s =
            RedisServer { port: free_port(), child: None, dir, extra: extra.iter().map(|s| s.to_string()).collect() };
        s.spawn(true);
        s
    }

    /// Like [`RedisServer::start_with`] on a port chosen before (an operator already told where Redis
    /// is); waits for the port rather than moving away from it.
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("popup-engines-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = RedisServer { port, child: None, dir, extra: extra.iter().map(|s| s.to_string()).collect() };
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
        let server = find_server();
        let bin = server.parent().unwrap();
        let lib = bin.parent().unwrap().join("lib");
        let direct = bin.join("redis-server");
        let mut cmd;
        if direct.exists() && lib.join("redistimeseries.so").exists() && lib.join("redisgears.so").exists() {
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
            .arg(&self.dir)
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
                    "redis-stack-server exited at start ({status}); missing libssl1.1? run `bash hack/install-redis-stack.sh`\n{text}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-stack-server did not get ready on port {} within 20s:\n{text}",
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
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let py = Command::new("python3").args(["-c", "import redis"]).status();
    assert!(
        matches!(py, Ok(s) if s.success()),
        "python3 with the `redis` package is needed for the gears shim; run `bash hack/install-redis-stack.sh`"
    );
    let scripts = popup_operator::sale::gears::scripts(settings);
    let mut paths = Vec::new();
    for script in &scripts {
        let path = server.dir.join(format!("{}.py", script.id));
        std::fs::write(&path, &script.code).unwrap();
        paths.push(path);
    }
    let log_path = server.dir.join("shim.log");
    let mut shim = ChildGuard(Some(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gears_shim/gears_shim.py"))
            .args(["--redis", url, "--max-seconds", "120"])
            .args(&paths)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
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
