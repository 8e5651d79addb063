//! `popup-operator`: the controller and its companion commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use popup_operator::controller::{self, Config, Context, WatchScope, redis::LiveRedis};
use popup_operator::engine::EngineError;
use popup_operator::engine::cli::{
    LoadArgs, ProcessArgs, SaleArgs, SimulateArgs, run_load, run_process, run_sale, run_simulate,
};
use popup_operator::render::network_policy::{DEFAULT_OPERATOR_POD_SELECTOR, OperatorPods};
use popup_operator::render::{self, BuildInputs, PasswordSource};
use popup_operator::telemetry::{self, Health, LogFormat};

/// Kubernetes operator that turns a PopUpStore resource into a live flash-sale demo:
/// Redis with a processing engine, a Grafana dashboard and a load simulator.
#[derive(Parser)]
#[command(name = "popup-operator", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses ~/.kube/config, KUBECONFIG or the in-cluster service account).
    Run(RunArgs),
    /// Print the PopUpStore CustomResourceDefinition as YAML (the same as crds/popupstores.popup.dev.yaml).
    Crd,
    /// Print every object the operator would create for the PopUpStore(s) in a file, without a cluster.
    ///
    /// Uses the same builders as the controller. Passwords in the printed Secrets are freshly generated.
    Render(RenderArgs),
    /// Install or update a processing engine's scripts in a Redis (idempotent; gears, triggers, native).
    Load(LoadArgs),
    /// Run the native order processor (a consumer-group worker) until SIGTERM; the native engine's pods.
    Process(ProcessArgs),
    /// Play the customers: set the stock, send customers and their orders, print a summary.
    Simulate(SimulateArgs),
    /// Print the sale's numbers, as the operator puts them into the status (--json for machines),
    /// or follow them live until the sale is over (--watch).
    Sale(SaleArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the HTTP server with /healthz, /readyz and /metrics.
    #[arg(long, env = "POPUP_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Only watch these namespaces: repeat the flag or separate them with commas (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "POPUP_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Image of the simulator Job and the native processor (normally the operator's own image).
    #[arg(long, env = "POPUP_SELF_IMAGE", default_value = render::images::OPERATOR)]
    self_image: String,
    /// How the operator reaches each store's Redis, as a template with {name}, {namespace} and {service}
    /// (e.g. 127.0.0.1:6379 when running outside the cluster with a port-forward).
    /// Default: the Redis Service's cluster DNS name, {service}.{namespace}.svc:6379.
    #[arg(long, env = "POPUP_REDIS_ADDRESS")]
    redis_address: Option<String>,
    /// After a Redis password changes, how long the previous one stays valid when the operator cannot
    /// see who uses it (the admin password, a sidecar-mode Grafana), in seconds (0–86400).
    #[arg(long, env = "POPUP_ROTATION_GRACE_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    rotation_grace_seconds: u64,
    #[command(flatten)]
    operator_pods: OperatorPodArgs,
}

/// The operator's own pods, which each store's Redis NetworkPolicy lets in.
#[derive(clap::Args)]
struct OperatorPodArgs {
    /// Namespace of the operator's pods (the chart sets it). Default: the in-cluster service account's
    /// namespace; outside a cluster none, and the policy lets in only the store's own pods.
    #[arg(long, env = "POPUP_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Labels of the operator's pods, key=value[,key=value] (the chart sets its pods' selector labels).
    #[arg(long, env = "POPUP_OPERATOR_POD_SELECTOR", default_value = DEFAULT_OPERATOR_POD_SELECTOR)]
    operator_pod_selector: String,
}

