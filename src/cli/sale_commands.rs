//! The sale half's commands: `load`, `process`, `simulate`, `sale` (and `sale --watch`, whose loop is
//! `sale::watch` and whose output is `watch_view`): their clap arguments and what each one runs and
//! prints. Mounted into [`super::Command`] as `Load(LoadArgs)`, `Process(ProcessArgs)`,
//! `Simulate(SimulateArgs)`, `Sale(SaleArgs)`.

use std::time::Duration;

use clap::Args;
use clap::builder::PossibleValue;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::watch;

use super::simulate_view::SimulateView;
use super::watch_view::WatchView;
use crate::flags::{self, ProcessArgs, RedisArgs, SettingsArgs, SimulateArgs, whole_in};
use crate::limits::{self, FloatBounds};
use crate::sale::marker;
use crate::sale::native::{self, Worker, WorkerConfig};
use crate::sale::simulator::{self, Resilience, SimulationSummary, SimulatorConfig};
use crate::sale::watch::{SaleWatcher, follow};
use crate::sale::{
    EngineError, EngineKind, ProcessingSettings, Result, connect, connect_manager, connection_info, engine_health,
    load_scripts, read_sale,
};

/// `--engine <ENGINE>`: the engine's name, and a line about it in `--help`.
impl clap::ValueEnum for EngineKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[EngineKind::Gears, EngineKind::Triggers, EngineKind::Native]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()).help(self.description()))
    }
}

/// `sale --watch` and `dashboard`: how often to read.
fn watch_interval(s: &str) -> std::result::Result<u64, String> {
    whole_in(s, limits::cli::WATCH_INTERVAL_MILLIS, "milliseconds")
}

// The flags of `process` and `simulate` (and `load`, which shares them) live in `crate::flags`, where
// the builders write them into the pods; connecting and running are the command line's.

impl RedisArgs {
    pub async fn connect(&self) -> Result<(MultiplexedConnection, String)> {
        connect(&self.url, self.password.as_deref()).await
    }

    /// A reconnecting connection (for long-running loops).
    pub async fn connect_manager(&self) -> Result<(ConnectionManager, String)> {
        connect_manager(&self.url, self.password.as_deref()).await
    }
}

impl SettingsArgs {
    pub fn settings(&self) -> Result<ProcessingSettings> {
        // the parser already bounds it; this guards values set in code
        let metrics_interval = flags::metrics_interval(&self.metrics_interval_seconds.to_string())
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                let FloatBounds { min, max } = limits::cli::METRICS_INTERVAL_SECONDS;
                EngineError::Other(format!(
                    "--metrics-interval-seconds must be between {min} and {max}, got {}",
                    self.metrics_interval_seconds
                ))
            })?;
        Ok(ProcessingSettings { batch_size: self.batch_size, metrics_interval })
    }
}

/// `load`: install the engine's scripts into Redis (idempotent).
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Processing engine (required: the one of this Redis, e.g. the store's spec.engine).
    #[arg(long, value_enum, env = "POPUP_ENGINE")]
    pub engine: EngineKind,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `sale`: print the sale's numbers, once or (`--watch`) until the sale is over.
#[derive(Args, Debug, Clone)]
pub struct SaleArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Also show the health of this engine.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// JSON output (with --watch: one object per line and reading).
    #[arg(long)]
    pub json: bool,
    /// Follow the sale live until it is over (sold out and both queues empty) or ctrl-c: a progress
    /// bar on a terminal, else a line per change. Keeps retrying when Redis goes away meanwhile.
    #[arg(long)]
    pub watch: bool,
    #[arg(long, default_value_t = limits::cli::DEFAULT_WATCH_INTERVAL_MILLIS, value_parser = watch_interval,
          allow_negative_numbers = true, requires = "watch",
          help = format!("How often --watch reads the sale (ms, {}–{})",
                         limits::cli::WATCH_INTERVAL_MILLIS.min, limits::cli::WATCH_INTERVAL_MILLIS.max))]
    pub interval_millis: u64,
}

