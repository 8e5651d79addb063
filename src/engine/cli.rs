//! Subcommands of the engine side: `load`, `process`, `simulate`, `sale`.
//! Mounted into the binary's clap `Subcommand` enum as `Load(LoadArgs)`, `Process(ProcessArgs)`,
//! `Simulate(SimulateArgs)`, `Sale(SaleArgs)`.

use std::time::Duration;

use clap::Args;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::watch;

use super::native::{Worker, WorkerConfig};
use super::{
    EngineError, EngineKind, ProcessingSettings, Result, connect, connect_manager, engine_health, load_scripts,
    module_list, read_sale, require_timeseries,
};
use crate::simulator::{self, SimulatorConfig};

/// Where Redis is.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379 or redis://:password@host:6379/0
    #[arg(long = "redis", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// Password, used when the URL has none.
    #[arg(long = "redis-password", env = "REDIS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl RedisArgs {
    pub async fn connect(&self) -> Result<(MultiplexedConnection, String)> {
        connect(&self.url, self.password.as_deref()).await
    }

    /// A reconnecting connection (for long-running loops).
    pub async fn connect_manager(&self) -> Result<(ConnectionManager, String)> {
        connect_manager(&self.url, self.password.as_deref()).await
    }
}

/// Batch and interval settings.
#[derive(Args, Debug, Clone)]
pub struct SettingsArgs {
    /// Orders per batch.
    #[arg(long, env = "POPUP_BATCH_SIZE", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// TimeSeries sampling interval in seconds.
    #[arg(long, env = "POPUP_METRICS_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub metrics_interval_seconds: f64,
}

impl SettingsArgs {
    pub fn settings(&self) -> Result<ProcessingSettings> {
        if !(self.metrics_interval_seconds.is_finite() && self.metrics_interval_seconds >= 0.001) {
            return Err(EngineError::Other(format!(
                "--metrics-interval-seconds must be at least 0.001, got {}",
                self.metrics_interval_seconds
            )));
        }
        Ok(ProcessingSettings {
            batch_size: self.batch_size,
            metrics_interval: Duration::from_secs_f64(self.metrics_interval_seconds),
        })
    }
}

/// `load`: install the engine's scripts into Redis (idempotent).
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Processing engine.
    #[arg(long, value_enum, env = "POPUP_ENGINE", default_value_t = EngineKind::Native)]
    pub engine: EngineKind,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `process`: run the native worker until SIGTERM / ctrl-c.
#[derive(Args, Debug, Clone)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Consumer name in the group (default: $HOSTNAME, i.e. the pod name, else popup-<pid>).
    #[arg(long, env = "POPUP_CONSUMER")]
    pub consumer: Option<String>,
    /// Claim other consumers' pending orders idle longer than this (ms).
    #[arg(long, default_value_t = 10_000)]
    pub claim_idle_millis: u64,
    /// Do not run the TimeSeries sampler in this process.
    #[arg(long)]
    pub no_sampler: bool,
    /// Only sample TimeSeries (e.g. to fill idle gaps next to the triggers engine).
    #[arg(long, conflicts_with = "no_sampler")]
    pub sample_only: bool,
}

/// `simulate`: generate customers and orders.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Units of product.
    #[arg(long, default_value_t = 100)]
    pub stock: i64,
    /// Customers to send (0 = until the product is sold out).
    #[arg(long, default_value_t = 0)]
    pub customers: u64,
    /// Random gap between customers: 0..N ms.
    #[arg(long, default_value_t = 100)]
    pub max_arrival_millis: u64,
    /// Random delay before a customer orders: 0..N ms.
    #[arg(long, default_value_t = 1000)]
    pub max_order_delay_millis: u64,
    /// Fixed arrival rate (customers per second) instead of random gaps.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Delete the sale's keys first (queues, product, ts:*, popup:*).
    #[arg(long)]
    pub reset: bool,
    /// Afterwards wait up to N seconds until every order sent was completed or rejected
    /// (exit code 3 if not).
    #[arg(long)]
    pub wait_complete: Option<u64>,
    /// Stop sending customers after N seconds.
    #[arg(long)]
    pub max_seconds: Option<u64>,
    /// Print the summary as JSON (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// `sale`: print the sale's numbers.
#[derive(Args, Debug, Clone)]
pub struct SaleArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Also show the health of this engine.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
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
    let mods = module_list(&mut conn).await?;
    require_timeseries(&addr, &mods)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing the current batch");
        let _ = tx.send(true);
    });
    if args.sample_only {
        tracing::info!(%addr, "sampling TimeSeries only");
        super::native::sampler_loop(conn, settings, rx).await;
        return Ok(());
    }
    let consumer = args
        .consumer
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("popup-{}", std::process::id()));
    let mut cfg = WorkerConfig::new(consumer, settings);
    cfg.claim_idle = Duration::from_millis(args.claim_idle_millis);
    cfg.sample = !args.no_sampler;
    tracing::info!(%addr, consumer = %cfg.consumer, "processing orders");
    let stats = Worker::new(conn, cfg).run(rx).await?;
    println!("{}", serde_json::to_string(&stats).unwrap_or_else(|_| format!("{stats:?}")));
    Ok(())
}

pub async fn run_simulate(args: SimulateArgs) -> Result<()> {
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(EngineError::Other("--rate must be a positive number of customers per second".into()));
    }
    let (mut conn, addr) = args.redis.connect().await?;
    let cfg = SimulatorConfig {
        stock: args.stock,
        customers: args.customers,
        max_arrival: Duration::from_millis(args.max_arrival_millis),
        max_order_delay: Duration::from_millis(args.max_order_delay_millis),
        rate: args.rate,
        reset: args.reset,
        wait_complete: args.wait_complete.map(Duration::from_secs),
        max_duration: args.max_seconds.map(Duration::from_secs),
    };
    eprintln!(
        "simulating on {addr}: stock {}, customers {}",
        cfg.stock,
        if cfg.customers == 0 { "until sold out".to_string() } else { cfg.customers.to_string() }
    );
    let summary = simulator::run(&mut conn, &cfg, |p| {
        eprintln!(
            "customers {} orders {} completed {} rejected {} product {}",
            p.customers,
            p.orders,
            p.completed,
            p.rejected,
            p.product.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
        )
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        println!(
            "customers {} | orders {} | completed {} | rejected {} | product left {} | {:.2}s ({:.0} customers/s){}",
            summary.customers,
            summary.orders,
            summary.completed,
            summary.rejected,
            summary.product_left.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            summary.duration_secs,
            summary.customers_per_sec,
            if cfg.wait_complete.is_some() && !summary.all_processed { " | NOT all orders processed" } else { "" }
        );
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

pub async fn run_sale(args: SaleArgs) -> Result<()> {
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
