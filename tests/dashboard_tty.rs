//! `popup-operator dashboard` in a real pseudo-terminal, during a real sale on a real redis-stack-server
//! that loads the store's rendered ACL file: the dashboard reads as the store's read-only Grafana user.
//! The screen is read the way a person sees it (a vt100 emulator fed with everything the dashboard
//! wrote), and its numbers are compared with what Redis holds: before the sale (notes, no crash), in
//! its middle (each tile lies between Redis' values just before and just after the frame), at its end
//! (SOLD OUT, completed == stock, the charts' totals == Redis' own TS.RANGE), across a Redis restart,
//! and after `q` (the terminal is given back). Every wait is for a state on the screen or in Redis.

pub mod support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Timelike;
use popup_operator::crd::Engine;
use popup_operator::render::acl::Role;
use redis::aio::MultiplexedConnection;
use support::acl_users::{self, Users};
use support::redis_server::ChildGuard;

const BIN: &str = env!("CARGO_BIN_EXE_popup-operator");
const COLS: u16 = 150;
const ROWS: u16 = 45;
const STOCK: i64 = 300;

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("REDIS_URL").env_remove("REDIS_PASSWORD").env("RUST_LOG", "warn");
    cmd
}

/// The dashboard running on the slave side of a pseudo-terminal; the screen as a terminal shows it.
struct Tty {
    child: Child,
    master: std::fs::File,
    /// The slave side, kept to read the terminal's modes after the dashboard ended.
    slave: OwnedFd,
    screen: Arc<Mutex<vt100::Parser>>,
    stderr: std::path::PathBuf,
}

