//! The command lines of a store's own pods: `process` (the native engine's processor) and `simulate`
//! (the simulator Job). One clap type each, which the command line parses (`cli`) and the builders
//! write back into the pods' arguments (`to_args`, used by `render`), so a renamed or re-bounded flag
//! is one edit, and `cli::tests` parses every rendered command line again.
//!
//! Only arguments live here, and their bounds (from `limits`); what the commands do with them is
//! `cli`'s (connecting, running the sale's code). Imports nothing of the crate but `limits`.

use clap::Args;

use crate::limits::{self, Bounds, FloatBounds};

// ---- bounded numeric flags -----------------------------------------------------------------------
// Every number a user (or an environment variable) can pass is checked by clap against a range, so
// a hostile value ends in clap's usual `invalid value '…' for '--flag <FLAG>': …` and exit code 2
// instead of an overflow or a nonsense run. The bounds are also in each flag's help.

/// A whole number within `bounds`. Parsed as i128 so that a negative or a too large value gets the
/// range message rather than a parse error; the bounds fit every caller's type.
pub(crate) fn whole_in<T: TryFrom<i128>>(text: &str, bounds: Bounds, unit: &str) -> Result<T, String> {
    let Bounds { min, max } = bounds;
    let message = || format!("must be a whole number from {min} to {max} ({unit})");
    let v: i128 = text.trim().parse().map_err(|_| message())?;
    if !bounds.contains(v) {
        return Err(message());
    }
    T::try_from(v).map_err(|_| message())
}

/// A finite number within `bounds` (NaN and infinities are refused).
pub(crate) fn number_in(text: &str, bounds: FloatBounds, unit: &str) -> Result<f64, String> {
    let FloatBounds { min, max } = bounds;
    let message = || format!("must be a number from {min} to {max} ({unit})");
    let v: f64 = text.trim().parse().map_err(|_| message())?;
    if !v.is_finite() || v < min || v > max {
        return Err(message());
    }
    Ok(v)
}

fn batch_size(s: &str) -> Result<u32, String> {
    whole_in(s, limits::BATCH_SIZE, "orders per batch")
}
pub(crate) fn metrics_interval(s: &str) -> Result<f64, String> {
    number_in(s, limits::cli::METRICS_INTERVAL_SECONDS, "seconds")
}
fn stock(s: &str) -> Result<i64, String> {
    whole_in(s, limits::STOCK, "units")
}
fn customers(s: &str) -> Result<u64, String> {
    whole_in(s, limits::CUSTOMERS, "customers, 0 = until sold out")
}
fn millis(s: &str) -> Result<u64, String> {
    whole_in(s, limits::cli::DELAY_MILLIS, "milliseconds")
}
fn rate(s: &str) -> Result<f64, String> {
    number_in(s, limits::cli::RATE_PER_SECOND, "customers per second")
}
fn wait_seconds(s: &str) -> Result<u64, String> {
    whole_in(s, limits::cli::WAIT_SECONDS, "seconds")
}
fn run_seconds(s: &str) -> Result<u64, String> {
    whole_in(s, limits::cli::RUN_SECONDS, "seconds")
}
fn reconnect_seconds(s: &str) -> Result<u64, String> {
    whole_in(s, limits::cli::RECONNECT_SECONDS, "seconds, 0 = stop at the first failure")
}

/// `--flag value` for each present value, in order.
fn pairs<'a>(flags: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Vec<String> {
    flags.into_iter().filter_map(|(flag, value)| Some([flag.to_string(), value?])).flatten().collect()
}

/// Where Redis is.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379 or redis://:password@host:6379/0
    #[arg(long = "redis", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// Password, used when the URL has none.
    #[arg(long = "redis-password", env = "REDIS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl RedisArgs {
    /// `url` as a user with no password on the command line (a pod gets it as `REDIS_PASSWORD`).
    pub fn at(url: String) -> Self {
        Self { url, password: None }
    }

    /// `--redis <url>`. A password is never written into a command line, where `ps` and the pod's
    /// spec show it: it goes by `REDIS_PASSWORD`.
    pub fn to_args(&self) -> Vec<String> {
        assert!(self.password.is_none(), "a password is passed by REDIS_PASSWORD, not on the command line");
        pairs([("--redis", Some(self.url.clone()))])
    }
}

