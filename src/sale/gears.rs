//! `gears` engine: the original demo's two RedisGears 1 Python scripts (plus the contract's
//! sold-out and duplicate rules), registered with `RG.PYEXECUTE <code> ID <id> UPGRADE` and
//! checked with `RG.DUMPREGISTRATIONS`.
//!
//! What RedisGears 1.2 does and the design rests on (seen on the real runtime, docs/engines.md):
//! every StreamReader on a stream reads through one consumer group (`__gears_consumer_group__`)
//! shared by all registrations, so `popup-complete` must be the only StreamReader that matches
//! `queue:orders`; the queue metrics count entries with a KeysReader instead of reading streams.

use redis::Value;

use super::{
    EngineError, EngineHealth, EngineKind, GEARS_SWEEP, LoadOutcome, ProcessingSettings, QUEUE_ORDERS, RedisConn,
    Result, SAMPLE_CLOCK, field, script_hash, value_i64, value_items, value_pairs, value_str,
};

/// Session id of the order-completion script.
pub const ID_COMPLETE: &str = "popup-complete";
/// Session id of the TimeSeries script.
pub const ID_TIMESERIES: &str = "popup-timeseries";
/// The completion reader also fires after this long, so a partial last batch is processed.
pub const FLUSH_MS: u64 = 500;
/// How often the completion script sweeps `queue:orders` for orders its reader missed, and how old
/// an order must be for the sweep to decide it (the reader's own flush comes well before).
pub const SWEEP_EVERY_MS: u64 = 1000;
pub const SWEEP_AFTER_MS: u64 = 4 * FLUSH_MS;
/// MODULE LIST name of RedisGears 1.
pub const MODULE_NAME: &str = "rg";
/// The consumer group every RedisGears 1 StreamReader reads a stream through.
pub const CONSUMER_GROUP: &str = "__gears_consumer_group__";

const COMPLETE_TEMPLATE: &str = include_str!("assets/gears_complete.py");
const TIMESERIES_TEMPLATE: &str = include_str!("assets/gears_timeseries.py");

/// What a registration reads, as RG.DUMPREGISTRATIONS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A StreamReader on the streams `prefix` matches, firing on `batch` entries or after `duration_ms`.
    Stream { prefix: &'static str, batch: u64, duration_ms: u64 },
    /// A KeysReader running synchronously on `event` for the keys `prefix` matches.
    Keys { prefix: &'static str, event: &'static str },
}

/// One script to register: session id, code, and the registration description that identifies
/// this exact code (`<id> sha=<hash>`; it shows up as `desc` in RG.DUMPREGISTRATIONS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GearsScript {
    pub id: &'static str,
    pub desc: String,
    pub code: String,
    /// The registrations the code makes, each compared with what RedisGears reports.
    pub triggers: Vec<Trigger>,
}

fn render(id: &'static str, template: &str, settings: &ProcessingSettings) -> (String, String) {
    let text = settings.fill(
        template,
        &[
            ("__FLUSH_MS__", FLUSH_MS.to_string()),
            ("__SWEEP_EVERY_MS__", SWEEP_EVERY_MS.to_string()),
            ("__SWEEP_AFTER_MS__", SWEEP_AFTER_MS.to_string()),
        ],
    );
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
        triggers: vec![
            Trigger::Stream { prefix: QUEUE_ORDERS, batch: u64::from(settings.batch()), duration_ms: FLUSH_MS },
            Trigger::Keys { prefix: GEARS_SWEEP, event: "expired" },
        ],
    };
    let (code, desc) = render(ID_TIMESERIES, TIMESERIES_TEMPLATE, settings);
    let timeseries = GearsScript {
        id: ID_TIMESERIES,
        desc,
        code,
        triggers: vec![
            Trigger::Keys { prefix: "queue:*", event: "xadd" },
            Trigger::Keys { prefix: SAMPLE_CLOCK, event: "expired" },
        ],
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
    /// The key pattern: a StreamReader's `stream`, a KeysReader's `regex` (a trailing `*` makes it
    /// a prefix, otherwise it is the whole key name).
    pub prefix: Option<String>,
    /// StreamReader args: `batchSize`, `durationMS`, `trimStream`.
    pub batch_size: Option<i64>,
    pub duration_ms: Option<i64>,
    pub trim_stream: Option<bool>,
    /// KeysReader args: `eventTypes`, and the registration's `mode` (`sync`, `async`, `async_local`).
    pub event_types: Vec<String>,
    pub mode: Option<String>,
}

