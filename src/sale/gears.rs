//! `gears` engine: the original demo's two RedisGears 1 Python scripts (plus the contract's
//! sold-out and duplicate rules), registered with `RG.PYEXECUTE <code> ID <id> UPGRADE` and
//! checked with `RG.DUMPREGISTRATIONS`.
//!
//! RedisGears 1 only exists in the `redislabs/redismod` image, which cannot run here: the scripts'
//! logic is tested under CPython with `tests/gears_shim`, and the RG.* protocol handling against
//! recorded reply shapes (unit tests below).

use redis::Value;

use super::{
    EngineError, EngineHealth, EngineKind, LoadOutcome, ProcessingSettings, RedisConn, Result, field, script_hash,
    value_i64, value_items, value_pairs, value_str,
};

/// Session id of the order-completion script.
pub const ID_COMPLETE: &str = "popup-complete";
/// Session id of the TimeSeries script.
pub const ID_TIMESERIES: &str = "popup-timeseries";
/// The completion reader also fires after this long, so a partial last batch is processed.
pub const FLUSH_MS: u64 = 500;
/// MODULE LIST name of RedisGears 1.
pub const MODULE_NAME: &str = "rg";

const COMPLETE_TEMPLATE: &str = include_str!("assets/gears_complete.py");
const TIMESERIES_TEMPLATE: &str = include_str!("assets/gears_timeseries.py");

/// One script to register: session id, code, and the registration description that identifies
/// this exact code (`<id> sha=<hash>`; it shows up as `desc` in RG.DUMPREGISTRATIONS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GearsScript {
    pub id: &'static str,
    pub desc: String,
    pub code: String,
    /// Expected StreamReader arguments, compared with the registration's `args`.
    pub prefix: &'static str,
    pub batch: u64,
    pub duration_ms: u64,
}

fn render(id: &'static str, template: &str, settings: &ProcessingSettings) -> (String, String) {
    let text = settings.fill(template, &[("__FLUSH_MS__", FLUSH_MS.to_string())]);
    let desc = format!("{id} sha={}", script_hash(&text));
    (text.replace("__DESC__", &desc), desc)
}

/// The two scripts for these settings.
pub fn scripts(settings: &ProcessingSettings) -> [GearsScript; 2] {
    let (code, desc) = render(ID_COMPLETE, COMPLETE_TEMPLATE, settings);
    let complete = GearsScript {
        id: ID_COMPLETE,
        desc,
        code,
        prefix: "queue:orders",
        batch: u64::from(settings.batch()),
        duration_ms: FLUSH_MS,
    };
    let (code, desc) = render(ID_TIMESERIES, TIMESERIES_TEMPLATE, settings);
    let timeseries = GearsScript {
        id: ID_TIMESERIES,
        desc,
        code,
        prefix: "queue:*",
        batch: 10000,
        duration_ms: settings.interval_ms(),
    };
    [complete, timeseries]
}

/// One entry of RG.DUMPREGISTRATIONS, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    pub id: String,
    pub reader: String,
    pub desc: Option<String>,
    /// Session id/name from the `PD` field (`sessionName` in 1.2, `sessionId` in 1.0), if any.
    pub session: Option<String>,
    pub status: Option<String>,
    pub last_error: Option<String>,
    pub num_triggered: i64,
    pub num_failures: i64,
    /// StreamReader args: the stream prefix (`stream`), `batchSize`, `durationMS`, `trimStream`.
    pub prefix: Option<String>,
    pub batch_size: Option<i64>,
    pub duration_ms: Option<i64>,
    pub trim_stream: Option<bool>,
}

impl Registration {
    /// Is this registration (a version of) our script `id`?
    pub fn belongs_to(&self, id: &str) -> bool {
        self.session.as_deref() == Some(id)
            || self.desc.as_deref().is_some_and(|d| d == id || d.starts_with(&format!("{id} ")))
    }
}

