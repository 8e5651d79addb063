//! Waiting for a state: a check asked again and again until it holds, with a deadline.

use std::time::{Duration, Instant};

/// Asks `check` every `every` until it gives a value; after `timeout`, `Err` with its last answer.
pub async fn until<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if started.elapsed() > timeout => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`until`], failing the test on timeout with `what` it waited for and the check's last answer.
pub async fn wait<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    until(timeout, every, check)
        .await
        .unwrap_or_else(|last| panic!("timed out after {timeout:?} waiting for {what}; last: {last}"))
}
