//! Not a test: the scale benchmark of docs/benchmarks.md. Run it by hand (release build):
//!
//!     cargo test --release --test bench_scale -- --ignored --nocapture
//!
//! A real control plane, the real `popup-operator run` binary as a child process with the chart's
//! cluster-wide RBAC (a ServiceAccount token, so the audit log counts its requests), and
//! `POPUP_BENCH_STORES` stores (default 1000) created at once. It prints: the time until every child
//! of every store exists (seen through one metadata watch per kind), API requests per store while
//! converging (by verb and resource), the CPU used by the control plane, the operator and the benchmark
//! itself, the time until the controller manager has made every store's pods, requests and writes in a
//! quiet minute afterwards, the operator's CPU in that minute, and its resident memory. There is no
//! kubelet, so pods never run and the stores stay not-ready (waiting for Redis), which is the busier
//! steady state: a ready store is requeued less often.
//!
//! `POPUP_BENCH_CONTROLLER_MANAGER`: `kubeadm` (default: its controllers at the upstream default rates,
//! as a cluster set up by kubeadm runs them) or `fast` (the test tiers' 200 requests/s; see
//! `support::control_plane::ControllerManager`);
//! `POPUP_BENCH_NAMESPACES`: spread the stores over that many namespaces (default 1);
//! `POPUP_BENCH_BINARY`: another build of the operator (e.g. the musl one the image ships);
//! `POPUP_BENCH_LOG`: its `RUST_LOG` (default `warn`). Its log is kept in `$TMPDIR/popup-bench-operator.log`.

pub mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use popup_operator::crd::PopUpStore;
use serde_json::json;
use support::control_plane::ControllerManager;

/// The operator child process, killed however the benchmark ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)).filter_map(|v| v.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// The CPU seconds each of `processes` has used so far.
fn cpu_now(processes: &[(String, u32)]) -> Vec<f64> {
    processes.iter().map(|(_, pid)| cpu_secs(*pid)).collect()
}

/// `name N s, …`: what each of `processes` used since `before` (from [`cpu_now`]).
fn cpu_since(processes: &[(String, u32)], before: &[f64]) -> String {
    let used =
        processes.iter().zip(before).map(|((name, pid), before)| format!("{name} {:.1} s", cpu_secs(*pid) - before));
    used.collect::<Vec<_>>().join(", ")
}

/// The pids of the control plane's processes, by command name (those whose command line names `dir`).
fn control_plane_pids(dir: &std::path::Path) -> Vec<(String, u32)> {
    let dir = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let name = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default().to_string();
        if ["etcd", "kube-apiserver", "kube-controller-manager"].contains(&name.as_str())
            && args.iter().any(|a| a.contains(&dir))
        {
            found.push((name, pid));
        }
    }
    found.sort();
    found
}

/// The number of objects of kind `K` labelled as the operator's, kept up to date by one metadata watch.
/// A watch costs the API server one event per object; polling with lists (as this benchmark did until
/// 2026-12-07) took about a tenth of its CPU in a profile, on the cores the run it measured needs.
fn watch_count<K>(env: &support::cluster::TestEnv) -> Arc<AtomicUsize>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(env.admin.clone());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=popup-operator");
    tokio::spawn(async move {
        let mut names = HashSet::new();
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff().touched_objects());
        while let Some(object) = events.next().await {
            if let Ok(object) = object {
                names.insert((object.metadata.namespace, object.metadata.name));
                count.store(names.len(), Ordering::Relaxed);
            }
        }
    });
    seen
}