/// Extract the session name from a PD string such as
/// `{'sessionName':'popup-complete', 'sessionDescription':'null', ...}` (1.2) or
/// `{'sessionId':'0000…-3', 'depsList':[]}` (1.0).
pub fn session_from_pd(pd: &str) -> Option<String> {
    for key in ["sessionName", "sessionId"] {
        for quote in ['\'', '"'] {
            let pat = format!("{quote}{key}{quote}");
            if let Some(pos) = pd.find(&pat) {
                let rest = pd[pos + pat.len()..].trim_start();
                let rest = rest.strip_prefix(':')?.trim_start();
                let q = rest.chars().next()?;
                if q != '\'' && q != '"' {
                    return None;
                }
                let rest = &rest[1..];
                let end = rest.find(q)?;
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        other => value_str(other).map(|s| matches!(s.as_str(), "1" | "true" | "True" | "TRUE")),
    }
}

/// Parse an RG.DUMPREGISTRATIONS reply (RESP2 flat lists or RESP3 maps, any key order,
/// unknown keys ignored).
pub fn parse_dump_registrations(reply: &Value) -> Result<Vec<Registration>> {
    let bad = |detail: String| EngineError::Protocol { command: "RG.DUMPREGISTRATIONS".into(), detail };
    let items = value_items(reply).ok_or_else(|| bad(format!("not an array: {reply:?}")))?;
    items
        .iter()
        .map(|item| {
            let pairs = value_pairs(item).ok_or_else(|| bad("registration is not a key/value list".into()))?;
            let id = field(&pairs, "id").and_then(value_str).ok_or_else(|| bad("registration without id".into()))?;
            let mut reg = Registration {
                id,
                reader: field(&pairs, "reader").and_then(value_str).unwrap_or_default(),
                desc: field(&pairs, "desc").and_then(value_str),
                session: field(&pairs, "PD").and_then(value_str).and_then(|pd| session_from_pd(&pd)),
                ..Registration::default()
            };
            if let Some(data) = field(&pairs, "RegistrationData").and_then(value_pairs) {
                reg.status = field(&data, "status").and_then(value_str);
                reg.last_error = field(&data, "lastError").and_then(value_str);
                reg.num_triggered = field(&data, "numTriggered").and_then(value_i64).unwrap_or(0);
                reg.num_failures = field(&data, "numFailures").and_then(value_i64).unwrap_or(0);
                if let Some(args) = field(&data, "args").and_then(value_pairs) {
                    reg.prefix = field(&args, "stream").or_else(|| field(&args, "prefix")).and_then(value_str);
                    reg.batch_size = field(&args, "batchSize").and_then(value_i64);
                    reg.duration_ms = field(&args, "durationMS").and_then(value_i64);
                    reg.trim_stream = field(&args, "trimStream").and_then(flag);
                }
            }
            Ok(reg)
        })
        .collect()
}

/// What to do about one script, given the current registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Exactly one registration with our description and arguments.
    Keep,
    /// None there.
    Load,
    /// Present but different/duplicated: unregister `stale` (registrations outside our session)
    /// and re-run with UPGRADE.
    Reload { reason: String, stale: Vec<String> },
}

/// Decide, from RG.DUMPREGISTRATIONS, whether `script` needs (re)loading.
pub fn plan(script: &GearsScript, regs: &[Registration]) -> Plan {
    let ours: Vec<&Registration> = regs.iter().filter(|r| r.belongs_to(script.id)).collect();
    // Registrations of the seed scripts (no ID/desc) on the same prefix would process orders twice.
    let foreign: Vec<&Registration> = regs
        .iter()
        .filter(|r| {
            !r.belongs_to(script.id)
                && r.desc.is_none()
                && r.session.as_deref().is_none_or(|s| !s.starts_with("popup-"))
                && r.reader == "StreamReader"
                && r.prefix.as_deref() == Some(script.prefix)
        })
        .collect();
    // Duplicates inside our session are removed by UPGRADE; registrations of ours that are not in
    // the session (e.g. registered without ID) must be unregistered by hand.
    let mut stale: Vec<String> =
        ours.iter().filter(|r| r.session.as_deref() != Some(script.id)).map(|r| r.id.clone()).collect();
    stale.extend(foreign.iter().map(|r| r.id.clone()));
    match ours.as_slice() {
        [] if foreign.is_empty() => Plan::Load,
        [] => Plan::Reload {
            reason: format!(
                "{} other StreamReader registration(s) on {} (the seed scripts?) are removed",
                foreign.len(),
                script.prefix
            ),
            stale,
        },
        [one] if foreign.is_empty() => {
            if one.desc.as_deref() != Some(script.desc.as_str()) {
                Plan::Reload {
                    reason: format!(
                        "{} has other code or settings ({} instead of {})",
                        script.id,
                        one.desc.as_deref().unwrap_or("no description"),
                        script.desc
                    ),
                    stale,
                }
            } else if one.batch_size.is_some_and(|b| b as u64 != script.batch)
                || (script.duration_ms > 0 && one.duration_ms.is_some_and(|d| d as u64 != script.duration_ms))
            {
                Plan::Reload {
                    reason: format!(
                        "{} runs with batch {:?}/duration {:?} ms, wanted {}/{}",
                        script.id, one.batch_size, one.duration_ms, script.batch, script.duration_ms
                    ),
                    stale,
                }
            } else {
                Plan::Keep
            }
        }
        many => Plan::Reload {
            reason: format!(
                "{} is registered {} times{}",
                script.id,
                many.len(),
                if foreign.is_empty() { "" } else { " next to other StreamReaders on its prefix" }
            ),
            stale,
        },
    }
}

async fn dump(conn: &mut impl RedisConn) -> Result<Vec<Registration>> {
    let reply: Value = redis::cmd("RG.DUMPREGISTRATIONS")
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("RG.DUMPREGISTRATIONS", e))?;
    parse_dump_registrations(&reply)
}