impl Tty {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Tty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stderr = std::env::temp_dir().join(format!("popup-dashboard-tty-{}.stderr", std::process::id()));
        let mut cmd = command(args);
        cmd.envs(env.iter().copied())
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own with the pty as its controlling terminal, as a shell gives it.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0)));
        let (mut reader, feed) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            // Ends with EIO once the dashboard and every copy of the slave side are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().unwrap().process(&buf[..n]);
            }
        });
        Tty { child, master, slave, screen, stderr }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn rows(&self) -> Vec<Vec<char>> {
        self.screen.lock().unwrap().screen().rows(0, COLS).map(|r| r.chars().collect()).collect()
    }

    /// Waits until `ready` holds for the screen (the dashboard redraws every 100 ms here).
    fn wait_for<T>(&mut self, what: &str, limit: Duration, ready: impl Fn(&Tty) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = ready(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the dashboard ended ({status}) while waiting for {what}; stderr: {}", self.stderr_text());
            }
            if start.elapsed() > limit {
                panic!("no {what} on the screen within {}s; the screen:\n{}", limit.as_secs(), self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The text inside the stat tile titled `title` (its line under the title, between its borders).
    fn tile(&self, title: &str) -> Option<String> {
        let rows = self.rows();
        let (y, x) = rows.iter().enumerate().take(12).find_map(|(y, r)| find(r, title).map(|x| (y, x)))?;
        let left = rows[y][..x].iter().rposition(|c| *c == '┌')?;
        let right = x + rows[y][x..].iter().position(|c| *c == '┐')?;
        let inner: String = rows.get(y + 1)?[left + 1..right].iter().collect();
        Some(inner.trim().to_string())
    }

    /// The numbers after `name` in a chart legend (`completed  total 300  max 90`): e.g. "total".
    fn legend(&self, name: &str, figure: &str) -> Option<f64> {
        let text = self.text();
        let line = text.lines().find_map(|l| l.find(&format!("■ {name}  ")).map(|at| l[at..].to_string()))?;
        let after = line.split(&format!("{figure} ")).nth(1)?;
        after.split_whitespace().next()?.trim_end_matches('│').parse().ok()
    }

    /// The time of the reading on screen ("updated 17:02:03"), as seconds of the day.
    fn updated(&self) -> Option<u32> {
        let text = self.text();
        let at = text.find("updated ")? + "updated ".len();
        let t = chrono::NaiveTime::parse_from_str(text.get(at..at + 8)?, "%H:%M:%S").ok()?;
        Some(t.num_seconds_from_midnight())
    }

    /// Whether the reading on screen began after `asked` (seconds of the day, taken when the caller
    /// had what it compares with): its second is a later one. Across midnight too.
    fn read_after(&self, asked: u32) -> bool {
        self.updated().is_some_and(|u| (1..600).contains(&((u + 86_400 - asked) % 86_400)))
    }

    fn send(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Resizes the terminal as a window would: the kernel sends the dashboard SIGWINCH.
    fn resize(&mut self, cols: u16, rows: u16) {
        // The emulator first, so that what is drawn for the new size lands on a screen of that size.
        self.screen.lock().unwrap().set_size(rows.try_into().unwrap(), cols.try_into().unwrap());
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, on a descriptor we own.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) }, 0);
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn find(row: &[char], needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    row.windows(needle.len()).position(|w| w == needle.as_slice())
}

/// A tile's number: `SOLD OUT` is 0, a percent its number.
fn tile_number(text: &str) -> Option<f64> {
    if text == "SOLD OUT" {
        return Some(0.0);
    }
    text.trim_end_matches('%').parse().ok()
}

/// What Redis holds of the six stat panels, read as the dashboard reads them.
#[derive(Debug, Clone, Copy)]
struct Held {
    product: f64,
    customers: f64,
    complete: f64,
    rejected: f64,
}

impl Held {
    fn percent(&self) -> f64 {
        self.complete / (self.complete + self.product) * 100.0
    }
}

async fn held(admin: &mut MultiplexedConnection) -> Held {
    let (product, customers, complete, rejected): (Option<f64>, f64, f64, f64) = redis::pipe()
        .cmd("GET")
        .arg("product")
        .cmd("XLEN")
        .arg("queue:customers")
        .cmd("XLEN")
        .arg("queue:complete")
        .cmd("XLEN")
        .arg("queue:rejected")
        .query_async(admin)
        .await
        .unwrap();
    Held { product: product.unwrap_or(f64::NAN), customers, complete, rejected }
}

/// The sum of a `ts:enqueue:*` series over the last five minutes, by Redis' own aggregation.
async fn ts_total(admin: &mut MultiplexedConnection, key: &str) -> f64 {
    let now = chrono::Utc::now().timestamp_millis();
    let samples: Vec<(i64, f64)> = redis::cmd("TS.RANGE")
        .arg(key)
        .arg(now - 300_000)
        .arg(now)
        .arg("AGGREGATION")
        .arg("sum")
        .arg(5000)
        .query_async(admin)
        .await
        .unwrap();
    samples.iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_real_sale_as_redis_holds_it() {
    let users = Users::new(Engine::Native);
    let mut server = users.start_server();
    let admin_url = users.url(&server, Role::Admin);
    let admin_pw = users.password(Role::Admin);
    let mut admin = users.conn(&server, Role::Admin).await;

    // 1. Before anything: an empty Redis. Every panel says it has no data; nothing crashes.
    let grafana_url = users.url(&server, Role::Grafana);
    let grafana_pw = users.password(Role::Grafana);
    let mut tty = Tty::start(
        &["dashboard", "--redis", &grafana_url, "--interval-millis", "100"],
        &[("REDIS_PASSWORD", &grafana_pw)],
    );
    tty.wait_for("the empty sale", Duration::from_secs(30), |t| {
        (t.tile("Product Available").as_deref() == Some("no data")
            && t.text().contains("no data yet: ts:enqueue:queue:customers does not exist"))
        .then_some(())
    });
    for title in ["Product Available", "Percent Sold", "Customers Ordering", "Orders Processing"] {
        assert!(tty.tile(title).is_some(), "tile {title}:\n{}", tty.text());
    }
    for title in ["Customers Overflow", "Orders In Queue", "Completed Flow", "Throughput", "Rejected Flow", "Backlog"] {
        assert!(tty.text().contains(title), "chart {title}:\n{}", tty.text());
    }

    // 2. The sale: the native engine's worker decides what the simulator sends (30 customers a second).
    let pw_env = [("REDIS_PASSWORD", admin_pw.as_str())];
    let load = command(&["load", "--engine", "native", "--redis", &admin_url]).envs(pw_env).output().unwrap();
    assert!(load.status.success(), "load: {}", String::from_utf8_lossy(&load.stderr));
    let _worker = ChildGuard(Some(
        command(&["process", "--redis", &admin_url, "--metrics-interval-seconds", "1"])
            .envs(pw_env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stock = STOCK.to_string();
    let simulator_log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-tty-simulate.log");
    let mut simulator = ChildGuard(Some(
        command(&[
            "simulate",
            "--redis",
            &admin_url,
            "--stock",
            &stock,
            "--rate",
            "30",
            "--max-order-delay-millis",
            "200",
        ])
        .envs(pw_env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&simulator_log).unwrap())
        .spawn()
        .unwrap(),
    ));

    // 3. In the middle of the sale: a frame read from Redis after `before` shows numbers between
    //    `before` and `after` (units left only fall, completions and rejections only grow).
    let start = Instant::now();
    let before = loop {
        let h = held(&mut admin).await;
        if h.complete >= 20.0 && h.product > 0.0 {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the sale did not get going: {h:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let asked = chrono::Local::now().num_seconds_from_midnight();
    let tiles = tty.wait_for("a reading newer than Redis' numbers", Duration::from_secs(10), |t| {
        t.read_after(asked).then(|| {
            ["Product Available", "Percent Sold", "Orders Completed", "Orders Rejected"]
                .map(|title| t.tile(title).and_then(|v| tile_number(&v)))
        })
    });
    let after = held(&mut admin).await;
    let [Some(product), Some(percent), Some(complete), Some(rejected)] = tiles else {
        panic!("unreadable tiles {tiles:?}:\n{}", tty.text())
    };
    assert!(after.product <= product && product <= before.product, "units left {product}: {before:?} .. {after:?}");
    assert!(before.complete <= complete && complete <= after.complete, "completed {complete}: {before:?} .. {after:?}");
    assert!(before.rejected <= rejected && rejected <= after.rejected, "rejected {rejected}: {before:?} .. {after:?}");
    assert!(
        before.percent() - 0.051 <= percent && percent <= after.percent() + 0.051,
        "percent sold {percent}: {} .. {}",
        before.percent(),
        after.percent()
    );
    assert!(product > 0.0, "the frame compared was taken in the middle of the sale:\n{}", tty.text());

    // 4. The end: the simulator stops once sold out, the worker decides the last orders; a reading
    //    begun after that (no order left: nothing changes any more) shows what Redis holds.
    let status = simulator.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "simulate: {}", std::fs::read_to_string(&simulator_log).unwrap_or_default());
    let asked = chrono::Local::now().num_seconds_from_midnight();
    let end = tty.wait_for("the end of the sale", Duration::from_secs(60), |t| {
        (t.read_after(asked)
            && t.tile("Product Available").as_deref() == Some("SOLD OUT")
            && t.tile("Orders Completed").as_deref() == Some(stock.as_str())
            && t.tile("Orders Processing").as_deref() == Some("0")
            && t.legend("completed", "total") == Some(STOCK as f64))
        .then(|| t.text())
    });
    let redis_end = held(&mut admin).await;
    assert_eq!(redis_end.product, 0.0);
    assert_eq!(redis_end.complete, STOCK as f64);
    assert_eq!(tty.tile("Percent Sold").as_deref(), Some("100.0%"), "{end}");
    assert_eq!(tty.tile("Orders Rejected").and_then(|v| tile_number(&v)), Some(redis_end.rejected), "{end}");
    assert_eq!(tty.tile("Customers Ordering").and_then(|v| tile_number(&v)), Some(redis_end.customers), "{end}");
    // The arrivals series is sampled every interval (1 s here), so its last customers may land after
    // the end above: compare once Redis' own sum stands still around a reading begun after it.
    let start = Instant::now();
    loop {
        let before = ts_total(&mut admin, "ts:enqueue:queue:customers").await;
        let asked = chrono::Local::now().num_seconds_from_midnight();
        let shown = tty.wait_for("a newer reading", Duration::from_secs(10), |t| {
            t.read_after(asked).then(|| t.legend("arrived", "total"))
        });
        let after = ts_total(&mut admin, "ts:enqueue:queue:customers").await;
        if before == after && shown == Some(after) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Customers Overflow shows {shown:?}, TS.RANGE sums {before} then {after}:\n{}",
            tty.text()
        );
    }
    assert_eq!(ts_total(&mut admin, "ts:enqueue:queue:complete").await, STOCK as f64);
    for line in ["waiting", "queued", "orders per second", "rejected", "orders queued", "customers waiting"] {
        assert!(tty.legend(line, "max").is_some(), "the {line} line:\n{end}");
    }
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-sold-out.txt"),
        tty.text().lines().map(str::trim_end).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();

    // The keys change the window; a smaller terminal gets the tiles in two rows.
    tty.send(b"\x1b[C"); // →
    tty.wait_for("the 15-minute window", Duration::from_secs(10), |t| t.text().contains("last 15m").then_some(()));
    tty.send(b"-");
    tty.wait_for("the 5-minute window again", Duration::from_secs(10), |t| t.text().contains("last 5m").then_some(()));
    tty.resize(100, 30);
    tty.wait_for("the tiles in two rows", Duration::from_secs(10), |t| {
        let rows = t.rows();
        let row_of = |title: &str| rows.iter().position(|r| find(r, title).is_some());
        (row_of("Product Available") == Some(1) && row_of("Orders Processing") == Some(4)).then_some(())
    });
    assert_eq!(tty.tile("Product Available").as_deref(), Some("SOLD OUT"), "{}", tty.text());
    tty.resize(COLS, ROWS);

    // 5. Read-only: the Grafana user's queries left nothing in the ACL log.
    let refused = acl_users::acl_log(&mut admin).await;
    assert!(refused.iter().all(|(user, _, _)| user != "popup-grafana"), "{refused:?}");

    // 6. Redis goes away: the screen says so and keeps the last numbers; it comes back, empty.
    drop(admin);
    server.stop();
    tty.wait_for("the Redis trouble", Duration::from_secs(30), |t| {
        (t.text().contains("Redis unreachable") && t.tile("Product Available").as_deref() == Some("SOLD OUT"))
            .then_some(())
    });
    server.restart();
    tty.wait_for("the restarted Redis", Duration::from_secs(30), |t| {
        (!t.text().contains("Redis unreachable") && t.tile("Product Available").as_deref() == Some("no data"))
            .then_some(())
    });

    // 7. q: the dashboard ends and gives the terminal back (main screen, cursor, cooked mode).
    tty.send(b"q");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = tty.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "q did not end the dashboard:\n{}", tty.text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}: {}", tty.stderr_text());
    // The last bytes may still be on their way to the emulator.
    let start = Instant::now();
    while tty.screen.lock().unwrap().screen().alternate_screen() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let parser = tty.screen.lock().unwrap();
    assert!(!parser.screen().alternate_screen(), "still on the alternate screen");
    assert!(!parser.screen().hide_cursor(), "the cursor is still hidden");
    drop(parser);
    // SAFETY: a termios is plain data; tcgetattr fills it for a descriptor we own.
    let mut modes: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(tty.slave.as_raw_fd(), &mut modes) }, 0);
    assert!(modes.c_lflag & libc::ICANON != 0 && modes.c_lflag & libc::ECHO != 0, "raw mode left on");
}

#[test]
fn without_a_terminal_it_names_the_line_views() {
    let out = command(&["dashboard", "--redis", "redis://127.0.0.1:1"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sale --watch") && stderr.contains("sale --json"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing drawn on a pipe: {:?}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn help_says_what_it_shows_and_how_to_leave() {
    let out = command(&["dashboard", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for words in
        ["Grafana dashboard", "Product Available", "Throughput", "q, Esc or Ctrl-C quit", "sale --watch", "--window"]
    {
        assert!(help.contains(words), "{words:?} missing from:\n{help}");
    }
}