#[tokio::test]
#[ignore = "benchmark: run by hand, see docs/benchmarks.md"]
async fn scale_many_stores() {
    let stores: usize = std::env::var("POPUP_BENCH_STORES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let controller_manager = match std::env::var("POPUP_BENCH_CONTROLLER_MANAGER").as_deref() {
        Err(_) | Ok("kubeadm") => ControllerManager::Kubeadm,
        Ok("fast") => ControllerManager::Fast,
        Ok(other) => panic!("POPUP_BENCH_CONTROLLER_MANAGER={other}: use kubeadm or fast"),
    };
    let env = support::cluster::env_with("scale", controller_manager).await;
    let id = support::cluster::install_chart_rbac(&env, "popup", None).await;
    let kubeconfig = env.cp.dir.join(format!("{}.kubeconfig", id.username.replace(':', "_")));
    assert!(kubeconfig.exists(), "{}", kubeconfig.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let operator = KillOnDrop(
        // POPUP_BENCH_BINARY: another build of the operator, e.g. the static musl one the image ships.
        std::process::Command::new(
            std::env::var("POPUP_BENCH_BINARY").unwrap_or(env!("CARGO_BIN_EXE_popup-operator").into()),
        )
        .args(["run", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", std::env::var("POPUP_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(std::fs::File::create(std::env::temp_dir().join("popup-bench-operator.log")).unwrap())
        .spawn()
        .expect("start popup-operator run"),
    );
    let pid = operator.0.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);

    // POPUP_BENCH_NAMESPACES: the stores spread over this many namespaces (default 1, the test's own).
    let namespaces: Vec<String> = match std::env::var("POPUP_BENCH_NAMESPACES").ok().and_then(|s| s.parse().ok()) {
        Some(n) if n > 1 => (0..n).map(|k| format!("{}-{k}", env.ns)).collect(),
        _ => vec![env.ns.clone()],
    };
    for ns in namespaces.iter().filter(|ns| **ns != env.ns) {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(env.admin.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    }
    let api: Api<PopUpStore> = Api::all(env.admin.clone());
    let mut processes = control_plane_pids(&env.cp.dir);
    processes.push(("popup-operator".into(), pid));
    // What the benchmark's own watches and client cost, on the same two cores.
    processes.push(("the benchmark".into(), std::process::id()));
    let cpu_before = cpu_now(&processes);
    let started = Instant::now();
    futures::stream::iter(0..stores)
        .map(|i| {
            let api: Api<PopUpStore> = Api::namespaced(env.admin.clone(), &namespaces[i % namespaces.len()]);
            async move {
                let store: PopUpStore = serde_json::from_value(json!({
                    "apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore",
                    "metadata": {"name": format!("s{i:03}")}, "spec": {},
                }))
                .unwrap();
                api.create(&PostParams::default(), &store).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let created = started.elapsed();

    // Every store's children (`popup-operator render` of `spec: {}`): 5 Secrets (Redis admin, ACL file,
    // Grafana admin, Grafana's and the simulator's Redis users), 3 ConfigMaps, 3 Services, 2
    // NetworkPolicies, the Redis StatefulSet and Grafana's Deployment. The simulator Job waits for Redis.
    let counts = [
        watch_count::<Secret>(&env),
        watch_count::<ConfigMap>(&env),
        watch_count::<Service>(&env),
        watch_count::<NetworkPolicy>(&env),
        watch_count::<StatefulSet>(&env),
        watch_count::<Deployment>(&env),
    ];
    let expected = [5 * stores, 3 * stores, 3 * stores, 2 * stores, stores, stores];
    // What the controller manager makes of them: the Redis pod and Grafana's.
    let pods = watch_count::<Pod>(&env);
    let mut peak_rss = 0;
    let converged = loop {
        peak_rss = peak_rss.max(rss_kib(pid));
        let seen: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        if seen == expected {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "not converged after 10 min: {seen:?} of {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every store has its first status, then what converging cost is counted.
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let pending =
            list.items.iter().filter(|s| s.status.as_ref().and_then(|st| st.observed_generation).is_none()).count();
        if pending == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "{pending} stores without a status after 15 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let statused = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_converging = cpu_since(&processes, &cpu_before);
    let converging = support::cluster::audited_requests(env.cp, &id.username);
    let converging_writes = converging.iter().filter(|r| support::cluster::is_write(&r.verb)).count();

    // The controller manager may still be making pods (slowly, at kubeadm's rates): how long until a
    // store's pods all exist, on this machine.
    while pods.load(Ordering::Relaxed) < 2 * stores {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{} of {} pods after 30 min",
            pods.load(Ordering::Relaxed),
            2 * stores
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods_exist = started.elapsed();
    let cpu_until_pods = cpu_since(&processes, &cpu_before);

    // Then the controller manager settles the objects' status, each write of which wakes the store's
    // reconcile: the quiet minute starts once it uses under 5% of a core over 5 s.
    let controller_manager_pid =
        processes.iter().find(|(name, _)| name == "kube-controller-manager").map(|(_, p)| *p).unwrap();
    loop {
        let before = cpu_secs(controller_manager_pid);
        tokio::time::sleep(Duration::from_secs(5)).await;
        if cpu_secs(controller_manager_pid) - before < 0.25 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2400), "the controller manager still busy after 40 min");
    }
    let settled = started.elapsed();

    // A quiet minute: no request is expected, but the stores, all waiting for Redis, are requeued.
    let quiet = Duration::from_secs(60);
    let operator_cpu_before_quiet = cpu_secs(pid);
    let cpu_before_quiet = cpu_now(&processes);
    tokio::time::sleep(quiet).await;
    let operator_cpu_at_rest = cpu_secs(pid) - operator_cpu_before_quiet;
    let cpu_quiet = cpu_since(&processes, &cpu_before_quiet);
    peak_rss = peak_rss.max(rss_kib(pid));
    let all: Vec<_> =
        support::cluster::audited_requests(env.cp, &id.username).into_iter().skip(converging.len()).collect();
    // A watch's request is logged when it ends (the API server closes each after a few minutes and the
    // operator opens it again): that is not a reconcile's request.
    let (rewatches, steady): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.verb == "watch");
    let steady_writes: Vec<String> = steady
        .iter()
        .filter(|r| support::cluster::is_write(&r.verb) && r.resource != "events")
        .map(|r| r.to_string())
        .collect();
    let steady_rss = rss_kib(pid);
    drop(operator);

    let per = |n: usize| n as f64 / stores as f64;
    println!(
        "\n== scale benchmark: {stores} PopUpStores in {} namespace(s), Kubernetes {}, controller manager {:?}",
        namespaces.len(),
        env.cp.version,
        controller_manager
    );
    println!("stores created by the client in        {:>8.2} s", created.as_secs_f64());
    println!("all children of all stores exist after {:>8.2} s", converged.as_secs_f64());
    println!("every store has a status after         {:>8.2} s", statused.as_secs_f64());
    println!(
        "requests while converging              {:>8} ({:.1} per store, {} writes = {:.1} per store)",
        converging.len(),
        per(converging.len()),
        converging_writes,
        per(converging_writes)
    );
    let mut converging_by_kind = std::collections::BTreeMap::<String, usize>::new();
    for r in &converging {
        let sub = if r.subresource.is_empty() { String::new() } else { format!("/{}", r.subresource) };
        *converging_by_kind.entry(format!("{} {}{sub}", r.verb, r.resource)).or_default() += 1;
    }
    println!("converging requests by verb and resource: {converging_by_kind:?}");
    println!("CPU used until every store had a status: {cpu_converging}");
    println!("the controller manager's pods all exist after {:>5.2} s", pods_exist.as_secs_f64());
    println!("CPU used until then: {cpu_until_pods}");
    println!("the controller manager settled after   {:>8.2} s", settled.as_secs_f64());
    println!(
        "requests in the next {} s               {:>8} ({:.1} per store), writes other than events: {}; watches renewed: {}",
        quiet.as_secs(),
        steady.len(),
        per(steady.len()),
        steady_writes.len(),
        rewatches.len()
    );
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for r in &steady {
        *by_kind.entry(format!("{} {}", r.verb, r.resource)).or_default() += 1;
    }
    println!("steady-state requests by verb and resource: {by_kind:?}");
    println!(
        "operator CPU in the quiet minute        {:>8.2} s ({:.1} ms per store per minute)",
        operator_cpu_at_rest,
        operator_cpu_at_rest * 1000.0 / stores as f64 * 60.0 / quiet.as_secs_f64()
    );
    // A controller manager still catching up (status of ReplicaSets and Deployments) wakes reconciles.
    println!("CPU used in the quiet minute: {cpu_quiet}");
    println!(
        "operator RSS: idle {} MiB, peak {} MiB, after the quiet minute {} MiB",
        idle_rss / 1024,
        peak_rss / 1024,
        steady_rss / 1024
    );
    assert!(steady_writes.is_empty(), "steady state wrote:\n{}", steady_writes.join("\n"));
}