pub(crate) const MODULE: super::RequiredModule = super::RequiredModule {
    name: MODULE_NAME,
    display: "RedisGears 1",
    fix: "run the redislabs/redismod image (the only one with RedisGears 1), or set engine triggers (redis-stack) or native (redis-stack, Redis 8)",
};

pub(crate) async fn load(conn: &mut impl RedisConn, addr: &str, settings: &ProcessingSettings) -> Result<LoadOutcome> {
    let regs = dump(conn).await?;
    let mut loaded = 0;
    let mut reasons = Vec::new();
    for script in scripts(settings) {
        let plan = plan(&script, &regs);
        let stale = match plan {
            Plan::Keep => continue,
            Plan::Load => {
                loaded += 1;
                Vec::new()
            }
            Plan::Reload { reason, stale } => {
                reasons.push(reason);
                stale
            }
        };
        for id in stale {
            let _: Value = redis::cmd("RG.UNREGISTER")
                .arg(&id)
                .query_async(conn)
                .await
                .map_err(|e| EngineError::command(format!("RG.UNREGISTER {id}"), e))?;
        }
        let _: Value = redis::cmd("RG.PYEXECUTE")
            .arg(&script.code)
            .arg("ID")
            .arg(script.id)
            .arg("UPGRADE")
            .query_async(conn)
            .await
            .map_err(|e| EngineError::ScriptLoad {
                engine: EngineKind::Gears,
                addr: addr.to_string(),
                detail: format!("RG.PYEXECUTE ... ID {} UPGRADE: {e}", script.id),
            })?;
    }
    Ok(if !reasons.is_empty() {
        LoadOutcome::Reloaded { reason: reasons.join("; ") }
    } else if loaded > 0 {
        LoadOutcome::Loaded
    } else {
        LoadOutcome::AlreadyLoaded
    })
}

/// Health from a registration list (pure, for tests).
pub fn health_from(regs: &[Registration]) -> EngineHealth {
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for id in [ID_COMPLETE, ID_TIMESERIES] {
        let ours: Vec<&Registration> = regs.iter().filter(|r| r.belongs_to(id)).collect();
        match ours.as_slice() {
            [] => problems.push(format!("{id} is not registered")),
            [one] => {
                parts.push(format!("{id}:{}", one.id));
                if one.status.as_deref().is_some_and(|s| s != "OK" && s != "RUNNING") {
                    problems.push(format!(
                        "{id} status {} (last error: {})",
                        one.status.as_deref().unwrap_or("?"),
                        one.last_error.as_deref().unwrap_or("none")
                    ));
                }
            }
            many => problems.push(format!("{id} is registered {} times", many.len())),
        }
    }
    let healthy = problems.is_empty();
    EngineHealth {
        kind: EngineKind::Gears,
        healthy,
        summary: if healthy {
            format!("registrations {ID_COMPLETE} and {ID_TIMESERIES} present")
        } else {
            format!("{}; run popup-operator load --engine gears", problems.join("; "))
        },
        parts,
    }
}

