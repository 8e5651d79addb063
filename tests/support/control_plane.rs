//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager, built by
//! `hack/control-plane.sh`, started on free loopback ports in a temporary directory.
//!
//! What runs: etcd (no fsync, it is a throwaway), kube-apiserver (RBAC, a static admin token in
//! `system:masters`, service-account tokens signed by a generated key, an audit log of every request made
//! by a ServiceAccount outside kube-system), kube-controller-manager (all default controllers: garbage
//! collector, Deployment, ReplicaSet, StatefulSet, Job, namespace, service account...; how it talks to the
//! API server: [`ControllerManager`]). There is no kubelet and no scheduler, so Pods are created but never
//! run: tests play kubelet by writing Pod status (see `kubelet`).
//!
//! Clean-up: `Drop` stops every process. A control plane kept in a `static` is never dropped, so each one
//! also has a watchdog (`bash`, reading our end of a pipe): when the test process exits for whatever
//! reason (end of tests, panic, SIGKILL), the pipe closes and the watchdog stops the components and removes
//! the temporary directory. No orphans either way.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The pinned Kubernetes version is the one `hack/control-plane.sh` builds by default.
const BUILD_SCRIPT: &str = include_str!("../../hack/control-plane.sh");

const ADMIN_USER: &str = "e2e-admin";

