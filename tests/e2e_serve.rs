//! Not a test: a control plane for trying things by hand (docs/testing.md).
//!
//!     cargo test --test e2e_serve -- --ignored --nocapture
//!
//! starts etcd, kube-apiserver and kube-controller-manager, installs the CRD, prints the admin kubeconfig
//! and keeps them running for `POPUP_E2E_SERVE_SECONDS` (default 3600) or until Ctrl-C; then stops them
//! and removes the directory (unless POPUP_E2E_KEEP is set).

pub mod support;

use std::time::Duration;

use support::control_plane::{ControlPlane, ControllerManager};

#[tokio::test]
#[ignore = "manual: keeps a control plane running (see docs/testing.md)"]
async fn serve_a_control_plane() {
    let cp = ControlPlane::start(ControllerManager::Fast).await;
    // A CRD the API server refuses is reported, not fatal: looking into that is one reason to be here.
    if let Err(e) =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(support::cluster::install_crd(&cp))).await
    {
        eprintln!("the CRD was not installed: {:?}", e.downcast_ref::<String>());
    }
    let secs: u64 = std::env::var("POPUP_E2E_SERVE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3600);
    eprintln!(
        "\ncontrol plane v{} at {} (no kubelet: pods never run)\n\n  export KUBECONFIG={}\n  kubectl get popupstores -A\n  \
         cargo run -- run --watch-namespace default --redis-address 127.0.0.1:6379\n\nlogs in {}; stopping in {secs} s or on Ctrl-C",
        cp.version,
        cp.url,
        cp.kubeconfig.display(),
        cp.dir.display()
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cp);
}
