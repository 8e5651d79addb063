//! Whether an engine is in place, alive and deciding orders, and what is wrong with the sale whatever
//! the engine.

use std::time::Duration;

use redis::Value;
use serde::Serialize;

use super::{
    ENGINE_ERROR, ENGINE_ERROR_TTL, EngineError, EngineKind, PRODUCT, QUEUE_ORDERS, RedisConn, Result, STALLED_AFTER,
    gears, is_canonical_i64, module_list, native, require_modules, server_addr, triggers, value_items, value_str,
};

/// Is the engine in place and alive?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineHealth {
    pub kind: EngineKind,
    /// True when every part the engine needs is present (and, for native, a worker is alive).
    pub healthy: bool,
    /// One line for humans / a condition message.
    pub summary: String,
    /// Gears registration ids, trigger names, or native worker consumer names found.
    pub parts: Vec<String>,
}

/// Is the engine present, alive and deciding orders? Unhealthy when a module it needs is missing,
/// its parts are missing (gears: both registrations; triggers: the library and its two stream
/// triggers; native: a worker heartbeat), or whatever the engine, when it recorded a failure in
/// the last [`ENGINE_ERROR_TTL`], an order has waited longer than [`STALLED_AFTER`], or `product`
/// is not an integer.
pub async fn engine_health(conn: &mut impl RedisConn, kind: EngineKind) -> Result<EngineHealth> {
    let addr = server_addr(conn).await;
    let mods = module_list(conn).await?;
    if let Err(e) = require_modules(&addr, &mods, kind) {
        return Ok(EngineHealth { kind, healthy: false, summary: e.to_string(), parts: Vec::new() });
    }
    let mut health = match kind {
        EngineKind::Gears => gears::health(conn).await?,
        EngineKind::Triggers => triggers::health(conn).await?,
        EngineKind::Native => native::health(conn).await?,
    };
    let problems = sale_problems(conn).await?;
    if !problems.is_empty() {
        health.healthy = false;
        health.summary = format!("{}; {}", problems.join("; "), health.summary);
    }
    Ok(health)
}

/// What is wrong with the sale whatever the engine: a recorded engine failure, an order waiting
/// too long, a `product` that is not an integer (every order would be rejected as sold out).
pub async fn sale_problems(conn: &mut impl RedisConn) -> Result<Vec<String>> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(ENGINE_ERROR);
    pipe.cmd("XRANGE").arg(QUEUE_ORDERS).arg("-").arg("+").arg("COUNT").arg(1);
    pipe.cmd("TIME");
    pipe.cmd("TYPE").arg(PRODUCT);
    let (error, oldest, time, product_type): (Option<String>, Value, (u64, u64), String) = pipe
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("GET popup:engine:error / XRANGE queue:orders / TIME", e))?;
    let mut problems = Vec::new();
    if let Some(error) = error {
        let minutes = ENGINE_ERROR_TTL.as_secs() / 60;
        problems.push(format!("the engine failed to decide an order in the last {minutes} minutes: {error}"));
    }
    let now_ms = time.0 * 1000 + time.1 / 1000;
    let oldest_ms = value_items(&oldest)
        .and_then(|entries| entries.first())
        .and_then(value_items)
        .and_then(|entry| entry.first())
        .and_then(value_str)
        .and_then(|id| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()));
    if let Some(ms) = oldest_ms {
        let waited = Duration::from_millis(now_ms.saturating_sub(ms));
        if waited > STALLED_AFTER {
            problems.push(format!(
                "the oldest order in {QUEUE_ORDERS} has waited {}s: the engine is not deciding orders",
                waited.as_secs()
            ));
        }
    }
    if product_type != "none" {
        let product: Value = redis::cmd("GET").arg(PRODUCT).query_async(conn).await.unwrap_or(Value::Nil);
        let text = value_str(&product).unwrap_or_else(|| format!("a {product_type}"));
        if product_type != "string" || !is_canonical_i64(&text) {
            problems.push(format!(
                "{PRODUCT} holds {text:?}, not an integer: every order is rejected as sold-out; SET {PRODUCT} <units>"
            ));
        }
    }
    Ok(problems)
}