/// One running control plane.
pub struct ControlPlane {
    /// The temporary directory with certificates, data, the kubeconfig and the component logs.
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`
    pub url: String,
    /// Admin kubeconfig (token of a `system:masters` user), usable with kubectl.
    pub kubeconfig: PathBuf,
    /// JSON lines: one audit event per request made by a ServiceAccount outside kube-system (stage
    /// ResponseComplete).
    pub audit_log: PathBuf,
    pub version: String,
    pub controller_manager: ControllerManager,
    ca_file: PathBuf,
    processes: Mutex<Vec<Component>>,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// How kube-controller-manager talks to the API server. Its controllers' writes (pods, ReplicaSets,
/// EndpointSlices, status) share the API server with the operator, so this decides how much of a busy
/// control plane the operator gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerManager {
    /// The test tiers' setting: one client for every controller at 200 requests/s (burst 400), so that
    /// a test waiting for pods never waits on its rate limiter.
    Fast,
    /// As kubeadm runs it: each controller with its own ServiceAccount's client
    /// (`--use-service-account-credentials`), at the upstream default 20 requests/s (burst 30) each.
    /// Every other flag is the same as with `Fast`.
    Kubeadm,
}

struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// `hack/control-plane.sh`'s default Kubernetes version (or `POPUP_K8S_VERSION`).
pub fn kubernetes_version() -> String {
    if let Ok(v) = std::env::var("POPUP_K8S_VERSION") {
        return v;
    }
    let marker = "POPUP_K8S_VERSION:-";
    let start =
        BUILD_SCRIPT.find(marker).expect("hack/control-plane.sh sets a default POPUP_K8S_VERSION") + marker.len();
    BUILD_SCRIPT[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect()
}

/// Where the binaries are: `POPUP_CONTROL_PLANE_BIN`, else the build script's cache directory.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POPUP_CONTROL_PLANE_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("POPUP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/popup-operator"));
    cache.join("control-plane").join(format!("v{}", kubernetes_version())).join("bin")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port").local_addr().unwrap().port()
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn random_token() -> String {
    use rand::Rng;
    rand::rng().sample_iter(&rand::distr::Alphanumeric).take(40).map(char::from).collect()
}

/// Generates the CA, the API server's serving certificate and the service-account signing key pair.
fn generate_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "7",
        "-subj",
        "/CN=popup-e2e-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(dir, "openssl", &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver"]);
    run(dir, "openssl", &csr);
    fs::write(
        dir.join("apiserver.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            "7",
            "-extfile",
            "apiserver.ext",
        ],
    );
    run(dir, "openssl", &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key"]);
    run(dir, "openssl", &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// Only requests of ServiceAccounts outside kube-system (the operator under test) are audited: the
/// controller-manager's own traffic (under kube-system's ServiceAccounts with
/// [`ControllerManager::Kubeadm`]) would drown them, and auditing it would load the API server.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: [\"system:serviceaccounts:kube-system\"]
  - level: Metadata
    userGroups: [\"system:serviceaccounts\"]
  - level: None
";

fn kubeconfig_yaml(url: &str, ca_file: &Path, user: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {user}\n    namespace: {namespace}\n\
         current-context: e2e\npreferences: {{}}\n",
        ca = ca_file.display(),
    )
}

/// The watchdog: collects pids from stdin; when stdin closes, stops them (TERM, then KILL after 5 s) and
/// removes the directory unless POPUP_E2E_KEEP is set.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
pids=()
while read -r pid; do pids+=("$pid"); done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for _ in $(seq 50); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
if [ -z "${POPUP_E2E_KEEP:-}" ]; then rm -rf "$1"; fi
"#;

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until the API server is ready.
    /// Panics with the reason (and the component logs) when anything is missing or does not start.
    pub async fn start(controller_manager: ControllerManager) -> ControlPlane {
        let bin = bin_dir();
        for b in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            assert!(
                bin.join(b).is_file(),
                "control plane binary {} is missing: build them with `bash hack/control-plane.sh` \
                 (or point POPUP_CONTROL_PLANE_BIN at a directory with etcd, kube-apiserver, kube-controller-manager)",
                bin.join(b).display()
            );
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("popup-e2e-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();

        let mut watchdog = Command::new("bash")
            .args(["-c", WATCHDOG, "popup-e2e-watchdog"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog (bash)");
        let stdin = watchdog.stdin.take().unwrap();

        generate_certificates(&dir);
        let admin_token = random_token();
        fs::write(dir.join("tokens.csv"), format!("{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"))
            .unwrap();
        fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();

        let api_port = free_port();
        let url = format!("https://127.0.0.1:{api_port}");
        let ca_file = dir.join("ca.crt");
        let kubeconfig = dir.join("admin.kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(&url, &ca_file, ADMIN_USER, &admin_token, "default")).unwrap();

        let cp = ControlPlane {
            audit_log: dir.join("audit.log"),
            dir: dir.clone(),
            url: url.clone(),
            kubeconfig: kubeconfig.clone(),
            version: kubernetes_version(),
            controller_manager,
            ca_file,
            processes: Mutex::new(Vec::new()),
            watchdog: Mutex::new(Some((watchdog, stdin))),
        };

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        );
        let d = |f: &str| dir.join(f).display().to_string();
        cp.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", d("apiserver-certs")),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--client-ca-file={}", d("ca.crt")),
                format!("--token-auth-file={}", d("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={url}"),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                format!("--audit-policy-file={}", d("audit-policy.yaml")),
                format!("--audit-log-path={}", d("audit.log")),
                "--audit-log-format=json".into(),
                "--audit-log-maxbackup=0".into(),
                "--audit-log-maxsize=0".into(),
                "--v=1".into(),
            ],
        );
        let kcm_port = free_port();
        cp.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--cert-dir={}", d("kcm-certs")),
                "--leader-elect=false".into(),
                "--controllers=*".into(),
                format!("--service-account-private-key-file={}", d("sa.key")),
                format!("--root-ca-file={}", d("ca.crt")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(
                match controller_manager {
                    ControllerManager::Fast => {
                        ["--use-service-account-credentials=false", "--kube-api-qps=200", "--kube-api-burst=400"]
                    }
                    ControllerManager::Kubeadm => {
                        ["--use-service-account-credentials=true", "--kube-api-qps=20", "--kube-api-burst=30"]
                    }
                }
                .map(String::from),
            )
            .collect::<Vec<_>>(),
        );
        cp.wait_ready().await;
        cp
    }

    fn spawn(&self, name: &'static str, program: &Path, args: &[String]) {
        let log = self.dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        if let Some((_, stdin)) = self.watchdog.lock().unwrap().as_mut() {
            let _ = writeln!(stdin, "{}", child.id());
        }
        self.processes.lock().unwrap().push(Component { name, child, log });
    }

    /// A component that exited is a failure, with its log.
    fn check_alive(&self) {
        for c in self.processes.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("{} exited ({status}) during the test\n{}", c.name, self.logs());
            }
        }
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        let client = self.admin_client().await;
        loop {
            self.check_alive();
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            let last = match client.request_text(req).await {
                Ok(text) if text.trim() == "ok" => break,
                Ok(text) => text,
                Err(e) => e.to_string(),
            };
            if started.elapsed() > Duration::from_secs(90) {
                panic!("kube-apiserver not ready after 90 s (last answer: {last})\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "control plane v{} ready at {} in {:.1?} ({})",
            self.version,
            self.url,
            started.elapsed(),
            self.dir.display()
        );
    }

    /// A client authenticated as the admin (`system:masters`).
    pub async fn admin_client(&self) -> Client {
        self.client_from(&self.kubeconfig).await
    }

    /// A client authenticated with a bearer token (e.g. a ServiceAccount's, from the TokenRequest API).
    pub async fn token_client(&self, user: &str, token: &str, namespace: &str) -> Client {
        let file = self.dir.join(format!("{}.kubeconfig", user.replace(':', "_")));
        fs::write(&file, kubeconfig_yaml(&self.url, &self.ca_file, user, token, namespace)).unwrap();
        self.client_from(&file).await
    }

    async fn client_from(&self, file: &Path) -> Client {
        let kc = Kubeconfig::read_from(file).expect("read the generated kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig is valid");
        Client::try_from(config).expect("build a client")
    }

    /// The last lines of each component's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for c in self.processes.lock().unwrap().iter() {
            let text = fs::read_to_string(&c.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "---- {} ({}; last {} lines)\n{}\n",
                c.name,
                c.log.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Every audit event (requests by ServiceAccounts), parsed.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.check_alive();
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops every component: TERM, then KILL after 5 s; reaps them.
    pub fn stop(&self) {
        let mut procs = self.processes.lock().unwrap();
        for c in procs.iter_mut().rev() {
            // std only offers SIGKILL; a TERM lets etcd and the API server shut down cleanly.
            let _ = Command::new("kill").args(["-TERM", &c.child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in procs.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        procs.clear();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        // Closing the pipe lets the watchdog remove the directory (its pids are gone already).
        if let Some((mut watchdog, stdin)) = self.watchdog.lock().unwrap().take() {
            drop(stdin);
            let _ = watchdog.wait();
        }
    }
}
