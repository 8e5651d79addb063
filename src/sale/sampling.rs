//! The TimeSeries samples of the queues, written once per interval whoever asks.

use super::{
    ProcessingSettings, QUEUES, RedisConn, Result, SAMPLE_ADDED, SAMPLE_LAST, functions, ts_enqueue_key, ts_len_key,
};

/// Lua script that writes one TimeSeries sample per queue when an interval boundary has passed
/// since the last sample (shared by the native sampler and the idle-gap filler for triggers; the
/// triggers library implements the same rule in JavaScript).
pub const SAMPLE_LUA: &str = include_str!("assets/sample.lua");

/// Write one TimeSeries sample per queue if an interval boundary has passed since the last sample
/// (atomic: several callers in the same interval write once). Returns true when it wrote.
///
/// The sampler is the operator's function [`functions::SAMPLE`] (loaded by
/// [`load_scripts`](super::load_scripts) for the native and triggers engines): without it,
/// [`EngineError::ScriptMissing`](super::EngineError::ScriptMissing).
pub async fn sample_if_due(conn: &mut impl RedisConn, settings: &ProcessingSettings) -> Result<bool> {
    sample_with(&functions::Caller::new(), conn, settings).await
}

/// [`sample_if_due`] with a caller that remembers how this Redis runs scripts.
pub async fn sample_with(
    caller: &functions::Caller,
    conn: &mut impl RedisConn,
    settings: &ProcessingSettings,
) -> Result<bool> {
    let mut keys: Vec<String> = vec![SAMPLE_LAST.into(), SAMPLE_ADDED.into()];
    for q in QUEUES {
        keys.extend([q.to_string(), ts_len_key(q), ts_enqueue_key(q)]);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let wrote: i64 = caller.call(conn, &functions::SAMPLE, &keys, &[settings.interval_ms().to_string()]).await?;
    Ok(wrote == 1)
}
