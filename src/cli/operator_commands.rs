//! The operator half's commands: `run` (the controller with its HTTP server) and `render` (every child
//! of the stores in a file, printed as YAML without a cluster): their clap arguments and their wiring.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::controller::{self, Config, Context, WatchScope, grafana::LiveGrafana, redis::LiveRedis};
use crate::render;
use crate::render::network_policy::{DEFAULT_OPERATOR_POD_SELECTOR, OperatorPods};
use crate::telemetry::{self, Health, LogFormat};

/// `run`
#[derive(clap::Args)]
pub struct RunArgs {
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
    /// How the operator reaches each store's managed Grafana to check it (GrafanaReady), as a template
    /// with {name}, {namespace} and {service} (e.g. 127.0.0.1:3000 with a port-forward).
    /// Default: the Grafana Service's cluster DNS name, {service}.{namespace}.svc:3000.
    #[arg(long, env = "POPUP_GRAFANA_ADDRESS")]
    grafana_address: Option<String>,
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

/// `render`
#[derive(clap::Args)]
pub struct RenderArgs {
    /// YAML file with one or more PopUpStore documents ("-" for stdin).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Image of the simulator Job and the native processor.
    #[arg(long, env = "POPUP_SELF_IMAGE", default_value = render::images::OPERATOR)]
    self_image: String,
    #[command(flatten)]
    operator_pods: OperatorPodArgs,
}

/// `run`: the controller until SIGTERM, with `/healthz`, `/readyz` and `/metrics`.
pub async fn run(args: RunArgs) -> Result<(), String> {
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
        grafana_address_template: args.grafana_address,
    };
    let ctx = Context::new(client, Arc::new(LiveRedis::default()), Arc::new(LiveGrafana::default()), health, config);
    let result = controller::run(ctx, scope).await.map_err(|e| e.to_string());
    server.abort();
    result
}

/// `render`'s input, a file or stdin (`-`), read up to `yaml::MAX_INPUT_BYTES` and no further.
fn read_input(file: &Path) -> Result<String, String> {
    let (source, name): (Box<dyn Read>, String) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), "stdin".into())
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        (Box::new(f), file.display().to_string())
    };
    let limit = crate::yaml::MAX_INPUT_BYTES;
    let mut text = String::new();
    source.take(limit + 1).read_to_string(&mut text).map_err(|e| format!("reading {name}: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!("{name}: larger than {} MiB, the most render reads", limit >> 20));
    }
    Ok(text)
}

/// `render`: every child of every store in the file, as YAML documents on stdout.
pub fn render_file(args: &RenderArgs) -> Result<(), String> {
    let text = read_input(&args.file)?;
    // Before serde_yaml: its scanner's work per token grows with the nesting, so a file of brackets
    // would take minutes to be refused.
    crate::yaml::check_flow_depth(&text, crate::yaml::MAX_FLOW_DEPTH)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let (stores, others) = crate::crd::parse_stores(&text).map_err(|e| {
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
    let config = Config {
        operator_image: args.self_image.clone(),
        redis_address_template: None,
        operator_pods,
        rotation_grace: controller::users::ROTATION_GRACE,
        grafana_address_template: None,
    };
    let mut out = String::new();
    for v in validated {
        // Written so that kubectl's YAML 1.1 reader sees the same values (`yes` stays a string).
        out.push_str(&crate::yaml::documents(&controller::render_offline(&config, &v).to_values()));
    }
    print!("{out}");
    Ok(())
}
