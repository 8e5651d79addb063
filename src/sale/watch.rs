//! Following a sale as it happens (`popup-operator sale --watch`): the sale is read every interval
//! on a connection that is opened again whenever Redis goes away, and each reading carries what a
//! view shows: the numbers, the rate of decided orders, whether the sale is over and what is wrong
//! with the engine. Nothing here draws: `cli::watch_view` does.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::{
    EngineError, EngineHealth, EngineKind, Result, SaleSnapshot, connect, engine_health, read_sale, sale_problems,
};

/// How long one reading (reconnecting included) may take before Redis counts as unreachable: a
/// Redis that hangs must not freeze the view for the connection's 30 s response timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The rate of decided orders spans at least this long (or the last interval, when longer), so a
/// batch landing just before or after a reading does not make it jump.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);

/// One look at the sale. Field names are stable (scripts read `sale --watch --json`). While
/// `connected` is false the numbers are the last ones read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchReading {
    /// `host:port` of Redis.
    pub redis: String,
    /// Redis answered this time.
    pub connected: bool,
    /// Why the sale could not be read this time (Redis unreachable, a reply that makes no sense).
    pub error: Option<String>,
    /// Units left; null while there is no sale (no `product` key).
    pub available: Option<u64>,
    /// The stock the sale started with: available + completed.
    pub stock: Option<u64>,
    pub completed: u64,
    pub rejected: u64,
    /// `XLEN queue:customers`
    pub customers_waiting: u64,
    /// `XLEN queue:orders`
    pub orders_waiting: u64,
    /// Orders decided (completed or rejected) per second over the last [`RATE_WINDOW`].
    pub orders_per_second: f64,
    /// Sold out and both queues empty: every order has its answer.
    pub over: bool,
    /// What is wrong with the engine or the sale: [`sale_problems`], or with `--engine` the
    /// summary of an unhealthy engine (which includes them).
    pub problems: Vec<String>,
    /// The engine's health, when one was named.
    pub engine: Option<EngineHealth>,
    /// Seconds since the watch started.
    pub elapsed_seconds: f64,
    /// The watch's last reading.
    #[serde(rename = "final")]
    pub last: bool,
}

/// Orders decided per second over a sliding window of readings.
#[derive(Debug, Default)]
pub struct DecidedRate {
    samples: VecDeque<(Instant, u64)>,
}

impl DecidedRate {
    /// Record `decided` orders at `at` and return the rate over the window ending there.
    pub fn record(&mut self, at: Instant, decided: u64) -> f64 {
        if self.samples.back().is_some_and(|&(_, before)| decided < before) {
            // fewer than before: the sale was reset or Redis restarted empty; a new sale begins
            self.samples.clear();
        }
        self.samples.push_back((at, decided));
        // keep the newest sample that is at least a window old as the base
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|&(t, _)| at.duration_since(t) >= RATE_WINDOW) {
            self.samples.pop_front();
        }
        let (since, base) = self.samples[0];
        let secs = at.duration_since(since).as_secs_f64();
        if secs > 0.0 { decided.saturating_sub(base) as f64 / secs } else { 0.0 }
    }
}

/// Reads the sale again and again, reconnecting after Redis went away.
pub struct SaleWatcher {
    url: String,
    password: Option<String>,
    engine: Option<EngineKind>,
    conn: Option<MultiplexedConnection>,
    rate: DecidedRate,
    started: Instant,
    current: WatchReading,
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The sale is over (see [`SaleSnapshot::is_over`]).
    Over,
    /// Stopped from outside (ctrl-c, SIGTERM) before that.
    Stopped,
}

impl SaleWatcher {
    /// Connect once. A failure here (unreachable, bad credentials, not Redis) is returned: nothing
    /// was watched yet, and the message names the address. Later failures are readings.
    pub async fn connect(url: &str, password: Option<&str>, engine: Option<EngineKind>) -> Result<Self> {
        let (conn, addr) = connect(url, password).await?;
        Ok(SaleWatcher {
            url: url.to_string(),
            password: password.map(str::to_string),
            engine,
            conn: Some(conn),
            rate: DecidedRate::default(),
            started: Instant::now(),
            current: WatchReading {
                redis: addr,
                connected: true,
                error: None,
                available: None,
                stock: None,
                completed: 0,
                rejected: 0,
                customers_waiting: 0,
                orders_waiting: 0,
                orders_per_second: 0.0,
                over: false,
                problems: Vec::new(),
                engine: None,
                elapsed_seconds: 0.0,
                last: false,
            },
        })
    }

    /// The latest reading.
    pub fn current(&self) -> &WatchReading {
        &self.current
    }

    /// Read the sale now. Never fails: a failure is reported in the reading and, when the
    /// connection is the problem, the next call connects again.
    pub async fn read(&mut self) -> &WatchReading {
        let outcome = match tokio::time::timeout(READ_TIMEOUT, self.read_once()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EngineError::Other(format!("no answer within {}s", READ_TIMEOUT.as_secs()))),
        };
        let now = Instant::now();
        let r = &mut self.current;
        r.elapsed_seconds = round_to(now.duration_since(self.started).as_secs_f64(), 1000.0);
        match outcome {
            Ok((sale, problems, engine)) => {
                r.connected = true;
                r.error = None;
                r.available = sale.available();
                r.stock = sale.stock();
                r.completed = sale.completed;
                r.rejected = sale.rejected;
                r.customers_waiting = sale.customers_waiting;
                r.orders_waiting = sale.orders_queued;
                r.orders_per_second = round_to(self.rate.record(now, sale.decided()), 10.0);
                r.over = sale.is_over();
                r.problems = problems;
                r.engine = engine;
            }
            Err(e) => {
                let lost = connection_lost(&e);
                if lost {
                    self.conn = None;
                }
                r.connected = !lost;
                r.error = Some(e.to_string());
            }
        }
        &self.current
    }

    async fn read_once(&mut self) -> Result<(SaleSnapshot, Vec<String>, Option<EngineHealth>)> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(connect(&self.url, self.password.as_deref()).await?.0),
        };
        let sale = read_sale(conn).await?;
        match self.engine {
            Some(kind) => {
                let health = engine_health(conn, kind).await?;
                let problems = if health.healthy { Vec::new() } else { vec![health.summary.clone()] };
                Ok((sale, problems, Some(health)))
            }
            None => Ok((sale, sale_problems(conn).await?, None)),
        }
    }
}