impl Registration {
    /// Is this registration (a version of) our script `id`?
    pub fn belongs_to(&self, id: &str) -> bool {
        self.session.as_deref() == Some(id)
            || self.desc.as_deref().is_some_and(|d| d == id || d.starts_with(&format!("{id} ")))
    }

    /// Does RedisGears run this registration on `key`? (Its rule: a pattern ending in `*` is a
    /// prefix, any other the whole name.)
    pub fn matches(&self, key: &str) -> bool {
        self.prefix.as_deref().is_some_and(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == p,
        })
    }

    /// Is this registration `trigger`, with its arguments?
    fn is(&self, trigger: &Trigger) -> bool {
        self.reads_like(trigger)
            && match trigger {
                Trigger::Stream { batch, duration_ms, .. } => {
                    self.batch_size.is_none_or(|b| b as u64 == *batch)
                        && self.duration_ms.is_none_or(|d| d as u64 == *duration_ms)
                }
                Trigger::Keys { .. } => self.mode.as_deref().is_none_or(|m| m == "sync"),
            }
    }

    /// The same reader on the same keys as `trigger`, whatever its settings.
    fn reads_like(&self, trigger: &Trigger) -> bool {
        match trigger {
            Trigger::Stream { prefix, .. } => self.reader == "StreamReader" && self.prefix.as_deref() == Some(*prefix),
            Trigger::Keys { prefix, event } => {
                self.reader == "KeysReader"
                    && self.prefix.as_deref() == Some(*prefix)
                    && self.event_types.iter().any(|e| e.eq_ignore_ascii_case(event))
            }
        }
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
                reg.mode = field(&data, "mode").and_then(value_str);
                reg.status = field(&data, "status").and_then(value_str);
                // 1.2 replies an empty string (RESP2 nil on some builds) when there is no error.
                reg.last_error = field(&data, "lastError").and_then(value_str).filter(|e| !e.is_empty());
                reg.num_triggered = field(&data, "numTriggered").and_then(value_i64).unwrap_or(0);
                reg.num_failures = field(&data, "numFailures").and_then(value_i64).unwrap_or(0);
                if let Some(args) = field(&data, "args").and_then(value_pairs) {
                    reg.prefix = ["stream", "regex", "prefix"].iter().find_map(|k| field(&args, k).and_then(value_str));
                    reg.batch_size = field(&args, "batchSize").and_then(value_i64);
                    reg.duration_ms = field(&args, "durationMS").and_then(value_i64);
                    reg.trim_stream = field(&args, "trimStream").and_then(flag);
                    reg.event_types = field(&args, "eventTypes")
                        .and_then(value_items)
                        .map(|events| events.iter().filter_map(value_str).collect())
                        .unwrap_or_default();
                }
            }
            Ok(reg)
        })
        .collect()
}

/// What to do about one script, given the current registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Exactly the script's registrations, with our description and arguments.
    Keep,
    /// None there.
    Load,
    /// Present but different/duplicated: unregister `stale` (registrations outside our session)
    /// and re-run with UPGRADE.
    Reload { reason: String, stale: Vec<String> },
}