/// Batch and interval settings.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct SettingsArgs {
    #[arg(long, env = "POPUP_BATCH_SIZE", default_value_t = limits::DEFAULT_BATCH_SIZE, value_parser = batch_size,
          allow_negative_numbers = true,
          help = format!("Orders per batch ({}–{})", limits::BATCH_SIZE.min, limits::BATCH_SIZE.max))]
    pub batch_size: u32,
    #[arg(long, env = "POPUP_METRICS_INTERVAL_SECONDS",
          default_value_t = f64::from(limits::DEFAULT_METRICS_INTERVAL_SECONDS), value_parser = metrics_interval,
          allow_negative_numbers = true, help = {
              let FloatBounds { min, max } = limits::cli::METRICS_INTERVAL_SECONDS;
              format!("TimeSeries sampling interval in seconds ({min}–{max})")
          })]
    pub metrics_interval_seconds: f64,
}

impl SettingsArgs {
    pub fn to_args(&self) -> Vec<String> {
        pairs([
            ("--batch-size", Some(self.batch_size.to_string())),
            ("--metrics-interval-seconds", Some(self.metrics_interval_seconds.to_string())),
        ])
    }
}

/// `process`: run the native worker until SIGTERM / ctrl-c.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Worker name, for its heartbeat key popup:worker:<name> (default: $HOSTNAME, i.e. the pod
    /// name, else popup-<pid>).
    #[arg(long, env = "POPUP_CONSUMER", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub consumer: Option<String>,
    /// Do not run the TimeSeries sampler in this process.
    #[arg(long)]
    pub no_sampler: bool,
    /// Only sample TimeSeries (e.g. to fill idle gaps next to the triggers engine).
    #[arg(long, conflicts_with = "no_sampler")]
    pub sample_only: bool,
}

impl ProcessArgs {
    /// The whole command line, subcommand first.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["process".to_string()];
        args.extend(self.redis.to_args());
        args.extend(self.settings.to_args());
        args.extend(pairs([("--consumer", self.consumer.clone())]));
        args.extend(switches([("--no-sampler", self.no_sampler), ("--sample-only", self.sample_only)]));
        args
    }
}

/// The flags of the switches that are on.
fn switches<'a>(flags: impl IntoIterator<Item = (&'a str, bool)>) -> impl Iterator<Item = String> {
    flags.into_iter().filter(|(_, on)| *on).map(|(flag, _)| flag.to_string())
}