/// The charts' time windows of `dashboard` (`--window`, and ←/→ while it runs).
pub const WINDOWS: [(&str, i64); 5] =
    [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("6h", 21_600_000)];

fn window(s: &str) -> std::result::Result<usize, String> {
    WINDOWS.iter().position(|(name, _)| *name == s.trim()).ok_or_else(|| {
        let names: Vec<&str> = WINDOWS.iter().map(|(n, _)| *n).collect();
        format!("must be one of {}", names.join(", "))
    })
}

#[derive(Args, Debug, Clone)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[arg(long, default_value_t = limits::cli::DEFAULT_WATCH_INTERVAL_MILLIS, value_parser = watch_interval,
          allow_negative_numbers = true,
          help = format!("How often to read Redis and redraw (ms, {}–{})",
                         limits::cli::WATCH_INTERVAL_MILLIS.min, limits::cli::WATCH_INTERVAL_MILLIS.max))]
    pub interval_millis: u64,
    /// The charts' time window at start: 1m, 5m, 15m, 1h or 6h (←/→ change it while it runs).
    #[arg(long = "window", default_value = "5m", value_parser = window)]
    pub window: usize,
}

pub async fn run_load(args: LoadArgs) -> Result<()> {
    let settings = args.settings.settings()?;
    let (mut conn, addr) = args.redis.connect().await?;
    let outcome = load_scripts(&mut conn, args.engine, &settings).await?;
    println!("{} engine on {addr}: {outcome:?}", args.engine);
    Ok(())
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run_process(args: ProcessArgs) -> Result<()> {
    let settings = args.settings.settings()?;
    let (mut conn, addr) = args.redis.connect_manager().await?;
    native::require_modules(&mut conn, &addr).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing the current batch");
        let _ = tx.send(true);
    });
    if args.sample_only {
        tracing::info!(%addr, "sampling TimeSeries only");
        native::sampler_loop(conn, settings, rx).await;
        return Ok(());
    }
    let consumer = args
        .consumer
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("popup-{}", std::process::id()));
    let mut cfg = WorkerConfig::new(consumer, settings);
    cfg.sample = !args.no_sampler;
    tracing::info!(%addr, consumer = %cfg.consumer, "processing orders");
    let stats = Worker::new(conn, cfg).run(rx).await?;
    println!("{}", serde_json::to_string(&stats).unwrap_or_else(|_| format!("{stats:?}")));
    Ok(())
}

pub async fn run_simulate(args: SimulateArgs) -> Result<()> {
    let mut cfg = SimulatorConfig {
        stock: args.stock,
        customers: args.customers,
        max_arrival: Duration::from_millis(args.max_arrival_millis),
        max_order_delay: Duration::from_millis(args.max_order_delay_millis),
        rate: args.rate,
        reset: args.reset,
        join: args.join_sale.clone(),
        wait_complete: args.wait_complete.map(Duration::from_secs),
        max_duration: args.max_seconds.map(Duration::from_secs),
    };
    let resilience = Resilience { retry_for: Duration::from_secs(args.reconnect_seconds) };
    let addr = connection_info(&args.redis.url, args.redis.password.as_deref())?.1;
    if let Some(id) = &args.join_sale {
        // The stock is the sale's: read it for the progress bar (the run checks it again). Redis may not be
        // reachable yet from a Job's new pod: wait for it as the run would.
        let warn: simulator::Warn = std::sync::Arc::new(simulator::log_warning);
        let (mut conn, _) =
            simulator::first_connection(&args.redis.url, args.redis.password.as_deref(), resilience.retry_for, &warn)
                .await?;
        cfg.stock = marker::joined_stock(&mut conn, id)
            .await?
            .ok_or_else(|| EngineError::Other(simulator::no_sale(&addr, id)))?;
        eprintln!("joining sale {id}");
    }
    eprintln!(
        "simulating on {addr}: stock {}, customers {}",
        cfg.stock,
        if cfg.stock == 0 {
            "none (no stock)".to_string()
        } else if cfg.customers == 0 {
            "until sold out".to_string()
        } else {
            cfg.customers.to_string()
        }
    );
    let mut view = SimulateView::new(cfg.customers, cfg.stock);
    let warn = view.warner();
    let summary = simulator::run_resilient(
        &args.redis.url,
        args.redis.password.as_deref(),
        &cfg,
        &resilience,
        |p| view.show(p),
        warn,
    )
    .await
    .inspect_err(|_| view.clear())?;
    view.finish(&summary);
    print_summary(&summary, args.json, cfg.wait_complete.is_some());
    if let Some(error) = summary.error {
        return Err(EngineError::Other(format!(
            "{error} (sent {} customers and {} orders; {} customers got no order)",
            summary.customers, summary.orders, summary.orders_not_sent
        )));
    }
    if let Some(secs) = args.wait_complete
        && !summary.all_processed
    {
        return Err(EngineError::Timeout {
            what: format!(
                "all {} orders to be processed ({} decided); is an engine running (popup-operator load / process)?",
                summary.orders,
                summary.completed + summary.rejected
            ),
            secs,
        });
    }
    Ok(())
}

