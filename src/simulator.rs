//! Load generator: the seed's `pop-up-store.js` in Rust.
//!
//! `SET product <stock>`; a new customer every random 0–`max_arrival` ms (or at a fixed `rate`
//! per second): `XADD queue:customers * id <n>`; each customer orders once, random
//! 0–`max_order_delay` ms later: `XADD queue:orders * id <n> customer <customer entry id>`.
//! Stops after `customers` customers (0 = when `product` reaches 0), then optionally waits until
//! every order it sent was decided (completed or rejected).

use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::engine::{
    DONE_ORDERS, EngineError, PRODUCT, QUEUE_CUSTOMERS, QUEUE_ORDERS, QUEUES, RedisConn, Result, SAMPLE_ADDED,
    SAMPLE_LAST, SERVED_CUSTOMERS, read_sale, ts_enqueue_key, ts_len_key,
};

/// How to run the sale.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Units of product (`SET product <stock>`).
    pub stock: i64,
    /// Customers to send; 0 = until `product` reaches 0.
    pub customers: u64,
    /// Random arrival gap upper bound (ignored when `rate` is set).
    pub max_arrival: Duration,
    /// Random delay between a customer's arrival and their order.
    pub max_order_delay: Duration,
    /// Fixed arrival rate (customers per second) instead of random gaps.
    pub rate: Option<f64>,
    /// Delete the sale's keys (queues, product, ts:*, popup:*) before starting.
    pub reset: bool,
    /// After sending, wait up to this long until every order sent was completed or rejected.
    pub wait_complete: Option<Duration>,
    /// Stop sending new customers after this long (safety net for `customers = 0`).
    pub max_duration: Option<Duration>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            stock: 100,
            customers: 0,
            max_arrival: Duration::from_millis(100),
            max_order_delay: Duration::from_millis(1000),
            rate: None,
            reset: false,
            wait_complete: None,
            max_duration: None,
        }
    }
}

/// Progress reported about once a second.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub customers: u64,
    pub orders: u64,
    pub product: Option<i64>,
    pub completed: u64,
    pub rejected: u64,
}

/// The final numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSummary {
    pub stock: i64,
    pub customers: u64,
    pub orders: u64,
    /// Orders completed during this run (growth of `queue:complete`).
    pub completed: u64,
    /// Orders rejected during this run (growth of `queue:rejected`).
    pub rejected: u64,
    pub product_left: Option<i64>,
    /// Every order sent was decided (only meaningful with `wait_complete`).
    pub all_processed: bool,
    pub duration_secs: f64,
    /// Customers per second actually sent.
    pub customers_per_sec: f64,
}

/// Delete every key of the sale (also removes the native consumer group with `queue:orders`).
pub async fn reset(conn: &mut impl RedisConn) -> Result<()> {
    let mut keys: Vec<String> =
        vec![PRODUCT.into(), SERVED_CUSTOMERS.into(), DONE_ORDERS.into(), SAMPLE_LAST.into(), SAMPLE_ADDED.into()];
    for q in QUEUES {
        keys.push(q.into());
        keys.push(ts_len_key(q));
        keys.push(ts_enqueue_key(q));
    }
    let _: Value =
        redis::cmd("DEL").arg(&keys).query_async(conn).await.map_err(|e| EngineError::command("DEL (reset)", e))?;
    Ok(())
}

async fn decided(conn: &mut impl RedisConn) -> Result<(u64, u64, Option<i64>)> {
    let s = read_sale(conn).await?;
    Ok((s.completed, s.rejected, s.product))
}

