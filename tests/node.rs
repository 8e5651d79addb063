//! The node tier: the user's whole path on a real single-node Kubernetes (`hack/local-cluster.sh`: kubelet,
//! containerd, runc, CNI bridge, kube-proxy, CoreDNS, kube-router's firewall, local-path-provisioner) with the
//! images `hack/images.sh` builds here.
//!
//! One scenario, in the order a user meets the product: `helm install` the chart with the local operator
//! image; four stores (triggers, native, gears, and a triggers store on a provisioned volume with its
//! NetworkPolicies off) whose Redis, processor and simulator pods really run; faults in the middle of the
//! sales (the Redis server killed inside its container, a processor pod deleted, the processor's Redis
//! password rotated, the volume store's Redis pod deleted); the NetworkPolicies enforced by kube-router and
//! proven with real connections from a pod in another namespace; the exact end of each sale read from Redis
//! itself; the operator pod replaced without a single write to unchanged children; every store deleted and
//! garbage-collected, the volume given back; `helm uninstall`.
//!
//! The gears store (the default engine) runs on `popup.local/redismod` (real RedisGears 1) with a managed
//! Grafana on `popup.local/grafana` when `hack/images.sh` could build them from the real runtimes
//! (`POPUP_REDISGEARS1`, `POPUP_GRAFANA8`, or `../shared`): it sells out exactly, its Grafana pod is
//! Ready, GrafanaReady is True from Grafana's answers, and the dashboard is screenshot through a
//! port-forward. Without them it only checks the crash report on an image without RedisGears 1, and
//! prints a WARNING saying so.
//!
//! Needs root (containerd, a bridge, iptables). `POPUP_NODE_TESTS=skip` skips it loudly, for a machine
//! where that is impossible; CI never sets it.

pub mod support;
use support::dashboard_page;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource, ResourceExt};
use popup_operator::crd::PopUpStore;
use popup_operator::{render, status};
use redis::AsyncCommands;
use serde_json::{Value, json};

const RELEASE: &str = "popup";
const OPERATOR_NAMESPACE: &str = "popup-system";
const STOCK: i64 = 30;
const CUSTOMERS: i64 = 80;
/// The store whose Redis keeps its data on a provisioned volume, and has its NetworkPolicies off.
const STORAGE_NAMESPACE: &str = "node-storage";
/// Every store's namespace.
const STORE_NAMESPACES: [&str; 4] = ["node-triggers", "node-native", "node-gears", STORAGE_NAMESPACE];
/// The namespace of the pod that probes the stores' ports from outside.
const PROBE_NAMESPACE: &str = "node-probe";
/// A password no shell may split or glob: the triggers store's user Secret.
const NASTY_PASSWORD: &str = "p a*s?s[w]o'r\"d $HOME;x";
/// The native processor's password after its rotation mid-sale.
const ROTATED_PASSWORD: &str = "rotated mid-sale: {}$(x)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A step of the scenario, with the time since the test started.
fn step(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed();
    eprintln!("[node] {:>5.1}s {what}", since.as_secs_f64());
}

