//! `triggers` engine: a RedisGears 2 JavaScript library (`assets/triggers.js`) with two stream
//! triggers, loaded with `TFUNCTION LOAD REPLACE` and checked with `TFUNCTION LIST WITHCODE`.

use redis::Value;

use super::{
    EngineError, EngineHealth, EngineKind, LoadOutcome, ProcessingSettings, RedisConn, Result, field, value_items,
    value_pairs, value_str,
};

/// Library name (`#!js api_version=1.0 name=popup`).
pub const LIBRARY: &str = "popup";
/// Stream trigger that decides orders (prefix `queue:orders`).
pub const TRIGGER_COMPLETE: &str = "popup_complete";
/// Stream trigger that samples the TimeSeries (prefix `queue:`).
pub const TRIGGER_METRICS: &str = "popup_metrics";
/// The MODULE LIST name of RedisGears 2.
pub const MODULE_NAME: &str = "redisgears_2";

const TEMPLATE: &str = include_str!("assets/triggers.js");

/// The library text for these settings (what TFUNCTION LOAD receives).
pub fn library_code(settings: &ProcessingSettings) -> String {
    settings.fill(TEMPLATE, &[])
}

/// What TFUNCTION LIST says about our library.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LibraryInfo {
    pub name: String,
    pub code: Option<String>,
    pub stream_triggers: Vec<String>,
}

/// Parse a `TFUNCTION LIST [WITHCODE]` reply (array of flat key/value lists or RESP3 maps).
pub fn parse_library_list(reply: &Value) -> Result<Vec<LibraryInfo>> {
    let bad = |detail: &str| EngineError::Protocol { command: "TFUNCTION LIST".into(), detail: detail.into() };
    let libs = value_items(reply).ok_or_else(|| bad("not an array"))?;
    libs.iter()
        .map(|lib| {
            let pairs = value_pairs(lib).ok_or_else(|| bad("library entry is not a map"))?;
            let name = field(&pairs, "name").and_then(value_str).ok_or_else(|| bad("library without name"))?;
            let code = field(&pairs, "code").and_then(value_str);
            let stream_triggers = field(&pairs, "stream_triggers")
                .and_then(value_items)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|t| {
                            // plain: a name; verbose: a map with `name`
                            value_str(t).or_else(|| value_pairs(t).and_then(|p| field(&p, "name").and_then(value_str)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(LibraryInfo { name, code, stream_triggers })
        })
        .collect()
}

async fn list_library(conn: &mut impl RedisConn) -> Result<Option<LibraryInfo>> {
    let reply: Value = redis::cmd("TFUNCTION")
        .arg("LIST")
        .arg("WITHCODE")
        .arg("LIBRARY")
        .arg(LIBRARY)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("TFUNCTION LIST WITHCODE LIBRARY popup", e))?;
    // LIBRARY is a filter on a name pattern; keep the exact match only.
    Ok(parse_library_list(&reply)?.into_iter().find(|l| l.name == LIBRARY))
}

pub(crate) const MODULE: super::RequiredModule = super::RequiredModule {
    name: MODULE_NAME,
    display: "RedisGears 2 (redisgears_2)",
    fix: "run redis-stack-server 7.2 or 7.4 (Redis 8 has no RedisGears 2), or set engine native",
};

pub(crate) async fn load(conn: &mut impl RedisConn, addr: &str, settings: &ProcessingSettings) -> Result<LoadOutcome> {
    let code = library_code(settings);
    let existing = list_library(conn).await?;
    let outcome = match &existing {
        None => LoadOutcome::Loaded,
        Some(lib) if lib.code.as_deref() != Some(code.as_str()) => {
            LoadOutcome::Reloaded { reason: "library popup has other code or settings".into() }
        }
        Some(lib)
            if !lib.stream_triggers.iter().any(|t| t == TRIGGER_COMPLETE)
                || !lib.stream_triggers.iter().any(|t| t == TRIGGER_METRICS) =>
        {
            LoadOutcome::Reloaded {
                reason: format!("library popup lacks stream triggers (has: {:?})", lib.stream_triggers),
            }
        }
        Some(_) => return Ok(LoadOutcome::AlreadyLoaded),
    };
    let _: Value =
        redis::cmd("TFUNCTION").arg("LOAD").arg("REPLACE").arg(&code).query_async(conn).await.map_err(|e| {
            EngineError::ScriptLoad {
                engine: EngineKind::Triggers,
                addr: addr.to_string(),
                detail: format!("TFUNCTION LOAD REPLACE: {e}"),
            }
        })?;
    Ok(outcome)
}

pub(crate) async fn health(conn: &mut impl RedisConn) -> Result<EngineHealth> {
    let lib = list_library(conn).await?;
    let parts = lib.as_ref().map(|l| l.stream_triggers.clone()).unwrap_or_default();
    let healthy = parts.iter().any(|t| t == TRIGGER_COMPLETE) && parts.iter().any(|t| t == TRIGGER_METRICS);
    let summary = match (&lib, healthy) {
        (None, _) => {
            "library popup is not loaded (TFUNCTION LIST shows no popup); run popup-operator load --engine triggers"
                .to_string()
        }
        (Some(_), true) => {
            format!("library popup loaded with stream triggers {TRIGGER_COMPLETE} and {TRIGGER_METRICS}")
        }
        (Some(_), false) => format!("library popup is loaded but its stream triggers are {parts:?}; reload it"),
    };
    Ok(EngineHealth { kind: EngineKind::Triggers, healthy, summary, parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::reply::bulk;

    #[test]
    fn library_code_substitutes_settings() {
        let code = library_code(&ProcessingSettings {
            batch_size: 7,
            metrics_interval: std::time::Duration::from_millis(1500),
        });
        assert!(code.starts_with("#!js api_version=1.0 name=popup\n"));
        assert!(code.contains("const INTERVAL_MS = 1500;"));
        assert!(code.contains("batch=7 "));
        assert!(!code.contains("__"));
    }

    #[test]
    fn parses_recorded_tfunction_list() {
        // Shape recorded from redis-stack 7.4 (RESP2), `TFUNCTION LIST WITHCODE LIBRARY popup`.
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("api_version"),
            bulk("1.0"),
            bulk("cluster_functions"),
            Value::Array(vec![]),
            bulk("code"),
            bulk("#!js api_version=1.0 name=popup\n"),
            bulk("configuration"),
            Value::Nil,
            bulk("engine"),
            bulk("js"),
            bulk("functions"),
            Value::Array(vec![]),
            bulk("keyspace_triggers"),
            Value::Array(vec![]),
            bulk("name"),
            bulk("popup"),
            bulk("pending_async_calls"),
            Value::Array(vec![]),
            bulk("pending_jobs"),
            Value::Int(0),
            bulk("stream_triggers"),
            Value::Array(vec![bulk("popup_complete"), bulk("popup_metrics")]),
            bulk("user"),
            bulk("default"),
        ])]);
        let libs = parse_library_list(&reply).unwrap();
        assert_eq!(libs.len(), 1);
        assert_eq!(libs[0].name, "popup");
        assert_eq!(libs[0].stream_triggers, ["popup_complete", "popup_metrics"]);
        assert!(libs[0].code.as_deref().unwrap().starts_with("#!js"));
        assert!(parse_library_list(&Value::Array(vec![])).unwrap().is_empty());
    }
}