/// Run the sale. `progress` is called about once a second while sending and waiting.
pub async fn run<C: RedisConn + Clone + 'static>(
    conn: &mut C,
    cfg: &SimulatorConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<SimulationSummary> {
    if cfg.reset {
        reset(conn).await?;
    }
    let (base_completed, base_rejected, _) = decided(conn).await?;
    let _: Value = redis::cmd("SET")
        .arg(PRODUCT)
        .arg(cfg.stock)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("SET product", e))?;

    let started = Instant::now();
    let mut orders: JoinSet<Result<()>> = JoinSet::new();
    let mut customers: u64 = 0;
    let mut last_report = Instant::now();
    let mut last_stock_check = Instant::now();
    let mut ticker = cfg.rate.filter(|r| *r > 0.0).map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let max_arrival_ms = cfg.max_arrival.as_millis() as u64;
    let max_delay_ms = cfg.max_order_delay.as_millis() as u64;

    loop {
        if cfg.customers > 0 && customers >= cfg.customers {
            break;
        }
        if cfg.max_duration.is_some_and(|d| started.elapsed() >= d) {
            tracing::warn!("max duration reached; stopping the arrival of customers");
            break;
        }
        if cfg.customers == 0 && last_stock_check.elapsed() >= Duration::from_millis(200) {
            last_stock_check = Instant::now();
            let left: Option<i64> = redis::cmd("GET")
                .arg(PRODUCT)
                .query_async(conn)
                .await
                .map_err(|e| EngineError::command("GET product", e))?;
            if left.unwrap_or(0) <= 0 {
                break;
            }
        }
        match ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => {
                let gap = rand::rng().random_range(0..=max_arrival_ms);
                if gap > 0 {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
            }
        }
        customers += 1;
        let n = customers;
        let customer_id: String = redis::cmd("XADD")
            .arg(QUEUE_CUSTOMERS)
            .arg("*")
            .arg("id")
            .arg(n)
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command("XADD queue:customers", e))?;
        let delay = rand::rng().random_range(0..=max_delay_ms);
        let mut oconn = conn.clone();
        orders.spawn(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let _: String = redis::cmd("XADD")
                .arg(QUEUE_ORDERS)
                .arg("*")
                .arg("id")
                .arg(n)
                .arg("customer")
                .arg(&customer_id)
                .query_async(&mut oconn)
                .await
                .map_err(|e| EngineError::command("XADD queue:orders", e))?;
            Ok(())
        });
        // reap finished order tasks so errors surface early
        while let Some(done) = orders.try_join_next() {
            done.map_err(|e| EngineError::Other(format!("order task failed: {e}")))??;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let (c, r, p) = decided(conn).await?;
            progress(&Progress {
                customers,
                orders: customers - orders.len() as u64,
                product: p,
                completed: c.saturating_sub(base_completed),
                rejected: r.saturating_sub(base_rejected),
            });
        }
    }
    while let Some(done) = orders.join_next().await {
        done.map_err(|e| EngineError::Other(format!("order task failed: {e}")))??;
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let orders_sent = customers;

    let mut all_processed = false;
    let (mut completed, mut rejected, mut product_left);
    let wait_started = Instant::now();
    loop {
        let (c, r, p) = decided(conn).await?;
        completed = c.saturating_sub(base_completed);
        rejected = r.saturating_sub(base_rejected);
        product_left = p;
        if completed + rejected >= orders_sent {
            all_processed = true;
            break;
        }
        match cfg.wait_complete {
            Some(limit) if wait_started.elapsed() < limit => {
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    progress(&Progress { customers, orders: orders_sent, product: p, completed, rejected });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    let duration = started.elapsed().as_secs_f64();
    Ok(SimulationSummary {
        stock: cfg.stock,
        customers,
        orders: orders_sent,
        completed,
        rejected,
        product_left,
        all_processed,
        duration_secs: duration,
        customers_per_sec: if sent_secs > 0.0 { customers as f64 / sent_secs } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_serializes_camel_case() {
        let s = SimulationSummary {
            stock: 1,
            customers: 2,
            orders: 2,
            completed: 1,
            rejected: 1,
            product_left: Some(0),
            all_processed: true,
            duration_secs: 0.5,
            customers_per_sec: 4.0,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["productLeft"], 0);
        assert_eq!(v["allProcessed"], true);
    }
}