/// The local cluster of this test process; brought down by a watchdog when the process ends, however.
struct LocalCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    bin: PathBuf,
    images: BTreeMap<String, String>,
    _watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl LocalCluster {
    fn get() -> &'static LocalCluster {
        static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
        CLUSTER.get_or_init(LocalCluster::up)
    }

    fn up() -> LocalCluster {
        let script = root().join("hack/local-cluster.sh");
        let dir = std::env::temp_dir().join(format!("popup-node-{}", std::process::id()));
        // The watchdog first: whatever happens from here on (a failed `up`, a panic, SIGKILL of this
        // process), the closed pipe makes it run `down`, which stops exactly what `up` started.
        let keep = std::env::var_os("POPUP_NODE_KEEP").is_some();
        let mut watchdog = Command::new("setsid")
            .args([
                "bash",
                "-c",
                r#"cat >/dev/null; [ "$3" = 1 ] || POPUP_CLUSTER_DIR="$1" bash "$2" down"#,
                "watchdog",
            ])
            .arg(&dir)
            .arg(&script)
            .arg(if keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the clean-up watchdog (setsid, bash)");
        let stdin = watchdog.stdin.take().expect("watchdog stdin");

        step(&format!("bringing up the local cluster in {}", dir.display()));
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .env("POPUP_CLUSTER_DIR", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/local-cluster.sh");
        assert!(out.status.success(), "hack/local-cluster.sh up failed (its messages are above)");
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim());
        assert!(kubeconfig.is_file(), "local-cluster.sh printed no kubeconfig path: {:?}", out.stdout);
        step(&format!("cluster up in {:.0?}", started.elapsed()));
        let bin = PathBuf::from(std::fs::read_to_string(dir.join("bin")).expect("the cluster's bin dir").trim());
        let images = std::fs::read_to_string(dir.join("images.env"))
            .expect("images.env")
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.trim().to_string())))
            .collect();
        LocalCluster { dir, kubeconfig, bin, images, _watchdog: Mutex::new(Some((watchdog, stdin))) }
    }

    fn image(&self, var: &str) -> &str {
        self.images.get(var).unwrap_or_else(|| panic!("images.env has no {var}: {:?}", self.images))
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
        Client::try_from(config).expect("kube client")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(text) } else { Err(text) }
    }

    fn helm(&self, args: &[&str]) -> String {
        self.try_helm(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_helm(&self, args: &[&str]) -> Result<String, String> {
        let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
        let out = Command::new(&helm)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {helm}: {e} (bash hack/install-helm.sh installs it)"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "helm {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The host PID of a running container, from containerd itself.
    fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        let ctr = |args: &[&str]| {
            let out = Command::new("ctr")
                .arg("-a")
                .arg(self.dir.join("containerd/containerd.sock"))
                .args(["-n", "k8s.io"])
                .args(args)
                .output()
                .expect("run ctr");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for id in ctr(&["containers", "ls", "-q"]).lines() {
            let info: Value = serde_json::from_str(&ctr(&["containers", "info", id])).unwrap_or(Value::Null);
            let labels = &info["Labels"];
            if labels["io.kubernetes.pod.namespace"] == namespace
                && labels["io.kubernetes.pod.name"] == pod
                && labels["io.kubernetes.container.name"] == container
            {
                for line in ctr(&["tasks", "ls"]).lines().skip(1) {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    if cols.len() >= 3 && cols[0] == id && cols[2] == "RUNNING" {
                        return cols[1].parse().ok();
                    }
                }
            }
        }
        None
    }

    /// Stops the cluster now (the watchdog's job, done in the open so that failures show).
    fn down(&self) {
        if std::env::var_os("POPUP_NODE_KEEP").is_some() {
            step(&format!("POPUP_NODE_KEEP set: the cluster stays up in {}", self.dir.display()));
            return;
        }
        let status = Command::new("bash")
            .arg(root().join("hack/local-cluster.sh"))
            .arg("down")
            .env("POPUP_CLUSTER_DIR", &self.dir)
            .status()
            .expect("run hack/local-cluster.sh down");
        assert!(status.success(), "hack/local-cluster.sh down failed");
        assert!(!self.dir.exists(), "down left {}", self.dir.display());
    }
}

/// Polls `check` every half second until it gives a value; on timeout, panics with the last observation.
async fn wait_for<T>(what: &str, timeout: Duration, check: impl AsyncFnMut() -> Result<T, String>) -> T {
    support::poll::wait(what, timeout, Duration::from_millis(500), check).await
}

fn condition(store: &PopUpStore, kind: &str) -> Option<(String, String, String)> {
    store
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The message of the store's condition `type_` when it has `status` and `reason`.
fn message_if(store: &PopUpStore, type_: &str, status: &str, reason: &str) -> Option<String> {
    condition(store, type_).filter(|c| c.0 == status && c.1 == reason).map(|c| c.2)
}

fn conditions_text(store: &PopUpStore) -> String {
    store
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "no status".into())
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"popup.dev/local-cluster-test": "true"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
}

fn store_manifest(name: &str, engine: &str, redis: Value, extra: Value) -> PopUpStore {
    let mut spec = json!({
        "engine": engine,
        "stock": STOCK,
        "redis": redis,
        "grafana": {"mode": "none"},
        // A slow, fixed rate: the sale lasts ~10 s, long enough to break things in the middle of it.
        "simulator": {"customers": CUSTOMERS, "ratePerSecond": 8, "maxOrderDelayMillis": 200},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "popup.dev/v1alpha1",
        "kind": "PopUpStore",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid store")
}

/// The Redis of a store, reached from this host through its pod's address on the node's bridge.
async fn redis_of(client: &Client, ns: &str, store: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let pod =
        Api::<Pod>::namespaced(client.clone(), ns).get(&format!("{store}-redis-0")).await.map_err(|e| e.to_string())?;
    let ip = pod.status.and_then(|s| s.pod_ip).ok_or("the Redis pod has no IP yet")?;
    let store_obj = Api::<PopUpStore>::namespaced(client.clone(), ns).get(store).await.map_err(|e| e.to_string())?;
    let (secret, key) = match &store_obj.spec.redis.password_secret_ref {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => (format!("{store}-redis"), "password".into()),
    };
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get(&secret).await.map_err(|e| e.to_string())?;
    let password = secret.data.and_then(|d| d.get(&key).cloned()).ok_or("no password in the Secret")?;
    let password = String::from_utf8(password.0).map_err(|e| e.to_string())?;
    let url = format!("redis://{ip}:6379");
    tokio::time::timeout(Duration::from_secs(3), popup_operator::sale::connect(&url, Some(&password)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map(|(con, _)| con)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Default)]
struct Sale {
    product: Option<i64>,
    completed: usize,
    rejected: usize,
    customers_waiting: usize,
    orders_waiting: usize,
    distinct_customers: usize,
    completed_customers_distinct: bool,
}

async fn read_sale(con: &mut redis::aio::MultiplexedConnection) -> Result<Sale, String> {
    let e = |e: redis::RedisError| e.to_string();
    let product: Option<String> = con.get("product").await.map_err(e)?;
    let complete: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg("queue:complete").arg("-").arg("+").query_async(con).await.map_err(e)?;
    let rejected: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg("queue:rejected").arg("-").arg("+").query_async(con).await.map_err(e)?;
    let customers_waiting: usize = con.xlen("queue:customers").await.map_err(e)?;
    let orders_waiting: usize = con.xlen("queue:orders").await.map_err(e)?;
    let completed_customers: BTreeSet<&String> = complete.iter().filter_map(|(_, f)| f.get("customer")).collect();
    let all: BTreeSet<&String> =
        complete.iter().chain(rejected.iter()).filter_map(|(_, f)| f.get("customer")).collect();
    Ok(Sale {
        product: product.and_then(|p| p.parse().ok()),
        completed: complete.len(),
        rejected: rejected.len(),
        customers_waiting,
        orders_waiting,
        distinct_customers: all.len(),
        completed_customers_distinct: completed_customers.len() == complete.len(),
    })
}

/// Waits until the store's Redis has decided `done` orders (a moment in the middle of the sale).
/// Waits until the store's Redis has decided `decided` orders, completed or rejected.
async fn wait_for_decided(client: &Client, ns: &str, store: &str, decided: usize) {
    wait_for(&format!("{ns}/{store} to decide {decided} orders"), Duration::from_secs(180), || async {
        let mut con = redis_of(client, ns, store).await?;
        let sale = read_sale(&mut con).await?;
        if sale.completed + sale.rejected >= decided { Ok(()) } else { Err(format!("{sale:?}")) }
    })
    .await
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> String {
    let secret = secrets.get(name).await.unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    let bytes = secret.data.and_then(|d| d.get(key).cloned()).unwrap_or_else(|| panic!("{name} has no {key}"));
    String::from_utf8(bytes.0).expect("a UTF-8 password")
}

async fn redis_restarts(client: &Client, ns: &str) -> i32 {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get("shop-redis-0").await.expect("the Redis pod");
    pod.status.and_then(|s| s.container_statuses).and_then(|c| c.first().map(|c| c.restart_count)).unwrap_or(-1)
}

async fn wait_for_progress(client: &Client, ns: &str, store: &str, done: usize) {
    wait_for(&format!("{ns}/{store} to complete {done} orders"), Duration::from_secs(180), || async {
        let mut con = redis_of(client, ns, store).await?;
        let sale = read_sale(&mut con).await?;
        if sale.completed >= done { Ok(()) } else { Err(format!("{sale:?}")) }
    })
    .await
}

/// The exact end of a sale: every customer decided once, the stock sold and not one unit more.
async fn assert_exact_end(client: &Client, ns: &str, store: &str) {
    let sale = wait_for(&format!("{ns}/{store}'s sale to end"), Duration::from_secs(300), || async {
        let mut con = redis_of(client, ns, store).await?;
        let sale = read_sale(&mut con).await?;
        let decided = sale.completed + sale.rejected;
        if decided >= CUSTOMERS as usize && sale.orders_waiting == 0 && sale.customers_waiting == 0 {
            Ok(sale)
        } else {
            Err(format!("{sale:?}"))
        }
    })
    .await;
    assert_eq!(sale.completed, STOCK as usize, "{ns}/{store}: completed == stock: {sale:?}");
    assert_eq!(sale.rejected, (CUSTOMERS - STOCK) as usize, "{ns}/{store}: rejected == customers - stock: {sale:?}");
    assert_eq!(sale.product, Some(0), "{ns}/{store}: product: {sale:?}");
    assert!(sale.completed_customers_distinct, "{ns}/{store}: a customer bought twice: {sale:?}");
    assert_eq!(sale.distinct_customers, CUSTOMERS as usize, "{ns}/{store}: every customer decided once: {sale:?}");

    // What the user sees: the status the operator writes and `kubectl get popupstores`.
    let stores = Api::<PopUpStore>::namespaced(client.clone(), ns);
    wait_for(&format!("{ns}/{store}'s status to show the end"), Duration::from_secs(180), || async {
        let s = stores.get(store).await.map_err(|e| e.to_string())?;
        let sale = s.status.as_ref().and_then(|st| st.sale.clone()).ok_or("no sale in the status")?;
        let ready = condition(&s, status::READY).map(|c| c.0);
        let done = condition(&s, status::SIMULATION_COMPLETE).map(|c| c.0);
        if sale.completed == STOCK as u64
            && sale.available == Some(0)
            && ready.as_deref() == Some("True")
            && done.as_deref() == Some("True")
        {
            Ok(())
        } else {
            Err(format!("{sale:?}; {}", conditions_text(&s)))
        }
    })
    .await;
    let table = LocalCluster::get().kubectl(&["get", "popupstores", "-n", ns, store, "--no-headers"]);
    let cols: Vec<&str> = table.split_whitespace().collect();
    // NAME READY ENGINE AVAILABLE COMPLETED AGE
    assert_eq!(cols.get(1), Some(&"True"), "kubectl get popupstores: {table}");
    assert_eq!(cols.get(3), Some(&"0"), "kubectl get popupstores: {table}");
    assert_eq!(cols.get(4).copied(), Some(STOCK.to_string().as_str()), "kubectl get popupstores: {table}");
}

/// The native store's Redis (an emptyDir) loses its sale with its pod: the store says so (SaleIntact
/// False, SaleLost, a Warning Event, Ready False) and the operator does not restock; `saleRun` starts a
/// fresh sale, and in its middle the operator is upgraded to another image with `helm upgrade`: Redis is
/// not restarted, no second simulator Job appears, the fresh sale ends exactly.
async fn lost_sale_and_a_fresh_one_through_an_upgrade(cluster: &LocalCluster, client: &Client) {
    let (ns, pods) = ("node-native", Api::<Pod>::namespaced(client.clone(), "node-native"));
    let stores = Api::<PopUpStore>::namespaced(client.clone(), ns);
    let lost_id = stores.get("shop").await.unwrap().status.and_then(|s| s.started_sale).expect("a started sale").id;
    let old_uid = pods.get("shop-redis-0").await.unwrap().metadata.uid;
    step("native: kubectl delete pod shop-redis-0 (emptyDir): Redis comes back without the sale");
    cluster.kubectl(&["-n", ns, "delete", "pod", "shop-redis-0", "--wait=false"]);
    let message = wait_for("SaleIntact=False, SaleLost", Duration::from_secs(180), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        let pod = pods.get("shop-redis-0").await.map_err(|e| e.to_string())?;
        let lost = message_if(&s, status::SALE_INTACT, "False", status::reason::SALE_LOST);
        let not_ready = condition(&s, status::READY).is_some_and(|c| c.0 == "False");
        match lost {
            Some(message) if not_ready && pod.metadata.uid != old_uid => Ok(message),
            _ => Err(conditions_text(&s)),
        }
    })
    .await;
    assert!(message.contains(&format!("Redis no longer holds sale {lost_id}")), "{message}");
    assert!(message.contains(r#"'{"spec":{"saleRun":1}}'"#), "the message names the way out: {message}");
    // The Event follows the status write that made the condition False.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns);
    wait_for("a Warning Event SaleIntactFalse", Duration::from_secs(60), || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let warned = list
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("SaleIntactFalse"));
        if warned { Ok(()) } else { Err(format!("{} events, none of them SaleIntactFalse", list.len())) }
    })
    .await;
    let mut con = redis_of(client, ns, "shop").await.unwrap();
    let product: Option<i64> = redis::cmd("GET").arg("product").query_async(&mut con).await.unwrap();
    assert_eq!(product, None, "the operator did not put the stock back by itself");
    step(&format!("native: {message}"));

    step("native: kubectl patch popupstore shop saleRun=1: a fresh sale");
    cluster.kubectl(&["-n", ns, "patch", "popupstore", "shop", "--type", "merge", "-p", r#"{"spec":{"saleRun":1}}"#]);
    let fresh = wait_for("the fresh sale to start", Duration::from_secs(120), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        let started = s.status.as_ref().and_then(|st| st.started_sale.clone());
        match (started, condition(&s, status::SALE_INTACT)) {
            (Some(f), Some((intact, _, _))) if f.id != lost_id && intact == "True" => Ok(f.id),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_for_progress(client, ns, "shop", 5).await;

    // In the middle of the fresh sale: the operator upgraded to another image (the same binary, tagged anew).
    let redis_before = pods.get("shop-redis-0").await.unwrap();
    let restarts_before = redis_restarts(client, ns).await;
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let job_names = || async {
        let lp = ListParams::default().labels("app.kubernetes.io/component=simulator");
        jobs.list(&lp).await.unwrap().items.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(job_names().await, [format!("shop-simulator-{fresh}")]);
    let image = cluster.image("POPUP_OPERATOR_IMAGE");
    let (repo, _) = image.rsplit_once(':').unwrap();
    let upgraded = format!("{repo}:upgraded");
    let sock = cluster.dir.join("containerd/containerd.sock");
    let tagged = Command::new("ctr")
        .args(["-a", sock.to_str().unwrap(), "-n", "k8s.io", "images", "tag", "--force", image, &upgraded])
        .output()
        .unwrap();
    assert!(tagged.status.success(), "ctr images tag: {}", String::from_utf8_lossy(&tagged.stderr));
    step("helm upgrade to the operator image popup.local/…:upgraded mid-sale");
    cluster.helm(&[
        "upgrade",
        RELEASE,
        root().join("charts/popup-operator").to_str().unwrap(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--set",
        "image.tag=upgraded",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let operator_pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    wait_for("the upgraded operator pod alone", Duration::from_secs(120), || async {
        let list = operator_pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let images: Vec<String> =
            list.iter().filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone()).collect();
        if images == [upgraded.clone()] && list.iter().all(pod_ready) { Ok(()) } else { Err(format!("{images:?}")) }
    })
    .await;
    assert_exact_end(client, ns, "shop").await;
    let redis_after = pods.get("shop-redis-0").await.unwrap();
    assert_eq!(redis_after.metadata.uid, redis_before.metadata.uid, "the upgrade replaced the Redis pod");
    assert_eq!(redis_restarts(client, ns).await, restarts_before, "the upgrade restarted Redis");
    assert_eq!(job_names().await, [format!("shop-simulator-{fresh}")], "no second simulator Job");
    step("native: the fresh sale ended exactly through the upgrade; Redis not restarted, one simulator Job");

    // A third sale, lost in its middle: its running Job stops when Redis comes back without it, and the
    // store quotes why, from the Job's pod (the simulator's termination message).
    cluster.kubectl(&["-n", ns, "patch", "popupstore", "shop", "--type", "merge", "-p", r#"{"spec":{"saleRun":2}}"#]);
    let third = wait_for("a third sale to start", Duration::from_secs(120), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        match s.status.as_ref().and_then(|st| st.started_sale.clone()) {
            Some(t) if t.id != fresh && t.id != lost_id => Ok(t.id),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_for_progress(client, ns, "shop", 5).await;
    step(&format!("native: kubectl delete pod shop-redis-0 in the middle of sale {third}"));
    cluster.kubectl(&["-n", ns, "delete", "pod", "shop-redis-0", "--wait=false"]);
    let job = format!("shop-simulator-{third}");
    let said = wait_for("SimulationComplete=False quoting the Job's cause", Duration::from_secs(180), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        let failed = message_if(&s, status::SIMULATION_COMPLETE, "False", status::reason::FAILED);
        let lost = message_if(&s, status::SALE_INTACT, "False", status::reason::SALE_LOST);
        match failed {
            Some(message) if lost.is_some() => Ok(message),
            _ => Err(conditions_text(&s)),
        }
    })
    .await;
    assert!(said.starts_with(&format!("simulator Job {job} failed: ")), "{said}");
    assert!(said.contains(&format!("no longer holds sale {third}")), "the simulator's own words: {said}");
    assert!(said.contains("exit code 1"), "{said}");
    step(&format!("native: {said}"));
}

/// The gears store on the real runtimes' images: the default engine sells out exactly in its pod; with
/// `grafana`, the managed Grafana pod is Ready, GrafanaReady is True from Grafana's own answers (the
/// operator pod asks Grafana's Service), and the dashboard, reached through `kubectl port-forward`,
/// renders in headless Chromium with every panel and legend and no panel error.
async fn gears_sale(cluster: &LocalCluster, client: &Client, grafana: bool) {
    let ns = "node-gears";
    assert_exact_end(client, ns, "shop").await;
    step("gears: exact end of the sale on RedisGears 1 in a pod");
    if !grafana {
        return;
    }

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let grafana_pod = wait_for("the Grafana pod to be Ready", Duration::from_secs(300), || async {
        let lp = ListParams::default().labels("app.kubernetes.io/instance=shop,app.kubernetes.io/component=grafana");
        let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
        list.items.into_iter().find(pod_ready).ok_or_else(|| "no Ready Grafana pod".to_string())
    })
    .await;
    let stores = Api::<PopUpStore>::namespaced(client.clone(), ns);
    let message = wait_for("GrafanaReady=True from Grafana's answers", Duration::from_secs(300), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        match condition(&s, status::GRAFANA_READY) {
            Some((st, reason, message)) if st == "True" && reason == status::reason::AVAILABLE => Ok(message),
            _ => Err(conditions_text(&s)),
        }
    })
    .await;
    step(&format!("gears: Grafana pod {} Ready; GrafanaReady: {message}", grafana_pod.name_any()));

    let Some(browser) = dashboard_page::chromium() else {
        eprintln!(
            "SKIPPED: the gears store's dashboard screenshot: no chromium on PATH (apt-get install -y chromium) \
             nor POPUP_CHROMIUM"
        );
        return;
    };
    let dashboards = Api::<ConfigMap>::namespaced(client.clone(), ns).get("shop-grafana-dashboards").await.unwrap();
    let text = dashboards.data.as_ref().and_then(|d| d.get(render::grafana::DASHBOARD_FILE)).cloned();
    let dashboard: Value = serde_json::from_str(&text.expect("the dashboards ConfigMap's file")).unwrap();
    let forward = PortForward::start(cluster, ns, "svc/shop-grafana", 3000);
    let url = format!(
        "http://127.0.0.1:{}/d/{}?orgId=1&from=now-5m&to=now&kiosk",
        forward.port,
        dashboard["uid"].as_str().expect("the dashboard's uid")
    );
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-gears-dashboard.png");
    step(&format!("gears: rendering {url} in headless Chromium"));
    let shot = png.clone();
    tokio::task::spawn_blocking(move || dashboard_page::render_dashboard(&browser, &url, &dashboard, &shot))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    drop(forward);
    step(&format!("gears: the dashboard shows every panel and legend, no panel error; screenshot {}", png.display()));
}

/// The storage store: its Redis volume is a PVC that the cluster's default StorageClass (local-path-provisioner)
/// provisions under the cluster's state directory. The Redis pod is deleted mid-sale with `kubectl delete pod`;
/// the StatefulSet's new pod mounts the same volume, Redis reads its AOF back, and the sale ends exactly.
async fn storage_sale(cluster: &LocalCluster, client: &Client) -> (String, PathBuf) {
    let ns = STORAGE_NAMESPACE;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let claim = wait_for("the Redis volume claim to be Bound", Duration::from_secs(180), || async {
        let claim = claims.get("data-shop-redis-0").await.map_err(|e| e.to_string())?;
        let phase = claim.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Bound") { Ok(claim) } else { Err(format!("phase {phase:?}")) }
    })
    .await;
    let spec = claim.spec.clone().unwrap_or_default();
    // No class in the store: the API server filled in the cluster's default one.
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"), "the claim's class: {spec:?}");
    let volume_name = spec.volume_name.expect("a Bound claim names its volume");
    let volume = Api::<PersistentVolume>::all(client.clone()).get(&volume_name).await.expect("the claim's volume");
    let volume_spec = volume.spec.unwrap_or_default();
    let path = volume_spec
        .host_path
        .map(|h| h.path)
        .or(volume_spec.local.map(|l| l.path))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("volume {volume_name} is neither hostPath nor local"));
    assert!(
        path.starts_with(cluster.dir.join("local-path")),
        "volume {volume_name} lives at {}, not under the cluster's state directory",
        path.display()
    );
    step(&format!("storage: claim data-shop-redis-0 Bound to {volume_name} at {}", path.display()));

    wait_for_progress(client, ns, "shop", 5).await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let old_uid = pods.get("shop-redis-0").await.unwrap().metadata.uid;
    let mut con = redis_of(client, ns, "shop").await.expect("the storage store's Redis");
    let before = read_sale(&mut con).await.expect("the sale before the pod's deletion");
    drop(con);
    step(&format!("storage: kubectl delete pod shop-redis-0 mid-sale ({} completed)", before.completed));
    cluster.kubectl(&["delete", "pod", "--namespace", ns, "shop-redis-0", "--wait=false"]);
    wait_for("a new Redis pod on the same volume to be Ready", Duration::from_secs(180), || async {
        let pod = pods.get("shop-redis-0").await.map_err(|e| e.to_string())?;
        if pod.metadata.uid != old_uid && pod_ready(&pod) { Ok(()) } else { Err("the old pod, or not Ready".into()) }
    })
    .await;
    // What the new Redis read from the volume: at least every order completed before the deletion (an
    // emptyDir would have come back empty).
    let after = wait_for("the new Redis to answer", Duration::from_secs(60), || async {
        let mut con = redis_of(client, ns, "shop").await?;
        read_sale(&mut con).await
    })
    .await;
    assert!(
        after.completed >= before.completed && after.completed > 0,
        "the new Redis pod came back without the sale: {before:?} before, {after:?} after"
    );
    assert!(
        path.join("appendonlydir").is_dir() || path.join("appendonly.aof").is_file(),
        "no AOF in the provisioned directory {}",
        path.display()
    );
    assert_exact_end(client, ns, "shop").await;
    step("storage: exact end after the Redis pod was deleted; its new pod read the sale back from the volume");
    (volume_name, path)
}

/// What a TCP probe from the probe pod found.
#[derive(Debug, PartialEq)]
enum Reach {
    /// The server answered (Redis' reply to an unauthenticated PING, or an HTTP status line).
    Open,
    /// The connection was refused (kube-router's REJECT for a port a policy closes).
    Refused,
    /// Anything else (the probe pod not there yet, a timeout): never taken as proof either way.
    Unclear(String),
}

/// Opens a TCP connection from the probe pod (`node-probe/probe`, busybox) to `ip:port` with busybox `nc`,
/// sends `payload` and reads the answer for at most 3 s. (Async: a blocking call would stall every sale
/// checked in the same `join!`.)
async fn probe(cluster: &LocalCluster, ip: &str, port: u16, payload: &str) -> Reach {
    let script = format!("printf '{payload}' | timeout 3 nc {ip} {port} 2>&1; true");
    let out = tokio::process::Command::new(cluster.bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["exec", "--namespace", PROBE_NAMESPACE, "probe", "--", "sh", "-c", &script])
        .output()
        .await;
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => return Reach::Unclear(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => return Reach::Unclear(e.to_string()),
    };
    if out.contains("NOAUTH") || out.contains("HTTP/1.") {
        Reach::Open
    } else if out.contains("Connection refused") {
        Reach::Refused
    } else {
        Reach::Unclear(out)
    }
}

const REDIS_PING: &str = "PING\\r\\nQUIT\\r\\n";
const HTTP_GET: &str = "GET /api/health HTTP/1.0\\r\\n\\r\\n";

/// Polls the probe until it finds `want` at `what` (`ip:port`), with a deadline: kube-router applies a
/// policy when its informers see the change, a moment after the API server has it.
async fn wait_for_reach(cluster: &LocalCluster, what: &str, ip: &str, port: u16, payload: &str, want: Reach) {
    wait_for(
        &format!("{what} ({ip}:{port}) to be {want:?} from namespace {PROBE_NAMESPACE}"),
        Duration::from_secs(120),
        || async {
            match probe(cluster, ip, port, payload).await {
                found if found == want => Ok(()),
                found => Err(format!("{found:?}")),
            }
        },
    )
    .await;
    step(&format!("network: {what} ({ip}:{port}) from namespace {PROBE_NAMESPACE}: {want:?}"));
}

async fn pod_ip(client: &Client, ns: &str, name: &str) -> String {
    wait_for(&format!("{ns}/{name} to have an IP"), Duration::from_secs(180), || async {
        let pod = Api::<Pod>::namespaced(client.clone(), ns).get(name).await.map_err(|e| e.to_string())?;
        pod.status.and_then(|s| s.pod_ip).ok_or_else(|| "no IP yet".to_string())
    })
    .await
}

async fn service_ip(client: &Client, ns: &str, name: &str) -> String {
    let svc = Api::<Service>::namespaced(client.clone(), ns).get(name).await.expect("the Service");
    svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
}

/// The probe pod: busybox in its own namespace, no relation to any store, non-root.
async fn start_probe(cluster: &LocalCluster, client: &Client) {
    create_namespace(client, PROBE_NAMESPACE).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "labels": {"app.kubernetes.io/name": "probe"}},
        "spec": {
            "containers": [{
                "name": "probe",
                "image": cluster.image("POPUP_BUSYBOX_IMAGE"),
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
                }
            }],
            "terminationGracePeriodSeconds": 0
        }
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), PROBE_NAMESPACE);
    pods.create(&PostParams::default(), &pod).await.expect("create the probe pod");
    wait_for("the probe pod to be Ready", Duration::from_secs(120), || async {
        let pod = pods.get("probe").await.map_err(|e| e.to_string())?;
        if pod_ready(&pod) { Ok(()) } else { Err("not Ready".into()) }
    })
    .await;
}

/// The stores' NetworkPolicies, enforced by kube-router and proven with real connections from a pod in
/// another namespace: every Redis whose store has its policies is refused (pod IP and, for one, the Service's
/// ClusterIP), the storage store's Redis (`networkPolicy.enabled: false`) answers the very same probe, and
/// so does the managed Grafana (its policy lets anyone in). Meanwhile the stores' own pods and the operator
/// sell out and read the sales through those policies (the exact ends of step 3).
async fn network_policies(cluster: &LocalCluster, client: &Client, grafana: bool) {
    start_probe(cluster, client).await;
    // The probe works: it reaches a Redis that has no policy.
    let open = pod_ip(client, STORAGE_NAMESPACE, "shop-redis-0").await;
    wait_for_reach(
        cluster,
        "the storage store's Redis (networkPolicy.enabled: false)",
        &open,
        6379,
        REDIS_PING,
        Reach::Open,
    )
    .await;
    for ns in ["node-triggers", "node-native", "node-gears"] {
        let ip = pod_ip(client, ns, "shop-redis-0").await;
        wait_for_reach(cluster, &format!("{ns}'s Redis pod"), &ip, 6379, REDIS_PING, Reach::Refused).await;
    }
    let svc = service_ip(client, "node-triggers", "shop-redis").await;
    wait_for_reach(cluster, "node-triggers' Redis Service", &svc, 6379, REDIS_PING, Reach::Refused).await;
    if grafana {
        let ip = service_ip(client, "node-gears", "shop-grafana").await;
        // Grafana takes a while to listen; the wait covers it.
        wait_for(
            &format!("node-gears' Grafana ({ip}:3000) to answer namespace {PROBE_NAMESPACE}"),
            Duration::from_secs(300),
            || async {
                match probe(cluster, &ip, 3000, HTTP_GET).await {
                    Reach::Open => Ok(()),
                    found => Err(format!("{found:?}")),
                }
            },
        )
        .await;
        step(&format!("network: node-gears' Grafana Service ({ip}:3000) from namespace {PROBE_NAMESPACE}: Open"));
    } else {
        eprintln!(
            "WARNING: no managed Grafana in this run (no popup.local/grafana or popup.local/redismod): that \
             Grafana's policy lets anyone in was not checked"
        );
    }
}

/// The refusal was the policy: the same probe reaches the same Redis once its store turns its policies off.
async fn policy_off_lets_the_probe_in(cluster: &LocalCluster, client: &Client) {
    let ns = "node-triggers";
    let stores = Api::<PopUpStore>::namespaced(client.clone(), ns);
    stores
        .patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"networkPolicy": {"enabled": false}}})))
        .await
        .unwrap();
    let ip = pod_ip(client, ns, "shop-redis-0").await;
    wait_for_reach(
        cluster,
        "node-triggers' Redis pod after networkPolicy.enabled: false",
        &ip,
        6379,
        REDIS_PING,
        Reach::Open,
    )
    .await;
    // The operator has finished with the change before step 4 counts its writes.
    wait_for("the triggers store's new generation to be reconciled", Duration::from_secs(120), || async {
        let s = stores.get("shop").await.map_err(|e| e.to_string())?;
        let observed = s.status.as_ref().and_then(|st| st.observed_generation);
        let ready = condition(&s, status::READY).map(|c| c.0);
        if observed == s.metadata.generation && ready.as_deref() == Some("True") {
            Ok(())
        } else {
            Err(format!("observed {observed:?} of {:?}; {}", s.metadata.generation, conditions_text(&s)))
        }
    })
    .await;
}

/// `kubectl port-forward` to a local port of its choosing, stopped when dropped.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn start(cluster: &LocalCluster, ns: &str, target: &str, remote: u16) -> PortForward {
        let mut child = Command::new(cluster.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["port-forward", "--namespace", ns, "--address", "127.0.0.1", target, &format!(":{remote}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run kubectl port-forward");
        // Its first line: "Forwarding from 127.0.0.1:PORT -> REMOTE". Read on a thread, with a deadline.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so that kubectl never blocks on a full pipe ("Handling connection for ...").
            for _ in lines {}
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let port = first
            .as_ref()
            .ok()
            .and_then(|l| l.as_ref())
            .and_then(|l| l.as_ref().ok())
            .and_then(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        match port {
            Some(port) => PortForward { child, port },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kubectl port-forward {target} gave no local port: {first:?}");
            }
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_whole_path_on_a_real_node() {
    if std::env::var("POPUP_NODE_TESTS").as_deref() == Ok("skip") {
        eprintln!("SKIPPED: POPUP_NODE_TESTS=skip; the node tier did not run");
        return;
    }
    assert!(
        Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false),
        "the node tier runs a kubelet, containerd, a bridge and iptables rules: run the tests as root \
         (or set POPUP_NODE_TESTS=skip on a machine where that is impossible)"
    );
    let cluster = LocalCluster::get();
    let client = cluster.client().await;

    // ---- 1. helm install with the local operator image ---------------------------------------------------
    step("helm install the chart with the local operator image");
    let operator_image = cluster.image("POPUP_OPERATOR_IMAGE");
    let (repo, tag) = operator_image.rsplit_once(':').expect("image with a tag");
    let installed = cluster.try_helm(&[
        "install",
        RELEASE,
        root().join("charts/popup-operator").to_str().unwrap(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        &format!("image.repository={repo}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "logFormat=text",
        "--set",
        // The controller says which store it reconciled (step 4).
        "logLevel=info\\,popup_operator::controller=debug",
        "--wait",
        "--timeout",
        "3m",
    ]);
    if let Err(e) = installed {
        let describe = cluster.try_kubectl(&["describe", "pods", "-n", OPERATOR_NAMESPACE]);
        let logs = cluster.try_kubectl(&[
            "logs",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/instance=popup",
            "--tail=40",
        ]);
        panic!("{e}\n---- operator pods\n{describe:?}\n---- operator logs\n{logs:?}");
    }
    let operator_pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let operator_pod = wait_for("the operator pod to be Ready", Duration::from_secs(120), || async {
        let pods = operator_pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        pods.items.into_iter().find(pod_ready).ok_or_else(|| "no Ready operator pod".to_string())
    })
    .await;
    let sa = operator_pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default();
    assert!(sa.starts_with(RELEASE) && sa != "default", "the operator runs as the chart's ServiceAccount, not {sa:?}");

    // ---- 2. three stores, one per engine ---------------------------------------------------------------------
    step("creating a triggers store (user Secret with a nasty password), a native store and a gears store");
    for ns in STORE_NAMESPACES {
        create_namespace(&client, ns).await;
    }
    let nasty: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop-password"},
        "stringData": {"password": NASTY_PASSWORD},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "node-triggers").create(&PostParams::default(), &nasty).await.unwrap();
    let triggers = store_manifest(
        "shop",
        "triggers",
        json!({"image": cluster.image("POPUP_REDIS_STACK_IMAGE"), "passwordSecretRef": {"name": "shop-password"}}),
        json!({}),
    );
    let native = store_manifest(
        "shop",
        "native",
        json!({"image": cluster.image("POPUP_REDIS_IMAGE")}),
        json!({"processing": {"replicas": 2}}),
    );
    // The gears store: on the images of the real runtimes (RedisGears 1 laid out like redismod, Grafana with
    // the plugin) when hack/images.sh could build them, else on an image without RedisGears 1.
    let redismod = cluster.images.get("POPUP_REDISMOD_IMAGE");
    let grafana = cluster.images.get("POPUP_GRAFANA_IMAGE").filter(|_| redismod.is_some());
    let gears = match (redismod, grafana) {
        (Some(redismod), Some(grafana)) => {
            step(&format!("gears store: {redismod} with a managed Grafana on {grafana}"));
            store_manifest(
                "shop",
                "gears",
                json!({"image": redismod}),
                // The browser below opens the dashboard without logging in.
                json!({"grafana": {"mode": "managed", "image": grafana, "anonymousViewers": true}}),
            )
        }
        (Some(redismod), None) => {
            eprintln!(
                "WARNING: no Grafana runtime image (hack/images.sh builds popup.local/grafana only with \
                 POPUP_GRAFANA8 or ../shared/grafana8 next to the checkout): the gears store sells out on {redismod} \
                 without a Grafana pod; GrafanaReady and the dashboard were not checked"
            );
            store_manifest("shop", "gears", json!({"image": redismod}), json!({}))
        }
        (None, _) => {
            eprintln!(
                "WARNING: no RedisGears 1 runtime image (hack/images.sh builds popup.local/redismod, and \
                 popup.local/grafana, only with POPUP_REDISGEARS1 and POPUP_GRAFANA8, or ../shared/redisgears1 and \
                 ../shared/grafana8 next to the checkout): the gears store only shows its crash report on an image \
                 without RedisGears 1; no gears sale and no Grafana pod ran"
            );
            store_manifest("shop", "gears", json!({"image": cluster.image("POPUP_REDIS_IMAGE")}), json!({}))
        }
    };
    // The storage store: triggers (the cheapest engine here: Redis and the simulator, on an image already
    // imported), its volume a claim on the default StorageClass, its NetworkPolicies off.
    let storage = store_manifest(
        "shop",
        "triggers",
        json!({"image": cluster.image("POPUP_REDIS_STACK_IMAGE"), "storage": {"size": "1Gi"}}),
        json!({"networkPolicy": {"enabled": false}}),
    );
    for (ns, store) in
        [("node-triggers", &triggers), ("node-native", &native), ("node-gears", &gears), (STORAGE_NAMESPACE, &storage)]
    {
        Api::<PopUpStore>::namespaced(client.clone(), ns).create(&PostParams::default(), store).await.unwrap();
    }

    // ---- 3. faults in the middle of the sales ----------------------------------------------------------------
    // The triggers sale's exact end, told to the network check, which then turns that store's policies off.
    let triggers_done = tokio::sync::Notify::new();
    let redis_crash = async {
        wait_for_progress(&client, "node-triggers", "shop", 5).await;
        let pid = cluster.container_pid("node-triggers", "shop-redis-0", "redis").expect("the Redis container's PID");
        step(&format!("killing the triggers store's Redis server (host PID {pid}) mid-sale"));
        assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
        wait_for("the Redis container to restart", Duration::from_secs(120), || async {
            let pod = Api::<Pod>::namespaced(client.clone(), "node-triggers")
                .get("shop-redis-0")
                .await
                .map_err(|e| e.to_string())?;
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map(|c| c.restart_count);
            if restarts >= Some(1) && pod_ready(&pod) { Ok(()) } else { Err(format!("restarts {restarts:?}")) }
        })
        .await;
        assert_exact_end(&client, "node-triggers", "shop").await;
        step("triggers: exact end after the Redis crash");
        triggers_done.notify_one();
    };
    let processor_deletion = async {
        wait_for_progress(&client, "node-native", "shop", 5).await;
        let pods = Api::<Pod>::namespaced(client.clone(), "node-native");
        let lp = ListParams::default().labels("app.kubernetes.io/component=processor");
        let victim = pods.list(&lp).await.unwrap().items.into_iter().next().expect("a processor pod");
        step(&format!("deleting processor pod {} mid-sale", victim.name_any()));
        pods.delete(&victim.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .unwrap();
        // Later in the sale, the processor's Redis password is rotated: its pods roll to the new one while
        // Redis accepts both, and Redis is never restarted.
        wait_for_decided(&client, "node-native", "shop", 20).await;
        step("rotating the native processor's Redis password mid-sale");
        let secrets = Api::<Secret>::namespaced(client.clone(), "node-native");
        let old = secret_value(&secrets, "shop-redis-processor", "password").await;
        secrets
            .patch(
                "shop-redis-processor",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"password": ROTATED_PASSWORD}})),
            )
            .await
            .unwrap();
        assert_exact_end(&client, "node-native", "shop").await;
        wait_for("the old processor password to be retired", Duration::from_secs(180), || async {
            let mut con = redis_of(&client, "node-native", "shop").await?;
            let new_ok: redis::RedisResult<String> =
                redis::cmd("AUTH").arg("popup-processor").arg(ROTATED_PASSWORD).query_async(&mut con).await;
            let old_ok: redis::RedisResult<String> =
                redis::cmd("AUTH").arg("popup-processor").arg(&old).query_async(&mut con).await;
            match (new_ok, old_ok) {
                (Ok(_), Err(_)) => Ok(()),
                (new, old) => Err(format!("new password: {new:?}, old password: {old:?}")),
            }
        })
        .await;
        assert_eq!(redis_restarts(&client, "node-native").await, 0, "the rotation restarted Redis");
        wait_for("the processor Deployment to be available again", Duration::from_secs(120), || async {
            let d = Api::<Deployment>::namespaced(client.clone(), "node-native")
                .get("shop-processor")
                .await
                .map_err(|e| e.to_string())?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            if available == 2 { Ok(()) } else { Err(format!("{available} available")) }
        })
        .await;
        step("native: exact end after a processor pod was deleted and its password rotated; Redis never restarted");
        lost_sale_and_a_fresh_one_through_an_upgrade(cluster, &client).await;
    };
    let gears_check = async {
        if redismod.is_some() {
            gears_sale(cluster, &client, grafana.is_some()).await;
            return;
        }
        let stores = Api::<PopUpStore>::namespaced(client.clone(), "node-gears");
        let message = wait_for("the gears store to name what its image lacks", Duration::from_secs(180), || async {
            let s = stores.get("shop").await.map_err(|e| e.to_string())?;
            let text = conditions_text(&s);
            if text.contains("RedisGears 1") && condition(&s, status::READY).map(|c| c.0).as_deref() == Some("False") {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
        step(&format!("gears: {message}"));
    };
    let ((), (), (), (volume, volume_path), ()) =
        tokio::join!(redis_crash, processor_deletion, gears_check, storage_sale(cluster, &client), async {
            network_policies(cluster, &client, grafana.is_some()).await;
            triggers_done.notified().await;
            policy_off_lets_the_probe_in(cluster, &client).await;
        },);

    // ---- 4. a new operator pod writes nothing to unchanged children -------------------------------------------
    step("replacing the operator pod");
    // The pod of the upgrade (step 3), once its writes have settled: two looks a second apart agree.
    let operator_pod = wait_for("the one Ready operator pod", Duration::from_secs(120), || async {
        let pods = operator_pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        match pods.as_slice() {
            [one] if pod_ready(one) => Ok(one.clone()),
            other => Err(format!("{} operator pods", other.len())),
        }
    })
    .await;
    let before = wait_for("the operator's writes to settle", Duration::from_secs(60), || async {
        let first = operator_writes(&client).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = operator_writes(&client).await;
        if first == second { Ok(second) } else { Err("still writing".to_string()) }
    })
    .await;
    operator_pods
        .delete(&operator_pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    let new_pod = wait_for("a new operator pod to be Ready", Duration::from_secs(120), || async {
        let pods = operator_pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        pods.items
            .into_iter()
            .find(|p| p.name_any() != operator_pod.name_any() && pod_ready(p))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    // Every store reconciled to the end by the new pod: its log (the chart's logLevel, set at install) has a
    // "reconciled" line naming each store's namespace.
    wait_for("the new operator to finish a reconcile of each store", Duration::from_secs(120), || async {
        let logs = cluster.kubectl(&["logs", "--namespace", OPERATOR_NAMESPACE, &new_pod.name_any()]);
        let missing: Vec<&str> = STORE_NAMESPACES
            .into_iter()
            .filter(|ns| !logs.lines().any(|l| l.contains("reconciled") && l.contains(ns)))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("no reconcile finished yet in {missing:?}")) }
    })
    .await;
    // Its metrics count them too (a reconcile is counted before its "reconciled" line is logged).
    let ip = new_pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("operator pod IP");
    let metrics = http_get(&ip, 8080, "/metrics").await.expect("the operator's /metrics");
    let done = metric(&metrics, "popup_operator_reconcile_duration_seconds_count").unwrap_or(0.0);
    assert!(done >= 3.0, "{done} reconciles counted after three stores were reconciled");
    let after = operator_writes(&client).await;
    assert_eq!(before, after, "the new operator pod wrote to children that had not changed");

    // ---- 5. deleting the stores collects everything; helm uninstall leaves nothing ------------------------------
    step("deleting the stores");
    for ns in STORE_NAMESPACES {
        Api::<PopUpStore>::namespaced(client.clone(), ns).delete("shop", &DeleteParams::default()).await.unwrap();
    }
    // The claim outlives its StatefulSet (as every StatefulSet's does); deleting it gives the volume back once
    // the Redis pod is gone: the provisioner's helper pod removes the directory (reclaim policy Delete) and the
    // volume goes.
    step(&format!("deleting the storage store's claim: {volume} and {} go", volume_path.display()));
    cluster.kubectl(&["delete", "pvc", "--namespace", STORAGE_NAMESPACE, "data-shop-redis-0", "--wait=false"]);
    for ns in STORE_NAMESPACES {
        wait_for(&format!("every child and pod of {ns}/shop to be gone"), Duration::from_secs(180), || async {
            let left = store_objects(&client, ns).await;
            if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
        })
        .await;
    }
    wait_for(&format!("volume {volume} and its directory to be gone"), Duration::from_secs(120), || async {
        let left = Api::<PersistentVolume>::all(client.clone()).get_opt(&volume).await.map_err(|e| e.to_string())?;
        match (left, volume_path.exists()) {
            (None, false) => Ok(()),
            (left, exists) => Err(format!("volume: {:?}, directory there: {exists}", left.and_then(|v| v.status))),
        }
    })
    .await;
    step("helm uninstall");
    cluster.helm(&["uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "2m"]);
    wait_for("nothing of the operator left", Duration::from_secs(120), || async {
        let left = cluster.kubectl(&[
            "get",
            "deployments,pods,services,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings",
            "--all-namespaces",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "name",
        ]);
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    })
    .await;

    step("hack/local-cluster.sh down");
    cluster.down();
    step("the cluster is down");
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Everything the operator wrote to the stores' children: each child's managed-fields entries of the
/// operator's field manager (an apply that changes nothing leaves them untouched, a write does not).
async fn operator_writes(client: &Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ns in STORE_NAMESPACES {
        for (key, managed) in children_managed_fields(client, ns).await {
            out.insert(format!("{ns}/{key}"), managed);
        }
    }
    assert!(!out.is_empty(), "the stores have children");
    out
}

async fn children_managed_fields(client: &Client, ns: &str) -> Vec<(String, String)> {
    async fn of<K>(client: &Client, ns: &str) -> Vec<(String, String)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=popup-operator");
        Api::<K>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .expect("list children")
            .items
            .into_iter()
            .map(|o| {
                let managed: Vec<_> = o
                    .meta()
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter(|m| m.manager.as_deref().is_some_and(|n| n.contains("popup")))
                    .map(|m| format!("{:?} {:?} {:?}", m.manager, m.operation, m.time))
                    .collect();
                (format!("{}/{}", K::kind(&()), o.meta().name.clone().unwrap_or_default()), managed.join("|"))
            })
            .collect()
    }
    let mut all = of::<StatefulSet>(client, ns).await;
    all.extend(of::<Deployment>(client, ns).await);
    all.extend(of::<Service>(client, ns).await);
    all.extend(of::<ConfigMap>(client, ns).await);
    all.extend(of::<Secret>(client, ns).await);
    all.extend(of::<Job>(client, ns).await);
    all
}

/// What is left of a deleted store in its namespace: children and pods.
async fn store_objects(client: &Client, ns: &str) -> Vec<String> {
    let mut left: Vec<String> = children_managed_fields(client, ns).await.into_iter().map(|(k, _)| k).collect();
    let lp = ListParams::default().labels("app.kubernetes.io/instance=shop");
    left.extend(
        Api::<Pod>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| format!("Pod/{}", p.name_any())),
    );
    left
}

async fn http_get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}