/// `simulate`: generate customers and orders.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[arg(long, default_value_t = limits::cli::DEFAULT_STOCK, value_parser = stock, allow_negative_numbers = true,
          help = format!("Units of product ({}–{}; 0 sends no customers)", limits::STOCK.min, limits::STOCK.max))]
    pub stock: i64,
    #[arg(long, default_value_t = limits::DEFAULT_CUSTOMERS, value_parser = customers, allow_negative_numbers = true,
          help = format!("Customers to send ({}–{}; 0 = until the product is sold out)",
                         limits::CUSTOMERS.min, limits::CUSTOMERS.max))]
    pub customers: u64,
    #[arg(long, default_value_t = limits::DEFAULT_MAX_ARRIVAL_MILLIS.into(), value_parser = millis,
          allow_negative_numbers = true,
          help = format!("Random gap between customers: 0..N ms (N up to {})", limits::cli::DELAY_MILLIS.max))]
    pub max_arrival_millis: u64,
    #[arg(long, default_value_t = limits::DEFAULT_MAX_ORDER_DELAY_MILLIS.into(), value_parser = millis,
          allow_negative_numbers = true,
          help = format!("Random delay before a customer orders: 0..N ms (N up to {})", limits::cli::DELAY_MILLIS.max))]
    pub max_order_delay_millis: u64,
    #[arg(long, value_parser = rate, allow_negative_numbers = true, help = {
        let FloatBounds { min, max } = limits::cli::RATE_PER_SECOND;
        format!("Fixed arrival rate (customers per second, {min}–{max}) instead of random gaps")
    })]
    pub rate: Option<f64>,
    /// Delete the sale's keys first (queues, product, ts:*, popup:*).
    #[arg(long)]
    pub reset: bool,
    /// Join the sale the operator started with this id (a store's `status.startedSale.id`) instead of
    /// setting one up: the stock is the sale's, nothing is reset, and customers are sent only while
    /// Redis holds that sale. What the store's simulator Job runs.
    #[arg(long, value_name = "SALE_ID", conflicts_with_all = ["reset", "stock"])]
    pub join_sale: Option<String>,
    #[arg(long, value_parser = wait_seconds, allow_negative_numbers = true, help = format!(
        "Afterwards wait up to N seconds ({}–{}) until every order sent was completed or rejected (exit code 3 if not)",
        limits::cli::WAIT_SECONDS.min, limits::cli::WAIT_SECONDS.max
    ))]
    pub wait_complete: Option<u64>,
    #[arg(long, value_parser = run_seconds, allow_negative_numbers = true, help = format!(
        "Stop sending customers after N seconds ({}–{}); a longer arrival gap or order delay is cut there",
        limits::cli::RUN_SECONDS.min, limits::cli::RUN_SECONDS.max
    ))]
    pub max_seconds: Option<u64>,
    #[arg(long, default_value_t = limits::cli::DEFAULT_RECONNECT_SECONDS, value_parser = reconnect_seconds,
          allow_negative_numbers = true, help = format!(
              "When Redis goes away mid-run, keep retrying for up to N seconds ({}–{}; 0 = stop at the first \
               failure) before stopping with a summary of what was sent",
              limits::cli::RECONNECT_SECONDS.min, limits::cli::RECONNECT_SECONDS.max
          ))]
    pub reconnect_seconds: u64,
    /// Print the summary as JSON (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl SimulateArgs {
    /// A run that joins sale `id` at `redis`, every other flag at its default.
    pub fn joining(redis: RedisArgs, id: String) -> Self {
        Self {
            redis,
            stock: limits::cli::DEFAULT_STOCK,
            customers: limits::DEFAULT_CUSTOMERS,
            max_arrival_millis: limits::DEFAULT_MAX_ARRIVAL_MILLIS.into(),
            max_order_delay_millis: limits::DEFAULT_MAX_ORDER_DELAY_MILLIS.into(),
            rate: None,
            reset: false,
            join_sale: Some(id),
            wait_complete: None,
            max_seconds: None,
            reconnect_seconds: limits::cli::DEFAULT_RECONNECT_SECONDS,
            json: false,
        }
    }

    /// The whole command line, subcommand first. The crowd's settings are always written (a reader of
    /// the Job sees them all); the rest only where it differs from its default. `--stock` is the
    /// sale's when joining one, so it is written only otherwise.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["simulate".to_string()];
        args.extend(self.redis.to_args());
        let stock =
            (self.join_sale.is_none() && self.stock != limits::cli::DEFAULT_STOCK).then(|| self.stock.to_string());
        let reconnect = (self.reconnect_seconds != limits::cli::DEFAULT_RECONNECT_SECONDS)
            .then(|| self.reconnect_seconds.to_string());
        args.extend(pairs([
            ("--join-sale", self.join_sale.clone()),
            ("--stock", stock),
            ("--customers", Some(self.customers.to_string())),
            ("--max-arrival-millis", Some(self.max_arrival_millis.to_string())),
            ("--max-order-delay-millis", Some(self.max_order_delay_millis.to_string())),
            ("--rate", self.rate.map(|r| r.to_string())),
            ("--wait-complete", self.wait_complete.map(|s| s.to_string())),
            ("--max-seconds", self.max_seconds.map(|s| s.to_string())),
            ("--reconnect-seconds", reconnect),
        ]));
        args.extend(switches([("--reset", self.reset), ("--json", self.json)]));
        args
    }
}
