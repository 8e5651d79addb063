//! The operator binary's start and stop against a real API server: a clear error when the CRD is not
//! installed, readiness once the controller runs, a clean exit on SIGTERM.

pub mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::control_plane::{ControlPlane, ControllerManager};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn start_without_crd_fails_clearly_then_runs_and_stops_on_sigterm() {
    let cp = ControlPlane::start(ControllerManager::Fast).await;
    let run = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_popup-operator"))
            .args(["run", "--http-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // No CRD yet: the operator says what to do and exits non-zero instead of crash-looping on watches.
    let out = run(free_port()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the PopUpStore CRD is not installed"), "{stderr}");
    assert!(stderr.contains("kubectl apply"), "the message names the fix: {stderr}");

    // With the CRD: ready once the controller runs, and SIGTERM stops it cleanly.
    support::cluster::install_crd(&cp).await;
    let port = free_port();
    let mut child = run(port);
    let started = Instant::now();
    while http_status(port, "/readyz") != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_status(port, "/healthz"), Some(200));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("controller stopped"), "{stderr}");
    cp.stop();
}