pub(crate) async fn health(conn: &mut impl RedisConn) -> Result<EngineHealth> {
    Ok(health_from(&dump(conn).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn settings() -> ProcessingSettings {
        ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(5) }
    }

    /// One registration as RedisGears 1.2 prints it (RESP2), with our description and session.
    fn recorded_registration(
        id: &str,
        desc: Option<&str>,
        session: &str,
        prefix: &str,
        batch: i64,
        duration: i64,
    ) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("reader"),
            bulk("StreamReader"),
            bulk("desc"),
            desc.map(bulk).unwrap_or(Value::Nil),
            bulk("RegistrationData"),
            Value::Array(vec![
                bulk("mode"),
                bulk("async"),
                bulk("numTriggered"),
                Value::Int(12),
                bulk("numSuccess"),
                Value::Int(12),
                bulk("numFailures"),
                Value::Int(0),
                bulk("numAborted"),
                Value::Int(0),
                bulk("lastRunDurationMS"),
                Value::Int(0),
                bulk("totalRunDurationMS"),
                Value::Int(3),
                bulk("avgRunDurationMS"),
                bulk("0.25"),
                bulk("lastEstimatedLagMS"),
                Value::Int(1),
                bulk("avgEstimatedLagMS"),
                bulk("1.0"),
                bulk("lastError"),
                Value::Nil,
                bulk("args"),
                Value::Array(vec![
                    bulk("batchSize"),
                    Value::Int(batch),
                    bulk("durationMS"),
                    Value::Int(duration),
                    bulk("stream"),
                    bulk(prefix),
                    bulk("trimStream"),
                    Value::Int(1),
                    bulk("onFailedPolicy"),
                    bulk("continue"),
                    bulk("retryInterval"),
                    Value::Int(5000),
                ]),
                bulk("status"),
                bulk("OK"),
            ]),
            bulk("PD"),
            bulk(&format!(
                "{{'sessionName':'{session}', 'sessionDescription':'null', 'refCount': 1, 'linked': 'primary', 'ts': 'false', 'isInstallationNeeded':0, 'registrationsList':['{id}'], 'depsList':[]}}"
            )),
            bulk("ExecutionThreadPool"),
            bulk("DefaultPool"),
        ])
    }

    #[test]
    fn parses_recorded_dump_registrations() {
        let [complete, ts] = scripts(&settings());
        let reply = Value::Array(vec![
            recorded_registration(
                "0000000000000000000000000000000000000000-1",
                Some(&complete.desc),
                ID_COMPLETE,
                "queue:orders",
                3,
                500,
            ),
            recorded_registration(
                "0000000000000000000000000000000000000000-3",
                Some(&ts.desc),
                ID_TIMESERIES,
                "queue:*",
                10000,
                5000,
            ),
        ]);
        let regs = parse_dump_registrations(&reply).unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[0].session.as_deref(), Some(ID_COMPLETE));
        assert_eq!(regs[0].prefix.as_deref(), Some("queue:orders"));
        assert_eq!(regs[0].batch_size, Some(3));
        assert_eq!(regs[0].trim_stream, Some(true));
        assert_eq!(regs[0].num_triggered, 12);
        assert_eq!(regs[1].duration_ms, Some(5000));
        assert_eq!(plan(&complete, &regs), Plan::Keep);
        assert_eq!(plan(&ts, &regs), Plan::Keep);
        assert!(health_from(&regs).healthy);
    }

    #[test]
    fn parses_gears_1_0_shape_and_resp3_maps() {
        // 1.0: no ExecutionThreadPool, PD with sessionId, desc nil (seed script without ID).
        let reply = Value::Array(vec![Value::Map(vec![
            (bulk("id"), bulk("0000000000000000000000000000000000000000-7")),
            (bulk("reader"), Value::SimpleString("StreamReader".into())),
            (bulk("desc"), Value::Nil),
            (
                bulk("RegistrationData"),
                Value::Map(vec![
                    (bulk("mode"), bulk("async")),
                    (bulk("lastError"), bulk("Traceback ...")),
                    (
                        bulk("args"),
                        Value::Map(vec![
                            (bulk("batchSize"), Value::Int(3)),
                            (bulk("durationMS"), Value::Int(0)),
                            (bulk("stream"), bulk("queue:orders")),
                            (bulk("trimStream"), Value::Boolean(true)),
                        ]),
                    ),
                    (bulk("status"), bulk("ABORTED")),
                ]),
            ),
            (bulk("PD"), bulk("{'sessionId':'0000000000000000000000000000000000000000-6', 'depsList':[]}")),
        ])]);
        let regs = parse_dump_registrations(&reply).unwrap();
        assert_eq!(regs[0].session.as_deref(), Some("0000000000000000000000000000000000000000-6"));
        assert_eq!(regs[0].status.as_deref(), Some("ABORTED"));
        assert_eq!(regs[0].last_error.as_deref(), Some("Traceback ..."));
        assert_eq!(regs[0].trim_stream, Some(true));
        // A seed registration on queue:orders would double-process: reload and unregister it.
        let [complete, _] = scripts(&settings());
        match plan(&complete, &regs) {
            Plan::Reload { stale, .. } => {
                assert_eq!(stale, vec!["0000000000000000000000000000000000000000-7".to_string()])
            }
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(!health_from(&regs).healthy);
    }

    #[test]
    fn plans_load_reload_on_settings_change_and_duplicates() {
        let [complete, _] = scripts(&settings());
        assert_eq!(plan(&complete, &[]), Plan::Load);
        assert!(parse_dump_registrations(&Value::Array(vec![])).unwrap().is_empty());
        // registered with batch 3, wanted batch 10 -> other desc -> reload
        let old = parse_dump_registrations(&Value::Array(vec![recorded_registration(
            "x-1",
            Some(&complete.desc),
            ID_COMPLETE,
            "queue:orders",
            3,
            500,
        )]))
        .unwrap();
        let [complete10, _] = scripts(&ProcessingSettings { batch_size: 10, ..settings() });
        assert!(matches!(plan(&complete10, &old), Plan::Reload { ref stale, .. } if stale.is_empty()));
        // twice (once outside the session, e.g. PYEXECUTE without ID) -> reload, unregister the extra
        let twice = parse_dump_registrations(&Value::Array(vec![
            recorded_registration("x-1", Some(&complete.desc), ID_COMPLETE, "queue:orders", 3, 500),
            recorded_registration("x-2", Some(&complete.desc), "0000-9", "queue:orders", 3, 500),
        ]))
        .unwrap();
        match plan(&complete, &twice) {
            Plan::Reload { reason, stale } => {
                assert!(reason.contains("2 times"), "{reason}");
                assert_eq!(stale, vec!["x-2".to_string()]);
            }
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(!health_from(&twice).healthy);
    }

    #[test]
    fn session_from_pd_variants() {
        assert_eq!(session_from_pd("{'sessionName':'popup-complete', 'x':1}").as_deref(), Some("popup-complete"));
        assert_eq!(session_from_pd("{\"sessionId\": \"abc\"}").as_deref(), Some("abc"));
        assert_eq!(session_from_pd("{'depsList':[]}"), None);
    }

    #[test]
    fn scripts_carry_settings_and_description() {
        let [complete, ts] =
            scripts(&ProcessingSettings { batch_size: 5, metrics_interval: Duration::from_millis(2500) });
        assert!(complete.code.contains("batch=5, duration=500, trimStream=True"));
        assert!(complete.code.contains(&format!("desc='{}'", complete.desc)));
        assert!(ts.code.contains("duration=2500"));
        assert!(!complete.code.contains("__") || complete.code.contains("__gears"));
        assert!(!ts.code.contains("__DESC__"));
        assert_ne!(complete.desc, scripts(&settings())[0].desc);
    }
}
