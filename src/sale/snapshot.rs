//! The sale's numbers, read in one round trip.

use redis::Value;
use serde::Serialize;

use super::{EngineError, PRODUCT, QUEUES, RedisConn, Result, value_i64};

/// The sale's numbers, as shown on the dashboard and in `PopUpStore.status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleSnapshot {
    /// `GET product` (None when the key does not exist).
    pub product: Option<i64>,
    /// `XLEN queue:customers`
    pub customers_waiting: u64,
    /// `XLEN queue:orders`
    pub orders_queued: u64,
    /// `XLEN queue:complete`
    pub completed: u64,
    /// `XLEN queue:rejected`
    pub rejected: u64,
}

impl SaleSnapshot {
    /// Units left (None without a `product` key); a negative value set by hand counts as 0.
    pub fn available(&self) -> Option<u64> {
        self.product.map(|p| p.max(0) as u64)
    }

    /// The stock the sale started with: what is left plus what was sold.
    pub fn stock(&self) -> Option<u64> {
        self.available().map(|a| a.saturating_add(self.completed))
    }

    /// Orders decided so far (completed or rejected).
    pub fn decided(&self) -> u64 {
        self.completed.saturating_add(self.rejected)
    }

    /// Sold out and every order decided: nothing can be sold any more and no order waits for its
    /// answer. (A customer still waiting has an order coming, so that is not over either.)
    pub fn is_over(&self) -> bool {
        self.available() == Some(0) && self.customers_waiting == 0 && self.orders_queued == 0
    }
}

/// Read the sale's numbers (GET product, XLEN of the four queues) in one round trip.
pub async fn read_sale(conn: &mut impl RedisConn) -> Result<SaleSnapshot> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(PRODUCT);
    for q in QUEUES {
        pipe.cmd("XLEN").arg(q);
    }
    let reply: Vec<Value> =
        pipe.query_async(conn).await.map_err(|e| EngineError::command("GET product / XLEN queue:*", e))?;
    let product = match reply.first() {
        Some(Value::Nil) | None => None,
        Some(v) => Some(value_i64(v).ok_or_else(|| EngineError::Protocol {
            command: "GET product".into(),
            detail: format!("product is not an integer: {v:?}"),
        })?),
    };
    let len = |i: usize| reply.get(i).and_then(value_i64).unwrap_or(0).max(0) as u64;
    Ok(SaleSnapshot { product, customers_waiting: len(1), orders_queued: len(2), completed: len(3), rejected: len(4) })
}
