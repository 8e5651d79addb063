//! Which sale a Redis holds: the sale marker, a hash the operator writes when it starts a sale.
//!
//! A Redis that restarted without its data (an emptyDir after the pod moved, a volume that was
//! replaced) answers like any other Redis; only a mark written with the sale tells that the sale it
//! holds is the one that was started. The operator starts a sale in one transaction (the sale's old
//! keys deleted, `product` set to the stock, the marker written), remembers the marker in the store's
//! status, and from then on compares: a Redis without the marker, or with another sale's, has lost the
//! sale. The simulator Job joins a sale by its id and writes customers only while Redis holds that
//! sale, so a run that outlived its sale can never write into the next one. It checks a key of its own
//! for that, `popup:sale:<id>` (a string: the stock), which its Redis user may read and not change;
//! the marker hash is the operator's alone.
//!
//! | field | what |
//! |---|---|
//! | `id` | the sale's id: what the store asked for (its Job's settings hash) |
//! | `nonce` | random, new at each start: tells two starts of the same id apart |
//! | `stock` | units put on sale |
//! | `startedAt` | when, in ms since the epoch (the operator's clock) |

use redis::Value;

use super::{
    EngineError, PRODUCT, QUEUE_COMPLETE, QUEUE_REJECTED, QUEUES, RedisConn, Result, WORKER_HEARTBEAT_PREFIX, field,
    ts_enqueue_key, ts_len_key, value_i64, value_pairs, value_str,
};

/// Hash: the sale this Redis holds.
pub const SALE_MARKER: &str = "popup:sale";
/// Prefix of the simulator's view of the sale: `popup:sale:<id>` holds the stock while Redis holds sale
/// `<id>`.
pub const JOIN_KEY_PREFIX: &str = "popup:sale:";

/// The key a simulator that joined sale `id` checks.
pub fn join_key(id: &str) -> String {
    format!("{JOIN_KEY_PREFIX}{id}")
}

/// The stock of sale `id`, if Redis holds it (what a joining simulator reads).
pub async fn joined_stock(conn: &mut impl RedisConn, id: &str) -> Result<Option<i64>> {
    let key = join_key(id);
    let v: Value = redis::cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command(format!("GET {key}"), e))?;
    Ok(value_i64(&v))
}

/// A sale as its marker records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaleMarker {
    pub id: String,
    pub nonce: String,
    pub stock: i64,
    /// Milliseconds since the epoch.
    pub started_at_ms: i64,
}

/// The marker, as `HGETALL popup:sale` answered (`None`: there is none, or it is not one of ours).
pub fn parse(reply: &Value) -> Option<SaleMarker> {
    let pairs = value_pairs(reply)?;
    let text = |name: &str| field(&pairs, name).and_then(value_str);
    let number = |name: &str| field(&pairs, name).and_then(value_i64);
    Some(SaleMarker {
        id: text("id")?,
        nonce: text("nonce")?,
        stock: number("stock")?,
        started_at_ms: number("startedAt")?,
    })
}

/// The marker this Redis holds, if any.
pub async fn read(conn: &mut impl RedisConn) -> Result<Option<SaleMarker>> {
    let reply: Value = redis::cmd("HGETALL")
        .arg(SALE_MARKER)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command(format!("HGETALL {SALE_MARKER}"), e))?;
    Ok(parse(&reply))
}

/// Every key of a sale: `product`, the queues, their TimeSeries and every `popup:*` key (the marker,
/// the engines' sampler state and recorded errors, simulator logs) except native workers' heartbeats,
/// which belong to the running workers rather than to the sale.
pub async fn sale_keys(conn: &mut impl RedisConn) -> Result<Vec<String>> {
    let mut keys: Vec<String> = vec![PRODUCT.into()];
    for q in QUEUES {
        keys.extend([q.to_string(), ts_len_key(q), ts_enqueue_key(q)]);
    }
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("popup:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command("SCAN popup:*", e))?;
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(WORKER_HEARTBEAT_PREFIX)));
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Starts sale `id` with `stock` units: in one transaction, the previous sale's keys go, `product`
/// is set and the marker written (with the simulator's join key). A simulator still writing for an
/// earlier sale is refused from then on (its batches check its join key). The engines' result streams
/// are created empty, so that no other client can put a key of another type in their place before the
/// first decision. Returns the new marker.
pub async fn start(conn: &mut impl RedisConn, id: &str, stock: i64) -> Result<SaleMarker> {
    let keys = sale_keys(conn).await?;
    let marker = new_marker(id, stock);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for chunk in keys.chunks(500) {
        pipe.cmd("DEL").arg(chunk).ignore();
    }
    pipe.cmd("SET").arg(PRODUCT).arg(stock).ignore();
    pipe.cmd("HSET").arg(SALE_MARKER).arg(fields(&marker)).ignore();
    pipe.cmd("SET").arg(join_key(id)).arg(stock).ignore();
    for stream in [QUEUE_COMPLETE, QUEUE_REJECTED] {
        // An empty stream, without an entry an engine would read.
        pipe.cmd("XGROUP").arg("CREATE").arg(stream).arg("popup-start").arg("$").arg("MKSTREAM").ignore();
        pipe.cmd("XGROUP").arg("DESTROY").arg(stream).arg("popup-start").ignore();
    }
    let _: Value =
        pipe.query_async(conn).await.map_err(|e| EngineError::command("MULTI DEL/SET product/HSET popup:sale", e))?;
    Ok(marker)
}

/// Marks the sale this Redis already holds as sale `id`, without touching it: for a sale started
/// before there were markers (by an earlier operator version). Only when no marker is there; returns
/// the marker written, if it was.
pub async fn adopt(conn: &mut impl RedisConn, id: &str, stock: i64) -> Result<Option<SaleMarker>> {
    let marker = new_marker(id, stock);
    let set: i64 = redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
         redis.call('HSET', KEYS[1], unpack(ARGV)) redis.call('SET', KEYS[2], ARGV[6]) return 1",
    )
    .key(SALE_MARKER)
    .key(join_key(id))
    .arg(fields(&marker))
    .invoke_async(conn)
    .await
    .map_err(|e| EngineError::command(format!("marking the sale ({SALE_MARKER})"), e))?;
    Ok((set == 1).then_some(marker))
}

fn new_marker(id: &str, stock: i64) -> SaleMarker {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    SaleMarker {
        id: id.into(),
        nonce: format!("{:016x}", rand::random::<u64>()),
        stock,
        started_at_ms: now.as_millis() as i64,
    }
}

/// The marker's fields as `HSET` takes them.
fn fields(m: &SaleMarker) -> Vec<String> {
    vec![
        "id".into(),
        m.id.clone(),
        "nonce".into(),
        m.nonce.clone(),
        "stock".into(),
        m.stock.to_string(),
        "startedAt".into(),
        m.started_at_ms.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::reply::bulk;

    #[test]
    fn a_marker_needs_every_field() {
        let full = Value::Array(
            ["id", "ab12cd34", "nonce", "00ff", "stock", "500", "startedAt", "1800000000000"].map(bulk).to_vec(),
        );
        assert_eq!(
            parse(&full),
            Some(SaleMarker {
                id: "ab12cd34".into(),
                nonce: "00ff".into(),
                stock: 500,
                started_at_ms: 1_800_000_000_000
            })
        );
        let partial = Value::Array(["id", "ab12cd34", "stock", "500"].map(bulk).to_vec());
        assert_eq!(parse(&partial), None, "a hash somebody else wrote is not a marker");
        assert_eq!(parse(&Value::Array(vec![])), None, "HGETALL of a missing key");
    }
}