/// `v` rounded to 1/`per` (readable JSON: 120.4 orders/s, 3.216 s).
fn round_to(v: f64, per: f64) -> f64 {
    (v * per).round() / per
}

/// Does this failure mean the connection is gone (rather than a reply we could not use)?
fn connection_lost(e: &EngineError) -> bool {
    match e {
        EngineError::Command { source, .. } => source.is_io_error() || source.is_unrecoverable_error(),
        EngineError::Protocol { .. } => false,
        // connecting failed, or no answer in time
        _ => true,
    }
}

/// Read the sale every `interval` and hand each reading to `show` until the sale is over or
/// `stop` resolves. Returns the last reading, marked final (the one that found the sale over is
/// not shown: it is the final one), and why the watch ended. An error from `show` (e.g. a closed
/// pipe) ends the watch with that error.
pub async fn follow(
    watcher: &mut SaleWatcher,
    interval: Duration,
    stop: impl Future<Output = ()>,
    mut show: impl FnMut(&WatchReading) -> std::io::Result<()>,
) -> Result<(WatchReading, WatchEnd)> {
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        // `stop` first, so that a signal handler is in place before the first reading is shown
        tokio::select! {
            biased;
            _ = &mut stop => break WatchEnd::Stopped,
            _ = ticks.tick() => {}
        }
        let reading = tokio::select! {
            biased;
            _ = &mut stop => break WatchEnd::Stopped,
            reading = watcher.read() => reading,
        };
        if reading.over {
            break WatchEnd::Over;
        }
        show(reading)?;
    };
    let mut last = watcher.current().clone();
    last.elapsed_seconds = round_to(watcher.started.elapsed().as_secs_f64(), 1000.0);
    last.last = true;
    Ok((last, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_spans_the_window_and_restarts_when_the_count_drops() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rate = DecidedRate::default();
        assert_eq!(rate.record(at(0), 0), 0.0);
        assert_eq!(rate.record(at(500), 50), 100.0);
        assert_eq!(rate.record(at(1000), 100), 100.0);
        assert_eq!(rate.record(at(2000), 100), 50.0); // 100 orders over 2 s
        assert_eq!(rate.record(at(2500), 100), 25.0); // 50 orders since 0.5 s
        assert_eq!(rate.record(at(4500), 100), 0.0); // nothing in the last 2 s
        // a new, smaller sale: only what happened since counts
        assert_eq!(rate.record(at(5000), 10), 0.0);
        assert_eq!(rate.record(at(5500), 30), 40.0);
        // readings further apart than the window: the rate of the last interval
        let mut slow = DecidedRate::default();
        slow.record(at(0), 0);
        slow.record(at(5000), 500);
        assert_eq!(slow.record(at(10_000), 600), 20.0);
    }

    #[test]
    fn a_sale_is_over_when_sold_out_and_every_order_is_decided() {
        let over = SaleSnapshot { product: Some(0), completed: 10, rejected: 3, ..Default::default() };
        assert!(over.is_over());
        assert_eq!((over.available(), over.stock(), over.decided()), (Some(0), Some(10), 13));
        assert!(!SaleSnapshot { orders_queued: 1, ..over.clone() }.is_over(), "an order waits for its answer");
        assert!(!SaleSnapshot { customers_waiting: 1, ..over.clone() }.is_over(), "a customer's order is coming");
        assert!(!SaleSnapshot { product: Some(1), ..over.clone() }.is_over(), "stock left");
        assert!(!SaleSnapshot { product: None, ..over.clone() }.is_over(), "no sale yet");
        assert!(SaleSnapshot { product: Some(-3), ..over }.is_over(), "a negative stock sells nothing");
    }

    #[test]
    fn reading_serializes_with_stable_names() {
        let r = WatchReading {
            redis: "h:1".into(),
            connected: true,
            error: None,
            available: Some(2),
            stock: Some(5),
            completed: 3,
            rejected: 1,
            customers_waiting: 4,
            orders_waiting: 6,
            orders_per_second: 1.5,
            over: false,
            problems: vec![],
            engine: None,
            elapsed_seconds: 0.5,
            last: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "available",
                "completed",
                "connected",
                "customersWaiting",
                "elapsedSeconds",
                "engine",
                "error",
                "final",
                "ordersPerSecond",
                "ordersWaiting",
                "over",
                "problems",
                "redis",
                "rejected",
                "stock"
            ]
        );
        assert_eq!(v["final"], true);
    }

    #[test]
    fn only_connection_failures_drop_the_connection() {
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(connection_lost(&EngineError::command("GET", io)));
        let wrongtype = redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"));
        assert!(!connection_lost(&EngineError::command("XLEN", wrongtype)));
        assert!(!connection_lost(&EngineError::Protocol { command: "GET product".into(), detail: "x".into() }));
        assert!(connection_lost(&EngineError::Other("no answer within 5s".into())));
    }
}