/// Where a pod finds its service account's namespace.
const IN_CLUSTER_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl OperatorPodArgs {
    fn resolve(&self) -> Result<Option<OperatorPods>, String> {
        let namespace = self.operator_namespace.clone().filter(|ns| !ns.is_empty()).or_else(|| {
            std::fs::read_to_string(IN_CLUSTER_NAMESPACE_FILE)
                .ok()
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
        });
        namespace.map(|ns| OperatorPods::new(&ns, &self.operator_pod_selector)).transpose()
    }
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML file with one or more PopUpStore documents ("-" for stdin).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Image of the simulator Job and the native processor.
    #[arg(long, env = "POPUP_SELF_IMAGE", default_value = render::images::OPERATOR)]
    self_image: String,
    #[command(flatten)]
    operator_pods: OperatorPodArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", popup_operator::crd::crd_yaml());
            Ok(())
        }
        Command::Render(args) => render_file(&args).map_err(Failure::from),
        Command::Run(args) => tokio_main(run(args)).map_err(Failure::from),
        Command::Load(args) => engine_main(run_load(args)),
        Command::Process(args) => engine_main(run_process(args)),
        Command::Simulate(args) => engine_main(run_simulate(args)),
        Command::Sale(args) => engine_main(run_sale(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// A failed command: what to print, and the exit code (3 = gave up waiting, 1 = anything else).
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

fn tokio_main<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(f)
}

async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init_logging(args.log_format);
    // Flags first: a typo ends here, before any connection.
    let scope = WatchScope::from_flags(&args.watch_namespace)?;
    let operator_pods = args.operator_pods.resolve()?;
    match &operator_pods {
        Some(op) => {
            tracing::info!(namespace = %op.namespace, labels = ?op.labels, "Redis NetworkPolicies let in the operator's pods")
        }
        None => tracing::info!(
            "no operator namespace (--operator-namespace, not in a cluster): Redis NetworkPolicies let in only each store's pods; reach Redis with kubectl port-forward (--redis-address)"
        ),
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot configure a Kubernetes client (kubeconfig or in-cluster): {e}"))?;
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (--http-addr): {e}", args.http_addr))?;
    let server = tokio::spawn(axum::serve(listener, telemetry::router(health.clone())).into_future());
    let config = Config {
        operator_image: args.self_image,
        redis_address_template: args.redis_address,
        operator_pods,
        rotation_grace: std::time::Duration::from_secs(args.rotation_grace_seconds),
    };
    let ctx = Context::new(client, Arc::new(LiveRedis::default()), health, config);
    let result = controller::run(ctx, scope).await.map_err(|e| e.to_string());
    server.abort();
    result
}

fn render_file(args: &RenderArgs) -> Result<(), String> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| format!("reading {}: {e}", args.file.display()))?
    };
    let (stores, others) = popup_operator::crd::parse_stores(&text).map_err(|e| {
        let lines: Vec<String> = e.lines().map(|l| format!("{}: {l}", args.file.display())).collect();
        format!("{} problem(s); fix them and render again:\n{}", lines.len(), lines.join("\n"))
    })?;
    for other in others {
        eprintln!("note: {}: {other} is not a PopUpStore; left out", args.file.display());
    }
    let file = args.file.display();
    // Every problem of every store at once, one a line, before anything is printed.
    let mut validated = Vec::new();
    let mut problems = Vec::new();
    for store in &stores {
        match render::validate(store) {
            Ok(v) => validated.push(v),
            Err(e) => problems.extend(
                e.errors
                    .iter()
                    .map(|p| format!("{file} ({}): {p}", store.metadata.name.as_deref().unwrap_or_default())),
            ),
        }
    }
    if !problems.is_empty() {
        return Err(format!("{} problem(s); fix them and render again:\n{}", problems.len(), problems.join("\n")));
    }
    let operator_pods = args.operator_pods.resolve()?;
    if operator_pods.is_none() && stores.iter().any(|s| s.spec.network_policy.enabled) {
        eprintln!(
            "note: no --operator-namespace: the Redis NetworkPolicy lets in only the store's pods; the operator installed by the chart passes e.g. --operator-namespace popup-system --operator-pod-selector app.kubernetes.io/name=popup-operator,app.kubernetes.io/instance=popup"
        );
    }
    let mut out = String::new();
    for v in validated {
        // A user's password Secret is not read here: its user (default) stays off in the rendered ACL file
        // until the operator, which reads the Secret, applies it.
        let admin = match v.password {
            PasswordSource::Generated { .. } => Some(controller::new_password()),
            PasswordSource::UserSecret(_) => None,
        };
        let inputs = BuildInputs {
            credentials: controller::users::generated(&v, admin.as_deref()),
            redis_password: admin,
            grafana_admin_password: controller::new_password(),
            operator_image: args.self_image.clone(),
            operator_pods: operator_pods.clone(),
        };
        // Written so that kubectl's YAML 1.1 reader sees the same values (`yes` stays a string).
        out.push_str(&render::yaml::documents(&render::build_children(&v, &inputs).to_values()));
    }
    print!("{out}");
    Ok(())
}