/// StreamReaders that are none of our scripts but read `queue:orders`: the seed's scripts, or
/// anybody's. They share the completion reader's consumer group and would take orders from it.
fn foreign_order_readers(regs: &[Registration]) -> Vec<&Registration> {
    regs.iter()
        .filter(|r| {
            r.reader == "StreamReader"
                && r.matches(QUEUE_ORDERS)
                && !r.belongs_to(ID_COMPLETE)
                && !r.belongs_to(ID_TIMESERIES)
        })
        .collect()
}

/// Decide, from RG.DUMPREGISTRATIONS, whether `script` needs (re)loading.
pub fn plan(script: &GearsScript, regs: &[Registration]) -> Plan {
    let ours: Vec<&Registration> = regs.iter().filter(|r| r.belongs_to(script.id)).collect();
    // Another reader of queue:orders is removed with the completion script's plan.
    let foreign = if script.id == ID_COMPLETE { foreign_order_readers(regs) } else { Vec::new() };
    // Registrations replaced by UPGRADE are those of our session; registrations of ours that are
    // not in the session (e.g. registered without ID) must be unregistered by hand.
    let mut stale: Vec<String> =
        ours.iter().filter(|r| r.session.as_deref() != Some(script.id)).map(|r| r.id.clone()).collect();
    stale.extend(foreign.iter().map(|r| r.id.clone()));
    if !foreign.is_empty() {
        return Plan::Reload {
            reason: format!(
                "{} other StreamReader registration(s) reading {QUEUE_ORDERS} (the seed scripts?) are removed: they \
                 share RedisGears' consumer group with {} and take orders from it",
                foreign.len(),
                script.id
            ),
            stale,
        };
    }
    if ours.is_empty() {
        return Plan::Load;
    }
    if let Some(other) = ours.iter().find(|r| r.desc.as_deref() != Some(script.desc.as_str())) {
        return Plan::Reload {
            reason: format!(
                "{} has other code or settings ({} instead of {})",
                script.id,
                other.desc.as_deref().unwrap_or("no description"),
                script.desc
            ),
            stale,
        };
    }
    let each_once = ours.len() == script.triggers.len()
        && script.triggers.iter().all(|t| ours.iter().filter(|r| r.is(t)).count() == 1);
    if each_once {
        Plan::Keep
    } else {
        Plan::Reload {
            reason: format!(
                "{} has {} registration(s) that are not its {} ({})",
                script.id,
                ours.len(),
                script.triggers.len(),
                ours.iter().map(|r| describe(r)).collect::<Vec<_>>().join(", ")
            ),
            stale,
        }
    }
}

