//! The command line of both halves, presentation only: the clap structs, what each subcommand runs,
//! and how it shows its results and failures (stdout, stderr, exit code). The work itself is the
//! operator's (`controller`, `render`, `crd`) or the sale's (`sale`); this module may import both.
//!
//! - [`operator_commands`]: `run`, `crd`, `render`;
//! - [`sale_commands`]: `load`, `process`, `simulate`, `sale` (views: `simulate_view`, [`watch_view`]),
//!   `dashboard` ([`dashboard_view`]); the arguments of `process` and `simulate` are [`crate::flags`]'
//!   (the store's pods run those commands, and `render` writes them).

pub mod dashboard_view;
pub mod operator_commands;
pub mod sale_commands;
mod simulate_view;
pub mod watch_view;

#[cfg(test)]
mod tests;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::flags::{ProcessArgs, SimulateArgs};
use crate::sale::EngineError;
use crate::telemetry::{self, LogFormat};
use operator_commands::{RenderArgs, RunArgs, render_file, run};
use sale_commands::{DashboardArgs, LoadArgs, SaleArgs, run_load, run_process, run_sale, run_simulate};

/// Kubernetes operator that turns a PopUpStore resource into a live flash-sale demo:
/// Redis with a processing engine, a Grafana dashboard and a load simulator.
#[derive(Parser)]
#[command(name = "popup-operator", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses ~/.kube/config, KUBECONFIG or the in-cluster service account).
    Run(RunArgs),
    /// Print the PopUpStore CustomResourceDefinition as YAML (what crds/popupstores.popup.dev.yaml holds;
    /// `bash hack/regen.sh` writes it).
    Crd,
    /// Print every object the operator would create for the PopUpStore(s) in a file, without a cluster.
    ///
    /// Uses the same builders as the controller. Passwords in the printed Secrets are freshly generated.
    Render(RenderArgs),
    /// Install or update a processing engine's scripts in a Redis (idempotent; gears, triggers, native).
    Load(LoadArgs),
    /// Run the native order processor (decides the oldest orders in atomic script calls) until SIGTERM; the native engine's pods.
    Process(ProcessArgs),
    /// Play the customers: set the stock, send customers and their orders, print a summary.
    Simulate(SimulateArgs),
    /// Print the sale's numbers, as the operator puts them into the status (--json for machines),
    /// or follow them live until the sale is over (--watch).
    Sale(SaleArgs),
    /// Show the sale full screen: the store's Grafana dashboard, in the terminal.
    ///
    /// The same panels as Grafana, from the same queries on the same keys (GET product, XLEN queue:*,
    /// TS.RANGE ts:*), redrawn live: stat tiles (Product Available or SOLD OUT, Percent Sold, Customers
    /// Ordering, Orders Processing, Orders Completed, Orders Rejected) and charts over a time window
    /// (Customers Overflow, Customers Ordering, Orders In Queue, Completed Flow, Throughput, Rejected
    /// Flow, Backlog). The store's read-only Grafana user is enough. When Redis goes away the last
    /// numbers stay on screen and it keeps retrying.
    ///
    /// Keys: ←/→ (or -/+) change the time window; q, Esc or Ctrl-C quit and give the terminal back.
    /// Needs a terminal: elsewhere (a pipe, CI) use `sale --watch` or `sale --json`.
    Dashboard(DashboardArgs),
}

/// Parses the command line, runs the subcommand, and turns its outcome into the exit code (after
/// `error: …` on stderr when it failed).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", crate::crd::crd_file());
            Ok(())
        }
        Command::Render(args) => render_file(&args).map_err(Failure::from),
        Command::Run(args) => tokio_main(run(args)).map_err(Failure::from),
        Command::Load(args) => engine_main(run_load(args)),
        Command::Process(args) => engine_main(run_process(args)),
        Command::Simulate(args) => engine_main(run_simulate(args)),
        Command::Sale(args) => engine_main(run_sale(args)),
        Command::Dashboard(args) => dashboard_main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("error: {message}");
            write_termination_message(&message);
            ExitCode::from(code)
        }
    }
}

/// Where Kubernetes reads a container's last words (the default `terminationMessagePath`).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// In a Kubernetes container, why the command failed goes to the termination log too: the operator
/// quotes it in the store's status (a simulator Job's SimulationComplete). Elsewhere the file does not
/// exist and nothing is written.
fn write_termination_message(message: &str) {
    if std::path::Path::new(TERMINATION_LOG).exists() {
        // Kubernetes keeps at most 4096 bytes of it.
        let mut end = message.len().min(4000);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let _ = std::fs::write(TERMINATION_LOG, &message[..end]);
    }
}

/// A failed command: what to print, and the exit code (2 = cannot run here, 3 = gave up waiting,
/// 1 = anything else).
struct Failure {
    message: String,
    code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, code: 1 }
    }
}

fn engine_main<F: std::future::Future<Output = Result<(), EngineError>>>(f: F) -> Result<(), Failure> {
    telemetry::init_logging(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(f).map_err(|e| Failure {
        code: if matches!(e, EngineError::Timeout { .. }) { 3 } else { 1 },
        message: e.to_string(),
    })
}

/// The dashboard's failures: no terminal is a usage error (exit code 2, like clap's), the rest 1.
fn dashboard_main(args: DashboardArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Failure { message: dashboard_view::not_a_terminal(), code: 2 });
    }
    tokio_main(dashboard_view::run(args)).map_err(Failure::from)
}

fn tokio_main<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(f)
}
