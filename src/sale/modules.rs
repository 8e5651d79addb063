//! The Redis modules each engine needs (`MODULE LIST`), and a message naming the fix when one is missing.

use redis::Value;

use super::{
    EngineError, EngineKind, RedisConn, Result, field, gears, triggers, value_i64, value_items, value_pairs, value_str,
};

/// A loaded module as MODULE LIST reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: String,
    pub version: i64,
}

/// `MODULE LIST`, parsed.
pub async fn module_list(conn: &mut impl RedisConn) -> Result<Vec<ModuleInfo>> {
    let reply: Value =
        redis::cmd("MODULE").arg("LIST").query_async(conn).await.map_err(|e| EngineError::command("MODULE LIST", e))?;
    parse_module_list(&reply)
}

fn parse_module_list(reply: &Value) -> Result<Vec<ModuleInfo>> {
    let bad = |detail: &str| EngineError::Protocol { command: "MODULE LIST".into(), detail: detail.into() };
    let items = value_items(reply).ok_or_else(|| bad("not an array"))?;
    items
        .iter()
        .map(|m| {
            let pairs = value_pairs(m).ok_or_else(|| bad("module entry is not a map"))?;
            let name = field(&pairs, "name").and_then(value_str).ok_or_else(|| bad("module without name"))?;
            let version = field(&pairs, "ver").and_then(value_i64).unwrap_or(0);
            Ok(ModuleInfo { name, version })
        })
        .collect()
}

fn describe_modules(mods: &[ModuleInfo]) -> String {
    if mods.is_empty() {
        "no modules".into()
    } else {
        mods.iter().map(|m| format!("{} {}", m.name, m.version)).collect::<Vec<_>>().join(", ")
    }
}

/// A module the engines need: its `MODULE LIST` name, what to call it, and what to do without it.
pub(crate) struct RequiredModule {
    pub name: &'static str,
    pub display: &'static str,
    pub fix: &'static str,
}

/// RedisTimeSeries for the native engine (and the default fix wording).
const TIMESERIES: RequiredModule = RequiredModule {
    name: "timeseries",
    display: "RedisTimeSeries",
    fix: "run redis-stack or Redis 8 (both include RedisTimeSeries) so the ts:* metrics can be written",
};

/// The modules an engine needs, its own engine module first so the message names the right image.
fn required_modules(kind: EngineKind) -> &'static [RequiredModule] {
    const GEARS: [RequiredModule; 2] = [
        gears::MODULE,
        RequiredModule {
            name: "timeseries",
            display: "RedisTimeSeries",
            fix: "run the redislabs/redismod image, which has RedisGears 1 and RedisTimeSeries",
        },
    ];
    const TRIGGERS: [RequiredModule; 2] = [
        triggers::MODULE,
        RequiredModule {
            name: "timeseries",
            display: "RedisTimeSeries",
            fix: "run redis-stack-server 7.2 or 7.4, which has RedisGears 2 and RedisTimeSeries",
        },
    ];
    match kind {
        EngineKind::Gears => &GEARS,
        EngineKind::Triggers => &TRIGGERS,
        EngineKind::Native => std::slice::from_ref(&TIMESERIES),
    }
}

/// Fail with a message naming the module, what Redis has instead, and the fix.
fn require_module(addr: &str, mods: &[ModuleInfo], module: &RequiredModule) -> Result<()> {
    if mods.iter().any(|m| m.name == module.name) {
        Ok(())
    } else {
        Err(EngineError::MissingModule {
            addr: addr.to_string(),
            module: module.display,
            found: describe_modules(mods),
            fix: module.fix,
        })
    }
}

/// Fail unless every module `kind` needs is loaded.
pub(crate) fn require_modules(addr: &str, mods: &[ModuleInfo], kind: EngineKind) -> Result<()> {
    required_modules(kind).iter().try_for_each(|m| require_module(addr, mods, m))
}

/// Fail with a helpful message unless RedisTimeSeries is loaded.
pub(crate) fn require_timeseries(addr: &str, mods: &[ModuleInfo]) -> Result<()> {
    require_module(addr, mods, &TIMESERIES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::reply::bulk;

    #[test]
    fn parses_module_list_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("timeseries"),
                bulk("ver"),
                Value::Int(11202),
                bulk("path"),
                bulk("/x.so"),
                bulk("args"),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![bulk("name"), bulk("redisgears_2"), bulk("ver"), Value::Int(20020)]),
        ]);
        let mods = parse_module_list(&resp2).unwrap();
        assert_eq!(mods[0].name, "timeseries");
        assert_eq!(mods[1].version, 20020);
        let resp3 = Value::Array(vec![Value::Map(vec![(bulk("name"), bulk("rg")), (bulk("ver"), Value::Int(10205))])]);
        assert_eq!(parse_module_list(&resp3).unwrap(), vec![ModuleInfo { name: "rg".into(), version: 10205 }]);
    }
}