fn describe(r: &Registration) -> String {
    match r.reader.as_str() {
        "StreamReader" => format!(
            "StreamReader {} batch {:?} duration {:?} ms",
            r.prefix.as_deref().unwrap_or("?"),
            r.batch_size,
            r.duration_ms
        ),
        other => format!("{other} {} on {}", r.prefix.as_deref().unwrap_or("?"), r.event_types.join("/")),
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

async fn register(conn: &mut impl RedisConn, addr: &str, script: &GearsScript) -> Result<()> {
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
    Ok(())
}

pub(crate) async fn load(conn: &mut impl RedisConn, addr: &str, settings: &ProcessingSettings) -> Result<LoadOutcome> {
    let regs = dump(conn).await?;
    let mut loaded = 0;
    let mut reasons = Vec::new();
    let [complete, timeseries] = scripts(settings);
    for script in [&complete, &timeseries] {
        let stale = match plan(script, &regs) {
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
        register(conn, addr, script).await?;
    }
    // Orders another reader took from the shared group (the seed's or an older version's metrics
    // reader, now removed) are still in queue:orders but behind the group's position: the
    // completion reader would never see them. The group goes back, and a fresh registration reads
    // them (a registration reads its streams when it starts).
    let stranded = rewind_stranded_orders(conn).await?;
    if stranded > 0 {
        register(conn, addr, &complete).await?;
        reasons.push(format!(
            "{stranded} order(s) in {QUEUE_ORDERS} had been read by another registration and never decided; \
             {ID_COMPLETE} reads them again"
        ));
    }
    // The scripts' clocks, for a Redis where no entry has arrived yet (they re-arm themselves).
    for (clock, every) in [(SAMPLE_CLOCK, settings.interval_ms()), (GEARS_SWEEP, SWEEP_EVERY_MS)] {
        let _: Value = redis::cmd("SET")
            .arg(clock)
            .arg(0)
            .arg("PX")
            .arg(every)
            .arg("NX")
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command(format!("SET {clock} … NX"), e))?;
    }
    Ok(if !reasons.is_empty() {
        LoadOutcome::Reloaded { reason: reasons.join("; ") }
    } else if loaded > 0 {
        LoadOutcome::Loaded
    } else {
        LoadOutcome::AlreadyLoaded
    })
}

/// When orders were taken from the completion reader (see [`stranded_orders`]), set the consumer
/// group back to the start of `queue:orders`, so that the next reader of the group reads every
/// order still there; returns how many were stranded. Deciding is idempotent: orders in flight that
/// are read twice are decided once (the second step finds them gone).
pub async fn rewind_stranded_orders(conn: &mut impl RedisConn) -> Result<usize> {
    let stranded = stranded_orders(conn).await?;
    if stranded > 0 {
        let _: Value = redis::cmd("XGROUP")
            .arg("SETID")
            .arg(QUEUE_ORDERS)
            .arg(CONSUMER_GROUP)
            .arg("0")
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command(format!("XGROUP SETID {QUEUE_ORDERS} {CONSUMER_GROUP} 0"), e))?;
    }
    Ok(stranded)
}

/// Orders in `queue:orders` the shared consumer group has delivered (at or before its
/// `last-delivered-id`) but that are not pending there: read and acknowledged by some registration
/// without being decided (a decided order leaves the stream). Read in one script, so an execution
/// between the reads cannot make an order in flight look stranded.
async fn stranded_orders(conn: &mut impl RedisConn) -> Result<usize> {
    let (delivered, pending): (usize, usize) = redis::Script::new(STRANDED_LUA)
        .key(QUEUE_ORDERS)
        .arg(CONSUMER_GROUP)
        .invoke_async(conn)
        .await
        .map_err(|e| EngineError::command("EVAL (orders behind the consumer group)", e))?;
    Ok(delivered.saturating_sub(pending))
}

/// Returns {entries at or before the group's last-delivered-id (at most pending + 1 of them),
/// entries pending in the group}.
const STRANDED_LUA: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {0, 0} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then
    local pending = tonumber(info['pending'])
    local delivered = redis.call('XRANGE', KEYS[1], '-', info['last-delivered-id'], 'COUNT', pending + 1)
    return {#delivered, pending}
  end
end
return {0, 0}
"#;

/// Health from a registration list (pure, for tests). Settings do not matter here (a registration
/// with other settings is `load`'s business): what it reads does.
pub fn health_from(regs: &[Registration]) -> EngineHealth {
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for script in scripts(&ProcessingSettings::default()) {
        let ours: Vec<&Registration> = regs.iter().filter(|r| r.belongs_to(script.id)).collect();
        let id = script.id;
        if ours.is_empty() {
            problems.push(format!("{id} is not registered"));
            continue;
        }
        for trigger in &script.triggers {
            match ours.iter().filter(|r| r.reads_like(trigger)).collect::<Vec<_>>().as_slice() {
                [] => problems.push(format!("{id} lacks its registration {trigger:?}")),
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
    }
    for r in foreign_order_readers(regs) {
        problems.push(format!(
            "registration {} ({}) also reads {QUEUE_ORDERS} and takes orders from {ID_COMPLETE}",
            r.id,
            describe(r)
        ));
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
    use crate::sale::reply::bulk;
    use std::time::Duration;

    fn settings() -> ProcessingSettings {
        ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(5) }
    }

    fn stats(mode: &str) -> Vec<Value> {
        vec![
            bulk("mode"),
            bulk(mode),
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
        ]
    }

    /// One registration as RedisGears 1.2.13 prints it (RESP2, the shape seen on the real runtime).
    fn registration(id: &str, reader: &str, desc: Option<&str>, session: &str, data: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("reader"),
            bulk(reader),
            bulk("desc"),
            desc.map(bulk).unwrap_or(Value::Nil),
            bulk("RegistrationData"),
            Value::Array(data),
            bulk("PD"),
            bulk(&format!(
                "{{'sessionName':'{session}', 'sessionDescription':'null', 'refCount': 1, 'linkedTo': primary, 'dead': false, 'isInstallationNeeded':0, 'registrationsList':['{id}'], 'depsList':[]}}"
            )),
            bulk("ExecutionThreadPool"),
            bulk("DefaultPool"),
        ])
    }

    fn recorded_registration(
        id: &str,
        desc: Option<&str>,
        session: &str,
        prefix: &str,
        batch: i64,
        duration: i64,
    ) -> Value {
        let mut data = stats("async");
        data.extend([
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
                Value::Int(0),
                bulk("onFailedPolicy"),
                bulk("retry"),
                bulk("retryInterval"),
                Value::Int(1),
            ]),
            bulk("status"),
            bulk("OK"),
        ]);
        registration(id, "StreamReader", desc, session, data)
    }

    /// A KeysReader as 1.2.13 prints it: no status, `regex`, `eventTypes` a list, nil key types.
    fn recorded_keys_registration(id: &str, desc: &str, session: &str, regex: &str, event: &str) -> Value {
        let mut data = stats("sync");
        data.extend([
            bulk("lastError"),
            Value::Nil,
            bulk("args"),
            Value::Array(vec![
                bulk("regex"),
                bulk(regex),
                bulk("eventTypes"),
                Value::Array(vec![bulk(event)]),
                bulk("keyTypes"),
                Value::Nil,
                bulk("hookCommands"),
                Value::Nil,
            ]),
        ]);
        registration(id, "KeysReader", Some(desc), session, data)
    }

    /// Both scripts as `load` registers them.
    fn loaded(settings: &ProcessingSettings) -> Vec<Value> {
        let [complete, ts] = scripts(settings);
        let batch = i64::from(settings.batch());
        vec![
            recorded_registration("r-1", Some(&complete.desc), ID_COMPLETE, QUEUE_ORDERS, batch, FLUSH_MS as i64),
            recorded_keys_registration("r-2", &complete.desc, ID_COMPLETE, GEARS_SWEEP, "expired"),
            recorded_keys_registration("r-3", &ts.desc, ID_TIMESERIES, "queue:*", "xadd"),
            recorded_keys_registration("r-4", &ts.desc, ID_TIMESERIES, SAMPLE_CLOCK, "expired"),
        ]
    }

    #[test]
    fn parses_recorded_dump_registrations() {
        let [complete, ts] = scripts(&settings());
        let regs = parse_dump_registrations(&Value::Array(loaded(&settings()))).unwrap();
        assert_eq!(regs.len(), 4);
        assert_eq!(regs[0].session.as_deref(), Some(ID_COMPLETE));
        assert_eq!(regs[0].prefix.as_deref(), Some("queue:orders"));
        assert_eq!(regs[0].batch_size, Some(3));
        assert_eq!(regs[0].trim_stream, Some(false));
        assert_eq!(regs[0].num_triggered, 12);
        assert_eq!(regs[2].reader, "KeysReader");
        assert_eq!(regs[2].prefix.as_deref(), Some("queue:*"));
        assert_eq!(regs[2].event_types, vec!["xadd".to_string()]);
        assert_eq!(regs[2].mode.as_deref(), Some("sync"));
        assert_eq!(regs[2].last_error, None);
        assert_eq!(plan(&complete, &regs), Plan::Keep);
        assert_eq!(plan(&ts, &regs), Plan::Keep);
        let health = health_from(&regs);
        assert!(health.healthy, "{health:?}");
        assert_eq!(health.parts.len(), 4);
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
        // A seed registration on queue:orders would take orders: reload and unregister it.
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
    fn any_other_stream_reader_of_the_orders_is_removed() {
        // The seed's timeseries.py (`queue:*`, no ID) and a registration of anybody's with a
        // description: both read queue:orders through the shared group.
        let mut regs = loaded(&settings());
        regs.push(recorded_registration("seed-ts", None, "0000-5", "queue:*", 10000, 5000));
        regs.push(recorded_registration("mine", Some("my reader"), "0000-8", "queue:or*", 1, 0));
        // ...but not a reader of other streams.
        regs.push(recorded_registration("other", Some("x"), "0000-9", "queue:customers", 1, 0));
        let regs = parse_dump_registrations(&Value::Array(regs)).unwrap();
        let [complete, ts] = scripts(&settings());
        match plan(&complete, &regs) {
            Plan::Reload { reason, stale } => {
                assert_eq!(stale, vec!["seed-ts".to_string(), "mine".to_string()]);
                assert!(reason.contains("take orders"), "{reason}");
            }
            other => panic!("unexpected plan {other:?}"),
        }
        assert_eq!(plan(&ts, &regs), Plan::Keep);
        let health = health_from(&regs);
        assert!(!health.healthy && health.summary.contains("seed-ts"), "{health:?}");
    }

    #[test]
    fn the_metrics_reader_of_older_versions_is_replaced() {
        // Before: popup-timeseries was a StreamReader on queue:* in the same session.
        let [complete, ts] = scripts(&settings());
        let old = parse_dump_registrations(&Value::Array(vec![
            recorded_registration("r-1", Some(&complete.desc), ID_COMPLETE, QUEUE_ORDERS, 3, 500),
            recorded_keys_registration("r-5", &complete.desc, ID_COMPLETE, GEARS_SWEEP, "expired"),
            recorded_registration("r-2", Some("popup-timeseries sha=0ld"), ID_TIMESERIES, "queue:*", 10000, 500),
        ]))
        .unwrap();
        assert_eq!(plan(&complete, &old), Plan::Keep);
        assert!(matches!(plan(&ts, &old), Plan::Reload { ref stale, .. } if stale.is_empty()));
        assert!(!health_from(&old).healthy);
        // Same description but a missing clock: reload.
        let mut partial = loaded(&settings());
        partial.pop();
        let partial = parse_dump_registrations(&Value::Array(partial)).unwrap();
        assert!(matches!(plan(&ts, &partial), Plan::Reload { .. }));
        assert!(!health_from(&partial).healthy);
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
            Plan::Reload { stale, .. } => assert_eq!(stale, vec!["x-2".to_string()]),
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(!health_from(&twice).healthy);
    }

    #[test]
    fn patterns_match_as_redisgears_matches_them() {
        let reg = |p: &str| Registration { prefix: Some(p.into()), ..Registration::default() };
        assert!(reg("queue:*").matches("queue:orders"));
        assert!(reg("*").matches("queue:orders"));
        assert!(reg("queue:orders").matches("queue:orders"));
        assert!(!reg("queue:orders").matches("queue:orders2"));
        assert!(reg("queue:orders*").matches("queue:orders2"));
        // not a glob: `?` and `[` are literal characters
        assert!(!reg("queue:order?").matches("queue:orders"));
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
        assert!(complete.code.contains("batch=5, duration=500, trimStream=False"));
        assert!(complete.code.contains(&format!("desc='{}'", complete.desc)));
        assert!(ts.code.contains("INTERVAL_MS = 2500"));
        assert!(!complete.code.contains("__") || complete.code.contains("__gears"));
        assert!(!ts.code.contains("__DESC__"));
        assert_ne!(complete.desc, scripts(&settings())[0].desc);
    }
}