fn print_summary(summary: &SimulationSummary, json: bool, waited: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(summary).unwrap_or_default());
        return;
    }
    let mut line = format!(
        "customers {} | orders {} | completed {} | rejected {} | product left {} | {:.0} customers/s \
         (arrivals {:.2}s, all sent {:.2}s, total {:.2}s)",
        summary.customers,
        summary.orders,
        summary.completed,
        summary.rejected,
        summary.product_left.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
        summary.customers_per_sec,
        summary.arrival_secs,
        summary.send_secs,
        summary.duration_secs,
    );
    if let (Some(target), true) = (summary.target_rate, summary.behind_rate) {
        line.push_str(&format!(
            " | BEHIND --rate {target} (lowest {:.0}/s)",
            summary.lowest_rate.unwrap_or(summary.customers_per_sec)
        ));
    }
    if summary.reconnects > 0 {
        line.push_str(&format!(" | {} reconnect(s)", summary.reconnects));
    }
    if summary.error.is_some() {
        line.push_str(&format!(" | STOPPED EARLY, {} orders not sent", summary.orders_not_sent));
    } else if waited && !summary.all_processed {
        line.push_str(" | NOT all orders processed");
    }
    println!("{line}");
}

pub async fn run_sale(args: SaleArgs) -> Result<()> {
    if args.watch {
        return watch_sale(args).await;
    }
    let (mut conn, addr) = args.redis.connect().await?;
    let sale = read_sale(&mut conn).await?;
    let health = match args.engine {
        Some(kind) => Some(engine_health(&mut conn, kind).await?),
        None => None,
    };
    if args.json {
        let v = serde_json::json!({ "redis": addr, "sale": sale, "engine": health });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("redis              {addr}");
        println!("product            {}", sale.product.map(|v| v.to_string()).unwrap_or_else(|| "-".into()));
        println!("customers waiting  {}", sale.customers_waiting);
        println!("orders queued      {}", sale.orders_queued);
        println!("completed          {}", sale.completed);
        println!("rejected           {}", sale.rejected);
        if let Some(h) = health {
            println!(
                "engine {:<12}{} ({})",
                h.kind.as_str(),
                if h.healthy { "healthy" } else { "UNHEALTHY" },
                h.summary
            );
        }
    }
    Ok(())
}

/// `sale --watch`: Redis must answer at the start (the error names the address); afterwards an
/// outage is shown and retried until the sale is over or ctrl-c, both exit code 0.
async fn watch_sale(args: SaleArgs) -> Result<()> {
    let mut watcher = SaleWatcher::connect(&args.redis.url, args.redis.password.as_deref(), args.engine).await?;
    let mut view = WatchView::new(args.json);
    let interval = Duration::from_millis(args.interval_millis);
    let ended = follow(&mut watcher, interval, shutdown_signal(), |r| view.show(r)).await;
    let outcome = match ended {
        Ok((last, end)) => view.finish(&last, end).map_err(EngineError::Io),
        Err(e) => Err(e),
    };
    match outcome {
        // the reader went away (`sale --watch | head`): nobody is left to tell
        Err(EngineError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
